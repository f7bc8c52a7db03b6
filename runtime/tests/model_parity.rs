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

/// The untied MQA fixture, its tokenizer and a short prompt.
fn sampling_fixture() -> (Model<CpuBackend>, TextTokenizer, Prompt) {
    let dir = dir("qwen2-untied-mqa");
    let model = Model::<CpuBackend>::load(&dir, &Default::default()).expect("load");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    let prompt = Prompt {
        tokens: tokenizer.encode("Is this image safe?").expect("encode"),
        images: None,
    };
    (model, tokenizer, prompt)
}

/// The sampled tokens of each of `rows` copies of `prompt`.
fn sampled(
    (model, tokenizer, prompt): &(Model<CpuBackend>, TextTokenizer, Prompt),
    rows: usize,
    params: &SamplingParams,
    seed: u64,
) -> Vec<Vec<u32>> {
    generate(
        model,
        tokenizer,
        &vec![prompt.clone(); rows],
        params,
        &mut ChaCha8Rng::seed_from_u64(seed),
    )
    .expect("generate")
    .into_iter()
    .map(|c| c.tokens)
    .collect()
}

#[test]
fn same_seed_same_samples() {
    let fixture = sampling_fixture();
    let params = SamplingParams {
        max_new_tokens: 16,
        ..SamplingParams::default()
    };
    let first = sampled(&fixture, 4, &params, 11);
    assert_eq!(first, sampled(&fixture, 4, &params, 11));
    assert_ne!(first, sampled(&fixture, 4, &params, 12));
    assert!(
        first.windows(2).any(|w| w[0] != w[1]),
        "rows of one batch sample independently"
    );
}

#[test]
fn a_rows_samples_depend_on_the_seed_and_its_index_alone() {
    let fixture = sampling_fixture();
    // Batches of 5, 2 and 1 rows: two shards, one shard, one row. A token
    // that row 0 samples early is made a stop token, so some rows end early
    // and must leave the others' streams alone.
    let mut params = SamplingParams {
        max_new_tokens: 24,
        ..SamplingParams::default()
    };
    params.stop_tokens = vec![sampled(&fixture, 1, &params, 7)[0][2]];
    let five = sampled(&fixture, 5, &params, 7);
    assert_eq!(sampled(&fixture, 2, &params, 7), five[..2]);
    assert_eq!(sampled(&fixture, 1, &params, 7), five[..1]);
    let lengths: Vec<usize> = five.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().any(|&n| n < params.max_new_tokens) && lengths.iter().any(|&n| n > 3),
        "rows end at different steps: {lengths:?}"
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

/// Completions scored after their shared prompts equal the completion
/// columns of whole sequences, in values and in gradients: prompts of
/// different lengths (left-padded), groups sharing a prompt, completions of
/// different lengths (right-padded), a one-token completion.
#[test]
fn completions_scored_after_shared_prompts_equal_whole_sequences() {
    use safer_runtime::generate::completion_logprobs;
    use safer_runtime::CpuAutodiff;
    let device = Default::default();
    let dir = dir("qwen2-untied-mqa");
    let model = Model::<CpuAutodiff>::load(&dir, &device).expect("load");
    let exp = expected(&dir);
    let prompts: Vec<Prompt> = fixture_prompts(&exp);
    assert_ne!(prompts[0].tokens.len(), prompts[1].tokens.len());
    let completions: [(usize, Vec<u32>); 5] = [
        (0, vec![5, 9, 11, 4]),
        (0, vec![7, 7]),
        (1, vec![3, 12, 8, 6, 2, 10]),
        (1, vec![9]),
        (0, vec![14, 2, 5, 5, 1, 3]),
    ];
    let samples: Vec<(usize, &[u32])> = completions
        .iter()
        .map(|(p, c)| (*p, c.as_slice()))
        .collect();
    let (temperature, pad) = (0.8, 0);

    let shared = completion_logprobs(&model, &prompts, &samples, temperature, pad).expect("shared");
    let whole_sequences: Vec<Vec<u32>> = samples
        .iter()
        .map(|(p, c)| prompts[*p].tokens.iter().chain(c.iter()).copied().collect())
        .collect();
    let whole = sequence_logprobs(&model, &whole_sequences, None, temperature, pad).expect("whole");

    let rows = |t: burn::tensor::Tensor<CpuAutodiff, 2>| -> Vec<Vec<f32>> {
        let [_, width] = t.dims();
        let v = t.into_data().into_vec::<f32>().expect("f32");
        v.chunks(width).map(<[f32]>::to_vec).collect()
    };
    let (shared_lp, whole_lp) = (rows(shared.logprobs.clone()), rows(whole.logprobs.clone()));
    let (shared_h, whole_h) = (rows(shared.entropy.clone()), rows(whole.entropy.clone()));
    let shared_mask = rows(shared.mask.clone());
    let mut worst = 0.0f32;
    for (i, (p, c)) in samples.iter().enumerate() {
        let start = prompts[*p].tokens.len() - 1; // the column predicting completion token 0
        for j in 0..c.len() {
            assert_eq!(shared_mask[i][j], 1.0);
            worst = worst
                .max((shared_lp[i][j] - whole_lp[i][start + j]).abs())
                .max((shared_h[i][j] - whole_h[i][start + j]).abs());
        }
        assert!(shared_mask[i][c.len()..].iter().all(|&m| m == 0.0));
    }
    assert!(worst <= 1e-5, "largest difference {worst:e}");

    // The gradient of the summed completion log-probs, both ways.
    let whole_mask: Vec<f32> = samples
        .iter()
        .zip(&whole_sequences)
        .flat_map(|((p, _), seq)| {
            let start = prompts[*p].tokens.len();
            let longest = whole_sequences.iter().map(Vec::len).max().unwrap_or(0);
            (1..longest).map(move |t| {
                if t >= start && t < seq.len() {
                    1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    let whole_mask =
        burn::tensor::Tensor::<CpuAutodiff, 1>::from_floats(whole_mask.as_slice(), &device)
            .reshape(whole.logprobs.dims());
    let grad_of = |loss: burn::tensor::Tensor<CpuAutodiff, 1>| -> Vec<f32> {
        let grads = loss.backward();
        let weight = model.text.layers[0].self_attn.q_proj.weight.val();
        weight
            .grad(&grads)
            .expect("gradient")
            .into_data()
            .into_vec::<f32>()
            .expect("f32")
    };
    let g_shared = grad_of((shared.logprobs * shared.mask).sum());
    let g_whole = grad_of((whole.logprobs * whole_mask).sum());
    let scale = g_whole.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let diff = g_shared
        .iter()
        .zip(&g_whole)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        scale > 0.0 && diff <= 1e-4 * scale,
        "gradient differs by {diff:e} (scale {scale:e})"
    );
    println!("largest log-prob/entropy difference {worst:e}, gradient {diff:e} of {scale:e}");
}

/// Log-probs and entropies of whole sequences (three prompts of different
/// lengths, right-padded into one batch, at temperature 0.7) against the
/// same quantities computed in f64 from the logits transformers recorded.
#[test]
fn sequence_logprobs_and_entropies_match_transformers_logits() {
    use safer_runtime::model::weights::WeightReader;
    let device = Default::default();
    let dir = dir("qwen2-tied");
    let model = Model::<CpuBackend>::load(&dir, &device).expect("load");
    let vocab = model.vocab_size();
    let prompts = token_lists(&expected(&dir)["prompts"]);
    let temperature = 0.7f64;
    let scores = sequence_logprobs(&model, &prompts, None, temperature as f32, 0).expect("score");
    let width = scores.logprobs.dims()[1];
    let values = |t: burn::tensor::Tensor<CpuBackend, 2>| -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec().expect("f32")
    };
    let (logprobs, entropy, mask) = (
        values(scores.logprobs),
        values(scores.entropy),
        values(scores.mask),
    );
    let reference = WeightReader::open_file(&dir.join("expected.safetensors")).expect("logits");
    let mut compared = 0;
    for (i, tokens) in prompts.iter().enumerate() {
        let logits = reference
            .values(&format!("prompt{i}"), &[tokens.len(), vocab])
            .expect("logits");
        for t in 0..width {
            let at = i * width + t;
            if t + 1 >= tokens.len() {
                assert_eq!(mask[at], 0.0, "padding is masked");
                continue;
            }
            assert_eq!(mask[at], 1.0);
            let row: Vec<f64> = logits[t * vocab..(t + 1) * vocab]
                .iter()
                .map(|&l| f64::from(l) / temperature)
                .collect();
            let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_z = top + row.iter().map(|l| (l - top).exp()).sum::<f64>().ln();
            let want_logprob = row[tokens[t + 1] as usize] - log_z;
            let want_entropy: f64 = row.iter().map(|l| -(l - log_z).exp() * (l - log_z)).sum();
            assert!(
                (f64::from(logprobs[at]) - want_logprob).abs() < 2e-4,
                "prompt {i} position {t}: log-prob {} vs {want_logprob}",
                logprobs[at]
            );
            assert!(
                (f64::from(entropy[at]) - want_entropy).abs() < 2e-4,
                "prompt {i} position {t}: entropy {} vs {want_entropy}",
                entropy[at]
            );
            compared += 1;
        }
    }
    assert_eq!(compared, prompts.iter().map(|p| p.len() - 1).sum::<usize>());
}
