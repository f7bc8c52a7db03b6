//! Generation's stopping controls on a model whose greedy continuation
//! transformers recorded (`qwen2-tied`, first fixture prompt): stop tokens,
//! `min_new_tokens` holding them back, and stop strings, including one that
//! spans two tokens.

#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation
mod common;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::generate::{generate, Completion, FinishReason, Prompt, SamplingParams};
use safer_runtime::model::Model;
use safer_runtime::text::TextTokenizer;
use safer_runtime::CpuBackend;

use common::parity::{dir, expected, token_lists};

struct Fixture {
    model: Model<CpuBackend>,
    tokenizer: TextTokenizer,
    prompt: Prompt,
    /// transformers' greedy continuation of `prompt`.
    greedy: Vec<u32>,
}

fn fixture() -> Fixture {
    let dir = dir("qwen2-tied");
    let expected = expected(&dir);
    let prompt = token_lists(&expected["prompts"]).remove(0);
    let greedy = token_lists(&expected["greedy"]).remove(0);
    Fixture {
        model: Model::<CpuBackend>::load(&dir, &Default::default()).expect("load"),
        tokenizer: {
            let mut t = TextTokenizer::load(&dir).expect("tokenizer");
            t.eos_ids.clear(); // transformers generated without an end token
            t
        },
        prompt: Prompt {
            tokens: prompt,
            images: None,
        },
        greedy,
    }
}

fn run(f: &Fixture, params: &SamplingParams) -> Completion {
    generate(
        &f.model,
        &f.tokenizer,
        std::slice::from_ref(&f.prompt),
        params,
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .expect("generate")
    .remove(0)
}

#[test]
fn greedy_without_controls_is_transformers_continuation() {
    let f = fixture();
    let out = run(&f, &SamplingParams::greedy(f.greedy.len()));
    assert_eq!(out.tokens, f.greedy);
    assert_eq!(out.finish, FinishReason::Length);
}

#[test]
fn min_new_tokens_holds_a_stop_token_back() {
    let f = fixture();
    // The token greedy decoding picks at step 5 (not earlier) ends the completion...
    let at = 5;
    let stop = f.greedy[at];
    assert!(!f.greedy[..at].contains(&stop));
    let mut params = SamplingParams::greedy(f.greedy.len());
    params.stop_tokens = vec![stop];
    let out = run(&f, &params);
    assert_eq!(out.tokens, f.greedy[..=at]);
    assert_eq!(out.finish, FinishReason::Stop);
    // ...unless `min_new_tokens` asks for more: then it cannot be sampled
    // before that many tokens exist, and the prefix before it is unchanged.
    params.min_new_tokens = 9;
    let out = run(&f, &params);
    assert!(out.tokens.len() >= 9, "{:?}", out.tokens);
    assert_eq!(out.tokens[..at], f.greedy[..at]);
    assert!(!out.tokens[..9].contains(&stop), "{:?}", out.tokens);
    assert_ne!(out.tokens[at], stop);
}

#[test]
fn stop_strings_end_the_completion_and_its_text() {
    let f = fixture();
    let text = |n: usize| f.tokenizer.decode(&f.greedy[..n], true).expect("decode");
    // The first step whose token adds text not seen before, and whose
    // first character with the character before it is new as well.
    let spanning = |n: usize| -> Option<(String, String)> {
        let (before, after) = (text(n), text(n + 1));
        let added = after.get(before.len()..)?.to_string();
        let pair = format!("{}{}", before.chars().last()?, added.chars().next()?);
        (!before.contains(&added) && !before.contains(&pair)).then_some((added, pair))
    };
    let step = (3..f.greedy.len())
        .find(|&n| spanning(n).is_some())
        .expect("a step that adds new text");
    let (added, pair) = spanning(step).expect("found above");
    let after = text(step + 1);
    let mut params = SamplingParams::greedy(f.greedy.len());
    params.stop_strings = vec![added.clone()];
    let out = run(&f, &params);
    assert_eq!(out.tokens, f.greedy[..=step]);
    assert_eq!(out.finish, FinishReason::StopString);
    // The text ends with the stop string, as the tokens do.
    let end = |s: &str| after.find(s).expect("found") + s.len();
    assert_eq!(out.text, after[..end(&added)]);

    // A stop string made of the end of one token's text and the start of
    // the next is found once both exist.
    params.stop_strings = vec![pair.clone()];
    let out = run(&f, &params);
    assert_eq!(out.tokens, f.greedy[..=step], "{pair:?}");
    assert_eq!(out.finish, FinishReason::StopString);
    assert_eq!(out.text, after[..end(&pair)]);
}

/// A stop string holding a special token (`<|im_end|>`) could never match
/// the decoded text: refused, naming the token, rather than accepted to do
/// nothing.
#[test]
fn a_stop_string_holding_a_special_token_is_refused() {
    let f = fixture();
    let mut params = SamplingParams::greedy(4);
    params.stop_strings = vec!["done<|im_end|>".into()];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let err = generate(
        &f.model,
        &f.tokenizer,
        std::slice::from_ref(&f.prompt),
        &params,
        &mut rng,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("holds the special token `<|im_end|>`"),
        "{err}"
    );
}

/// A declared `context` below `config.json`'s holds generation to it (a
/// `model` judge's questions, which no data check sees first).
#[test]
fn a_declared_context_holds_generation_to_it() {
    let mut f = fixture();
    let prompt_len = f.prompt.tokens.len();
    f.model.config.context_limit = Some(prompt_len + 4);
    assert_eq!(run(&f, &SamplingParams::greedy(4)).tokens.len(), 4);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let err = generate(
        &f.model,
        &f.tokenizer,
        std::slice::from_ref(&f.prompt),
        &SamplingParams::greedy(5),
        &mut rng,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    let want = format!(
        "a prompt of {prompt_len} tokens plus 5 new tokens exceeds the model's context of {} (its declared `context`)",
        prompt_len + 4
    );
    assert!(err.contains(&want), "{err}");
}

/// The ids that end a completion are `generation_config.json`'s
/// `eos_token_id` where it gives one (as transformers takes them), else
/// `config.json`'s (saferc's choice where that file lacks the key, for
/// which transformers 5 would not stop at all), and the tokenizer's
/// `eos_token` only where neither does; never their union.
#[test]
fn end_tokens_are_the_generation_config_s() {
    let source = dir("qwen2-tied");
    let folder = std::env::temp_dir().join(format!("saferc-eos-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("dir");
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(source.join(name), folder.join(name)).expect("copy");
    }
    let write = |name: &str, value: serde_json::Value| {
        std::fs::write(folder.join(name), value.to_string()).expect("write");
    };
    let eos = || TextTokenizer::load(&folder).expect("tokenizer").eos_ids;
    write("config.json", serde_json::json!({"eos_token_id": 4}));
    write(
        "generation_config.json",
        serde_json::json!({"eos_token_id": [3, 6]}),
    );
    assert_eq!(eos(), vec![3, 6]);
    write(
        "generation_config.json",
        serde_json::json!({"pad_token_id": 0}),
    );
    assert_eq!(eos(), vec![4]);
    write("config.json", serde_json::json!({"model_type": "qwen2"}));
    // The tokenizer's `eos_token` is `<|im_end|>`, id 2.
    assert_eq!(eos(), vec![2]);
    std::fs::remove_dir_all(&folder).ok();
}
