//! Parity checks shared by the CPU test and the feature-gated GPU tests:
//! the fixture models of `runtime/fixtures/models/` must reproduce what
//! transformers computed, on whichever backend `B` is.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::burn;
use safer_runtime::generate::{generate, Prompt, SamplingParams};
use safer_runtime::model::weights::WeightReader;
use safer_runtime::model::{Layout, Model, ModelInput};
use safer_runtime::text::TextTokenizer;
use serde_json::Value;

/// The fixture models: tied + GQA, untied + MQA, bf16 weights.
pub const MODELS: [&str; 3] = ["qwen2-tied", "qwen2-untied-mqa", "qwen2-bf16"];

/// The directory of fixture model `name`.
pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(name)
}

/// The fixture's `expected.json`.
pub fn expected(dir: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
    )
    .expect("json")
}

/// A JSON list of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// The fixture's prompts, as text-only generation prompts.
pub fn fixture_prompts(exp: &Value) -> Vec<Prompt> {
    exp["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| Prompt {
            tokens: ids(p),
            images: None,
        })
        .collect()
}

/// A JSON list of token-id lists.
pub fn token_lists(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().expect("token lists").iter().map(ids).collect()
}

/// Logits of every prompt agree with transformers within `tolerance`; returns the largest difference.
pub fn check_logits<B: Backend>(device: &B::Device, tolerance: f32) -> f32 {
    let mut worst = 0.0f32;
    for name in MODELS {
        let dir = dir(name);
        let model = Model::<B>::load(&dir, device).expect("load");
        let reference =
            WeightReader::open_file(&dir.join("expected.safetensors")).expect("expected logits");
        let vocab = model.vocab_size();
        for (i, prompt) in expected(&dir)["prompts"]
            .as_array()
            .expect("prompts")
            .iter()
            .enumerate()
        {
            let tokens = ids(prompt);
            let len = tokens.len();
            let input = ModelInput {
                tokens,
                layout: Layout::dense(1, len, true),
                images: None,
            };
            let ours: Vec<f32> = model
                .forward(&input, None)
                .expect("forward")
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32");
            let theirs = reference
                .values(&format!("prompt{i}"), &[len, vocab])
                .expect("reference");
            let max_diff = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                max_diff <= tolerance,
                "{name} prompt {i}: max |Δlogit| = {max_diff}"
            );
            worst = worst.max(max_diff);
        }
    }
    worst
}

/// Greedy continuations equal transformers', one prompt at a time and as a left-padded batch.
pub fn check_greedy<B: Backend>(device: &B::Device) {
    for name in MODELS {
        let dir = dir(name);
        let model = Model::<B>::load(&dir, device).expect("load");
        let mut tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
        tokenizer.eos_ids.clear(); // the fixture generated without an end token
        let exp = expected(&dir);
        let prompts: Vec<Prompt> = fixture_prompts(&exp);
        let greedy: Vec<Vec<u32>> = token_lists(&exp["greedy"]);
        let params = SamplingParams::greedy(12);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (prompt, want) in prompts.iter().zip(&greedy) {
            let got = generate(
                &model,
                &tokenizer,
                std::slice::from_ref(prompt),
                &params,
                &mut rng,
            )
            .expect("generate");
            assert_eq!(&got[0].tokens, want, "{name}: single prompt");
        }
        let batch = generate(&model, &tokenizer, &prompts, &params, &mut rng).expect("batched");
        let batch_want: Vec<Vec<u32>> = token_lists(&exp["batch"]["greedy"]);
        for (got, want) in batch.iter().zip(&batch_want) {
            assert_eq!(&got.tokens, want, "{name}: left-padded batch");
        }
    }
}
