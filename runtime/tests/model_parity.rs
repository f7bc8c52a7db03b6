//! Parity with Hugging Face transformers on tiny random Qwen2 models.
//!
//! `runtime/fixtures/models/make_fixtures.py` saved three models (tied
//! embeddings with GQA, untied with multi-query attention, bf16 weights) with
//! the logits and greedy continuations transformers computed. Here the same
//! directories load through saferc's loader and must agree: max |Δlogit| ≤
//! 1e-4 in f32, identical greedy tokens alone and in a left-padded batch,
//! identical tokenizer ids.

#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation
mod common;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::generate::{generate, sequence_logprobs, Prompt, SamplingParams};
use safer_runtime::model::Model;
use safer_runtime::text::TextTokenizer;
use safer_runtime::CpuBackend;

use common::parity::{
    check_greedy, check_logits, dir, expected, fixture_prompts, ids, token_lists, MODELS,
};

#[test]
fn logits_match_transformers() {
    let worst = check_logits::<CpuBackend>(&Default::default(), 1e-4);
    println!("largest |Δlogit| on the CPU: {worst:e}");
}

#[test]
fn greedy_continuations_match_transformers_alone_and_left_padded() {
    check_greedy::<CpuBackend>(&Default::default());
}

#[test]
fn tokenizer_ids_match_transformers() {
    for name in MODELS {
        let dir = dir(name);
        let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
        for case in expected(&dir)["encodings"].as_array().expect("encodings") {
            let text = case["text"].as_str().expect("text");
            assert_eq!(
                tokenizer.encode(text).expect("encode"),
                ids(&case["ids"]),
                "{name}: {text:?}"
            );
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
    let prompts: Vec<Prompt> = fixture_prompts(&exp);
    let params = SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        max_new_tokens: 10,
        ..SamplingParams::default()
    };
    let completions = generate(
        &model,
        &tokenizer,
        &prompts,
        &params,
        &mut ChaCha8Rng::seed_from_u64(5),
    )
    .expect("generate");
    let sequences: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&completions)
        .map(|(p, c)| p.tokens.iter().chain(&c.tokens).copied().collect())
        .collect();
    let scores = sequence_logprobs(&model, &sequences, None, 0.7, tokenizer.pad_id).expect("score");
    let width = scores.logprobs.dims()[1];
    let forced: Vec<f32> = scores
        .logprobs
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32");
    let mask: Vec<f32> = scores
        .mask
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32");
    for (row, (prompt, completion)) in prompts.iter().zip(&completions).enumerate() {
        for (k, sampled) in completion.logprobs.iter().enumerate() {
            let t = prompt.tokens.len() - 1 + k; // position predicting completion token k
            assert_eq!(mask[row * width + t], 1.0);
            let diff = (forced[row * width + t] - sampled).abs();
            assert!(
                diff < 1e-4,
                "row {row} token {k}: {} vs {sampled}",
                forced[row * width + t]
            );
        }
        let real = prompt.tokens.len() + completion.tokens.len() - 1;
        assert!(mask[row * width..(row + 1) * width]
            .iter()
            .skip(real)
            .all(|&m| m == 0.0));
    }
}

#[test]
fn same_seed_same_samples() {
    let device = Default::default();
    let dir = dir("qwen2-untied-mqa");
    let model = Model::<CpuBackend>::load(&dir, &device).expect("load");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    let prompt = Prompt {
        tokens: tokenizer.encode("Is this image safe?").expect("encode"),
        images: None,
    };
    let prompts = vec![prompt; 4];
    let params = SamplingParams {
        max_new_tokens: 16,
        ..SamplingParams::default()
    };
    let run = |seed| {
        generate(
            &model,
            &tokenizer,
            &prompts,
            &params,
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
        .expect("generate")
        .into_iter()
        .map(|c| c.tokens)
        .collect::<Vec<_>>()
    };
    let first = run(11);
    assert_eq!(first, run(11));
    assert_ne!(first, run(12));
    assert!(
        first.windows(2).any(|w| w[0] != w[1]),
        "rows of one batch sample independently"
    );
}

#[test]
fn repeated_prompts_share_their_prefill_and_decode_as_alone() {
    let device = Default::default();
    let dir = dir("qwen2-untied-mqa");
    let model = Model::<CpuBackend>::load(&dir, &device).expect("load");
    let mut tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    tokenizer.eos_ids.clear();
    let exp = expected(&dir);
    let prompts: Vec<Prompt> = fixture_prompts(&exp);
    let greedy: Vec<Vec<u32>> = token_lists(&exp["greedy"]);
    // Rows 0, 1, 3 repeat prompt 1; row 2 is prompt 0: mixed sharing and padding.
    let batch = vec![
        prompts[1].clone(),
        prompts[1].clone(),
        prompts[0].clone(),
        prompts[1].clone(),
    ];
    let out = generate(
        &model,
        &tokenizer,
        &batch,
        &SamplingParams::greedy(12),
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .expect("generate");
    for (row, want) in [(0, 1), (1, 1), (2, 0), (3, 1)] {
        assert_eq!(out[row].tokens, greedy[want], "row {row}");
    }
}

/// Every linear weight rewritten contiguous `[in, out]`, as a training
/// step's update leaves it (loading gives the decoding layout instead).
struct Contiguous;

impl burn::module::ModuleMapper<CpuBackend> for Contiguous {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<CpuBackend, D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<CpuBackend, D>> {
        param.map(|t| t.mul_scalar(1.0))
    }
}

#[test]
fn the_decoding_layout_changes_no_output() {
    use burn::module::Module;
    use safer_runtime::model::{Layout, ModelInput};
    let device = Default::default();
    let dir = dir("qwen2-untied-mqa"); // untied: the lm_head is relaid too
    let loaded = Model::<CpuBackend>::load(&dir, &device).expect("load");
    let exp = expected(&dir);
    let prompt = fixture_prompts(&exp).remove(0);
    let logits = |model: &Model<CpuBackend>| -> Vec<f32> {
        let input = ModelInput {
            tokens: prompt.tokens.clone(),
            layout: Layout::dense(1, prompt.tokens.len(), true),
            images: None,
        };
        model
            .forward(&input, None)
            .expect("forward")
            .into_data()
            .into_vec::<f32>()
            .expect("f32")
    };
    let want = logits(&loaded);
    let trained_layout = loaded.clone().map(&mut Contiguous);
    let relaid = trained_layout.clone().with_decoding_layout();
    for (name, model) in [("contiguous", &trained_layout), ("relaid", &relaid)] {
        let got = logits(model);
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // The layouts sum in different orders: equal up to rounding (1.2e-5
        // measured), within the parity tolerance.
        assert!(worst <= 1e-4, "{name}: largest |Δlogit| {worst:e}");
    }
    let mut tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    tokenizer.eos_ids.clear(); // the fixture generated without an end token
    let greedy: Vec<Vec<u32>> = token_lists(&exp["greedy"]);
    let out = generate(
        &relaid,
        &tokenizer,
        &[prompt],
        &SamplingParams::greedy(12),
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .expect("generate");
    assert_eq!(out[0].tokens, greedy[0]);
}
