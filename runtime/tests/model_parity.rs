//! Parity with Hugging Face transformers on tiny random Qwen2 models.
//!
//! `runtime/fixtures/models/make_fixtures.py` saved three models (tied
//! embeddings with GQA, untied with multi-query attention, bf16 weights) with
//! the logits and greedy continuations transformers computed. Here the same
//! directories load through saferc's loader and must agree: max |Δlogit| ≤
//! 1e-4 in f32, identical greedy tokens alone and in a left-padded batch,
//! identical tokenizer ids.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::generate::{generate, sequence_logprobs, Prompt, SamplingParams};
use safer_runtime::model::weights::WeightReader;
use safer_runtime::model::{Layout, Model, ModelInput};
use safer_runtime::text::TextTokenizer;
use safer_runtime::CpuBackend;
use serde_json::Value;

const MODELS: [&str; 3] = ["qwen2-tied", "qwen2-untied-mqa", "qwen2-bf16"];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models").join(name)
}

fn expected(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json")).expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn to_vec(t: burn::tensor::Tensor<CpuBackend, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("f32")
}

#[test]
fn logits_match_transformers() {
    let device = Default::default();
    for name in MODELS {
        let dir = dir(name);
        let model = Model::<CpuBackend>::load(&dir, &device).expect("load");
        let reference = WeightReader::open_file(&dir.join("expected.safetensors")).expect("expected logits");
        let vocab = model.vocab_size();
        for (i, prompt) in expected(&dir)["prompts"].as_array().expect("prompts").iter().enumerate() {
            let tokens = ids(prompt);
            let len = tokens.len();
            let input = ModelInput { tokens, layout: Layout::dense(1, len, true), images: None };
            let ours = to_vec(model.forward(&input, None).expect("forward"));
            let theirs = reference.values(&format!("prompt{i}"), &[len, vocab]).expect("reference");
            let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(max_diff <= 1e-4, "{name} prompt {i}: max |Δlogit| = {max_diff}");
        }
    }
}

#[test]
fn greedy_continuations_match_transformers_alone_and_left_padded() {
    let device = Default::default();
    for name in MODELS {
        let dir = dir(name);
        let model = Model::<CpuBackend>::load(&dir, &device).expect("load");
        let mut tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
        tokenizer.eos_ids.clear(); // the fixture generated without an end token
        let exp = expected(&dir);
        let prompts: Vec<Prompt> =
            exp["prompts"].as_array().expect("prompts").iter().map(|p| Prompt { tokens: ids(p), images: None }).collect();
        let greedy: Vec<Vec<u32>> = exp["greedy"].as_array().expect("greedy").iter().map(ids).collect();
        let params = SamplingParams::greedy(12);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (prompt, want) in prompts.iter().zip(&greedy) {
            let got = generate(&model, &tokenizer, std::slice::from_ref(prompt), &params, &mut rng).expect("generate");
            assert_eq!(&got[0].tokens, want, "{name}: single prompt");
        }
        let batch = generate(&model, &tokenizer, &prompts, &params, &mut rng).expect("batched");
        let batch_want: Vec<Vec<u32>> = exp["batch"]["greedy"].as_array().expect("batch").iter().map(ids).collect();
        for (got, want) in batch.iter().zip(&batch_want) {
            assert_eq!(&got.tokens, want, "{name}: left-padded batch");
        }
    }
}

#[test]
fn tokenizer_ids_match_transformers() {
    for name in MODELS {
        let dir = dir(name);
        let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
        for case in expected(&dir)["encodings"].as_array().expect("encodings") {
            let text = case["text"].as_str().expect("text");
            assert_eq!(tokenizer.encode(text).expect("encode"), ids(&case["ids"]), "{name}: {text:?}");
        }
    }
}

#[test]
fn generation_log_probs_equal_teacher_forced_log_probs_with_right_padding() {
    let device = Default::default();
    let dir = dir("qwen2-tied");
    let model = Model::<CpuBackend>::load(&dir, &device).expect("load");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    let exp = expected(&dir);
    let prompts: Vec<Prompt> =
        exp["prompts"].as_array().expect("prompts").iter().map(|p| Prompt { tokens: ids(p), images: None }).collect();
    let params = SamplingParams { temperature: 0.7, top_p: 0.9, max_new_tokens: 10, ..SamplingParams::default() };
    let completions =
        generate(&model, &tokenizer, &prompts, &params, &mut ChaCha8Rng::seed_from_u64(5)).expect("generate");
    let sequences: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&completions)
        .map(|(p, c)| p.tokens.iter().chain(&c.tokens).copied().collect())
        .collect();
    let scores = sequence_logprobs(&model, &sequences, None, 0.7, tokenizer.pad_id).expect("score");
    let width = scores.logprobs.dims()[1];
    let forced: Vec<f32> = scores.logprobs.into_data().convert::<f32>().into_vec().expect("f32");
    let mask: Vec<f32> = scores.mask.into_data().convert::<f32>().into_vec().expect("f32");
    for (row, (prompt, completion)) in prompts.iter().zip(&completions).enumerate() {
        for (k, sampled) in completion.logprobs.iter().enumerate() {
            let t = prompt.tokens.len() - 1 + k; // position predicting completion token k
            assert_eq!(mask[row * width + t], 1.0);
            let diff = (forced[row * width + t] - sampled).abs();
            assert!(diff < 1e-4, "row {row} token {k}: {} vs {sampled}", forced[row * width + t]);
        }
        let real = prompt.tokens.len() + completion.tokens.len() - 1;
        assert!(mask[row * width..(row + 1) * width].iter().skip(real).all(|&m| m == 0.0));
    }
}

#[test]
fn same_seed_same_samples() {
    let device = Default::default();
    let dir = dir("qwen2-untied-mqa");
    let model = Model::<CpuBackend>::load(&dir, &device).expect("load");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    let prompt = Prompt { tokens: tokenizer.encode("Is this image safe?").expect("encode"), images: None };
    let prompts = vec![prompt; 4];
    let params = SamplingParams { max_new_tokens: 16, ..SamplingParams::default() };
    let run = |seed| {
        generate(&model, &tokenizer, &prompts, &params, &mut ChaCha8Rng::seed_from_u64(seed))
            .expect("generate")
            .into_iter()
            .map(|c| c.tokens)
            .collect::<Vec<_>>()
    };
    let first = run(11);
    assert_eq!(first, run(11));
    assert_ne!(first, run(12));
    assert!(first.windows(2).any(|w| w[0] != w[1]), "rows of one batch sample independently");
}
