//! `tiny_vlm`: created on disk in the Hugging Face layout, loaded back
//! identically, looks at its images, generates, and trains through the
//! vision tower.

#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use image::{Rgb, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::generate::{generate, sequence_logprobs, user_prompt, SamplingParams};
use safer_runtime::model::tiny_vlm::{create, Preset};
use safer_runtime::model::weights::WeightWriter;
use safer_runtime::model::{Layout, Model, ModelInput};
use safer_runtime::text::TextTokenizer;
use safer_runtime::{CpuAutodiff, CpuBackend};

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("saferc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_image(dir: &Path, name: &str, colour: [u8; 3], square: bool) -> PathBuf {
    let image = RgbImage::from_fn(40, 40, |x, y| {
        let inside = square && (10..30).contains(&x) && (10..30).contains(&y);
        if inside {
            Rgb([255 - colour[0], 255 - colour[1], 255 - colour[2]])
        } else {
            Rgb(colour)
        }
    });
    let path = dir.join(name);
    image.save(&path).expect("png");
    path
}

fn flat<const D: usize>(t: Tensor<CpuBackend, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32")
}

#[test]
fn created_model_reloads_with_identical_weights_and_outputs() {
    let tmp = TempDir::new("tiny-vlm-roundtrip");
    let device = Default::default();
    let created = create::<CpuBackend>(&tmp.0, Preset::Tiny, 3, &device).expect("create");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    ] {
        assert!(tmp.0.join(file).is_file(), "{file}");
    }
    let loaded = Model::<CpuBackend>::load(&tmp.0, &device).expect("load");
    assert_eq!(loaded.config, created.config);
    let (mut a, mut b) = (WeightWriter::new(), WeightWriter::new());
    created.export(&mut a);
    loaded.export(&mut b);
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    let tokens: Vec<u32> = (10..30).collect();
    let input = ModelInput {
        tokens,
        layout: Layout::dense(1, 20, true),
        images: None,
    };
    assert_eq!(
        flat(created.forward(&input, None).expect("fwd")),
        flat(loaded.forward(&input, None).expect("fwd"))
    );
    // The same seed makes the same model.
    let again = TempDir::new("tiny-vlm-roundtrip-again");
    let twin = create::<CpuBackend>(&again.0, Preset::Tiny, 3, &device).expect("create");
    assert_eq!(
        flat(twin.forward(&input, None).expect("fwd")),
        flat(created.forward(&input, None).expect("fwd"))
    );
}

#[test]
fn the_model_sees_its_images_and_generates() {
    let tmp = TempDir::new("tiny-vlm-images");
    let device = Default::default();
    let model = create::<CpuBackend>(&tmp.0, Preset::Tiny, 1, &device).expect("create");
    let tokenizer = TextTokenizer::load(&tmp.0).expect("tokenizer");
    let red = write_image(&tmp.0, "red.png", [220, 20, 20], false);
    let knife = write_image(&tmp.0, "knife.png", [20, 20, 220], true);

    let prompt_red = user_prompt(
        &tokenizer,
        &model.config,
        "Is this safe?",
        std::slice::from_ref(&red),
        None,
    )
    .expect("prompt");
    let prompt_knife = user_prompt(
        &tokenizer,
        &model.config,
        "Is this safe?",
        std::slice::from_ref(&knife),
        None,
    )
    .expect("prompt");
    assert_eq!(
        prompt_red.tokens, prompt_knife.tokens,
        "same text, same placeholders"
    );
    assert_eq!(
        prompt_red.tokens.iter().filter(|&&t| t == 5).count(),
        16,
        "one placeholder per patch"
    );

    let logits = |p: &safer_runtime::generate::Prompt| {
        let n = p.tokens.len();
        let input = ModelInput {
            tokens: p.tokens.clone(),
            layout: Layout::dense(1, n, true),
            images: p.images.clone(),
        };
        flat(model.forward(&input, None).expect("forward"))
    };
    let (a, b) = (logits(&prompt_red), logits(&prompt_knife));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-3,
        "different images must change the logits ({diff})"
    );

    // Two images in one prompt, batched with a one-image prompt.
    let both =
        user_prompt(&tokenizer, &model.config, "Compare.", &[red, knife], None).expect("prompt");
    assert_eq!(both.images.as_ref().map(|i| i.count), Some(2));
    let params = SamplingParams {
        max_new_tokens: 8,
        ..SamplingParams::default()
    };
    let out = generate(
        &model,
        &tokenizer,
        &[prompt_red, both],
        &params,
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .expect("generate");
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|c| !c.tokens.is_empty() && c.tokens.len() == c.logprobs.len()));
}

#[test]
fn image_placeholder_mismatches_are_errors() {
    let tmp = TempDir::new("tiny-vlm-mismatch");
    let device = Default::default();
    let model = create::<CpuBackend>(&tmp.0, Preset::Tiny, 1, &device).expect("create");
    let tokens = vec![5u32; 3];
    let input = ModelInput {
        tokens,
        layout: Layout::dense(1, 3, true),
        images: None,
    };
    let err = model
        .forward(&input, None)
        .expect_err("placeholders without images");
    assert!(err.to_string().contains("no images"), "{err}");
}

#[test]
fn gradients_reach_the_vision_tower() {
    let tmp = TempDir::new("tiny-vlm-grad");
    let device = Default::default();
    create::<CpuBackend>(&tmp.0, Preset::Tiny, 2, &device).expect("create");
    let model = Model::<CpuAutodiff>::load(&tmp.0, &device).expect("load");
    let tokenizer = TextTokenizer::load(&tmp.0).expect("tokenizer");
    let image = write_image(&tmp.0, "img.png", [10, 200, 10], true);
    let mut prompt =
        user_prompt(&tokenizer, &model.config, "What is it?", &[image], None).expect("prompt");
    prompt
        .tokens
        .extend(tokenizer.encode("A green square.").expect("encode"));
    let scores = sequence_logprobs(
        &model,
        &[prompt.tokens.clone()],
        prompt.images.as_ref(),
        1.0,
        tokenizer.pad_id,
    )
    .expect("score");
    let loss = (scores.logprobs * scores.mask).sum().neg();
    let grads = loss.backward();
    let patch_grad = model
        .vision
        .as_ref()
        .expect("vision")
        .patch_embed
        .weight
        .grad(&grads)
        .expect("gradient");
    let norm: f32 = patch_grad.abs().sum().into_scalar();
    assert!(
        norm > 0.0 && norm.is_finite(),
        "patch embedding gradient {norm}"
    );
}

/// GRPO's scoring of completions after their shared prompt sees each
/// prompt's own images: it equals scoring whole sequences, with prompts of
/// one and two images and different lengths.
#[test]
fn completions_after_image_prompts_score_as_whole_sequences() {
    use safer_runtime::generate::completion_logprobs;
    let tmp = TempDir::new("tiny-vlm-completions");
    let device = Default::default();
    let model = create::<CpuBackend>(&tmp.0, Preset::Tiny, 3, &device).expect("create");
    let tokenizer = TextTokenizer::load(&tmp.0).expect("tokenizer");
    let red = write_image(&tmp.0, "red.png", [220, 20, 20], false);
    let knife = write_image(&tmp.0, "knife.png", [20, 20, 220], true);
    let one = user_prompt(
        &tokenizer,
        &model.config,
        "Is this safe to hold?",
        std::slice::from_ref(&knife),
        None,
    )
    .expect("prompt");
    let two =
        user_prompt(&tokenizer, &model.config, "Compare.", &[red, knife], None).expect("prompt");
    assert_ne!(one.tokens.len(), two.tokens.len());
    let prompts = vec![one, two];
    let completions: [(usize, Vec<u32>); 4] = [
        (0, tokenizer.encode("No, it is a knife.").expect("encode")),
        (1, tokenizer.encode("Red.").expect("encode")),
        (0, tokenizer.encode("Yes.").expect("encode")),
        (
            1,
            tokenizer
                .encode("The second one is sharp.")
                .expect("encode"),
        ),
    ];
    let samples: Vec<(usize, &[u32])> = completions
        .iter()
        .map(|(p, c)| (*p, c.as_slice()))
        .collect();
    let shared =
        completion_logprobs(&model, &prompts, &samples, 1.0, tokenizer.pad_id).expect("shared");
    let shared = flat(shared.logprobs);
    let width = samples.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    let mut worst = 0.0f32;
    for (i, (p, c)) in samples.iter().enumerate() {
        // Scored alone, so only this prompt's images are in the batch.
        let whole: Vec<u32> = prompts[*p].tokens.iter().chain(c.iter()).copied().collect();
        let alone = sequence_logprobs(
            &model,
            &[whole],
            prompts[*p].images.as_ref(),
            1.0,
            tokenizer.pad_id,
        )
        .expect("whole");
        let alone = flat(alone.logprobs);
        let start = prompts[*p].tokens.len() - 1;
        for j in 0..c.len() {
            worst = worst.max((shared[i * width + j] - alone[start + j]).abs());
        }
    }
    assert!(worst <= 1e-5, "largest difference {worst:e}");
}
