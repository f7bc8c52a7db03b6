//! Parity with Hugging Face transformers on a tiny random Qwen2.5-VL.
//!
//! `runtime/fixtures/models/make_qwen2_5_vl_fixture.py` saved the model
//! (three vision blocks, one of them attending over the whole image,
//! windows of 2×2 merged tokens; a two-layer decoder with M-RoPE sections
//! `[4, 2, 2]`), three images and what transformers' processor and model
//! computed. Here saferc must agree: the prompt's tokens, the images'
//! grids and patches, the 3-D rotary positions, the logits (max |Δ| ≤
//! 1e-4 in f32) and the greedy continuations, for a text-only prompt, one
//! image and two images of different shapes.

#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation
mod common;

use std::path::PathBuf;

use safer_runtime::generate::{
    completion_logprobs, merge_images, sequence_logprobs, user_prompt, Prompt,
};
use safer_runtime::images::{load_rgb, qwen};
use safer_runtime::model::{mrope, Architecture, Layout, Model, ModelInput};
use safer_runtime::CpuBackend;

use common::parity::ids;
use common::qwen2_5_vl::max_diff;

type Fixture = common::qwen2_5_vl::Fixture<CpuBackend>;

fn fixture() -> Fixture {
    Fixture::load(&Default::default())
}

#[test]
fn the_config_reads_as_qwen2_5_vl() {
    let f = fixture();
    let c = &f.model.config;
    assert_eq!(c.architecture, Architecture::Qwen25Vl);
    assert_eq!(c.text.mrope_section, Some([4, 2, 2]));
    let vision = c.qwen_vision.as_ref().expect("vision");
    assert_eq!(vision.fullatt_block_indexes, vec![1]);
    assert_eq!((vision.window_size, vision.depth), (56, 3));
    // From processor_config.json (transformers 5 writes no preprocessor_config.json).
    assert_eq!(
        (vision.processing.min_pixels, vision.processing.max_pixels),
        (784, 12544)
    );
    assert_eq!(c.image_token_id, Some(5));
}

#[test]
fn prompts_render_and_expand_as_the_processor_does() {
    let f = fixture();
    for case in f.cases() {
        let paths: Vec<PathBuf> = case["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|n| f.image_path(n.as_str().expect("name")))
            .collect();
        let question = case["question"].as_str().expect("question");
        let prompt =
            user_prompt(&f.tokenizer, &f.model.config, question, &paths, None).expect("prompt");
        assert_eq!(prompt.tokens, ids(&case["prompt"]), "{}", case["name"]);
    }
}

#[test]
fn images_are_patched_as_the_processor_patches_them() {
    let f = fixture();
    let vision = f.model.config.qwen_vision.as_ref().expect("vision");
    // Images already of a valid size are cut exactly; one that must be
    // resized is resized as Pillow resizes it, which torchvision's
    // antialiased bicubic follows to within one grey level (1 / (255 ·
    // std) ≈ 0.015 after normalising).
    for (name, tolerance) in [("wide", 1e-5), ("tall", 1e-5), ("odd", 0.016)] {
        let image = load_rgb(&f.image_path(name)).expect("image");
        let (ours, grid) = qwen::patches(&image, vision).expect("patches");
        assert_eq!(grid, f.grid(name), "{name}");
        let theirs = f.their_pixels(name);
        let diff = max_diff(&ours, &theirs);
        let mean = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / ours.len() as f32;
        println!("{name}: max |Δpixel| {diff:e}, mean {mean:e}");
        assert!(diff <= tolerance, "{name}: max |Δpixel| = {diff}");
    }
}

#[test]
fn rotary_positions_match_get_rope_index() {
    let f = fixture();
    let vision = f.model.config.qwen_vision.as_ref().expect("vision");
    for case in f.cases().iter().filter(|c| !c["positions"].is_null()) {
        let prompt = f.prompt_with_their_pixels(case);
        let grids = prompt
            .images
            .as_ref()
            .map(|i| i.grids.clone())
            .unwrap_or_default();
        let layout = Layout::dense(1, prompt.tokens.len(), true);
        let (ours, _) = mrope::positions(
            &prompt.tokens,
            &layout,
            5,
            &grids,
            vision.spatial_merge_size,
            &[],
        )
        .expect("positions");
        for axis in 0..3 {
            let theirs: Vec<i64> = case["positions"][axis]
                .as_array()
                .expect("axis")
                .iter()
                .map(|v| v.as_i64().expect("position"))
                .collect();
            let column: Vec<i64> = ours.iter().map(|p| p[axis]).collect();
            assert_eq!(column, theirs, "{} axis {axis}", case["name"]);
        }
    }
}

#[test]
fn logits_match_transformers() {
    let worst = common::qwen2_5_vl::check_logits::<CpuBackend>(&Default::default(), 1e-4);
    println!("largest |Δlogit| on the CPU: {worst:e}");
}

#[test]
fn greedy_continuations_match_transformers_alone_and_batched() {
    common::qwen2_5_vl::check_greedy::<CpuBackend>(&Default::default());
}

/// `model`'s logits on the fixture's one-image prompt (its pixels as the
/// processor made them).
fn image_prompt_logits(f: &Fixture, model: &Model<CpuBackend>) -> Vec<f32> {
    let prompt = f.prompt_with_their_pixels(&f.cases()[1]);
    let input = ModelInput {
        layout: Layout::dense(1, prompt.tokens.len(), true),
        tokens: prompt.tokens,
        images: prompt.images,
    };
    model
        .forward(&input, None)
        .expect("forward")
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32")
}

#[test]
fn a_saved_model_loads_back_with_the_same_logits() {
    let f = fixture();
    let out = std::env::temp_dir().join(format!("saferc-qwen25vl-{}", std::process::id()));
    f.model.save(&out).expect("save");
    let again = Model::<CpuBackend>::load(&out, &Default::default()).expect("reload");
    assert_eq!(again.config, f.model.config);
    assert_eq!(
        image_prompt_logits(&f, &again),
        image_prompt_logits(&f, &f.model)
    );
    std::fs::remove_dir_all(&out).ok();
}

/// transformers 5 saves Qwen2.5-VL's decoder under
/// `model.language_model.` and its vision tower under `model.visual.` (4.x
/// saved `model.` and `visual.`): the fixture's tensors renamed so pass the
/// header check and load with the same logits, and a missing one is named
/// as that layout names it.
#[test]
fn a_checkpoint_in_transformers_5_s_layout_loads_with_the_same_logits() {
    use safer_runtime::model::weights::check_tensors;
    use safer_runtime::model::ModelConfig;
    use safetensors::SafeTensors;
    let f = fixture();
    let dir = std::env::temp_dir().join(format!("saferc-qwen25vl-v5-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for file in [
        "config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(f.dir.join(file), dir.join(file)).expect("copy");
    }
    let bytes = std::fs::read(f.dir.join("model.safetensors")).expect("read");
    let stored = SafeTensors::deserialize(&bytes).expect("safetensors");
    let renamed = |name: &str| -> String {
        if let Some(rest) = name.strip_prefix("visual.") {
            format!("model.visual.{rest}")
        } else if let Some(rest) = name.strip_prefix("model.") {
            format!("model.language_model.{rest}")
        } else {
            name.to_string()
        }
    };
    let write = |skip: Option<&str>| {
        let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = stored
            .tensors()
            .into_iter()
            .filter(|(name, _)| Some(name.as_str()) != skip)
            .map(|(name, view)| (renamed(&name), view))
            .collect();
        let out = safetensors::serialize(tensors, None).expect("serialize");
        std::fs::write(dir.join("model.safetensors"), out).expect("write");
    };
    write(None);
    let config = ModelConfig::read(&dir).expect("config");
    check_tensors(&dir, &config).expect("the header check takes transformers 5's names");
    let again = Model::<CpuBackend>::load(&dir, &Default::default()).expect("load");
    assert_eq!(
        image_prompt_logits(&f, &again),
        image_prompt_logits(&f, &f.model)
    );

    write(Some("visual.blocks.0.attn.qkv.weight"));
    let config = ModelConfig::read(&dir).expect("config");
    let checked = check_tensors(&dir, &config)
        .expect_err("a tensor is missing")
        .to_string();
    let loaded = Model::<CpuBackend>::load(&dir, &Default::default())
        .expect_err("a tensor is missing")
        .to_string();
    assert_eq!(checked, loaded);
    assert!(
        checked.contains("tensor `model.visual.blocks.0.attn.qkv.weight` is missing"),
        "{checked}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn completions_scored_after_cached_image_prompts_equal_whole_sequences() {
    // Training scores completions after each prompt's cached keys: the
    // rotary offset an image leaves must carry from the prompt's forward
    // to the completions' (through the cache's row selection).
    let f = fixture();
    let prompts: Vec<Prompt> = f
        .cases()
        .iter()
        .map(|c| f.prompt_with_their_pixels(c))
        .collect();
    let completions: Vec<Vec<u32>> = f.cases().iter().map(|c| ids(&c["greedy"])).collect();
    // Samples out of prompt order, one prompt twice, one without samples
    // of its own before the others.
    let order = [2usize, 0, 2, 1];
    let samples: Vec<(usize, &[u32])> = order
        .iter()
        .map(|&p| (p, completions[p].as_slice()))
        .collect();
    let pad = f.tokenizer.pad_id;
    let cached = completion_logprobs(&f.model, &prompts, &samples, 1.0, pad).expect("cached");
    let cached: Vec<f32> = cached
        .logprobs
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32");
    let width = completions.iter().map(Vec::len).max().unwrap_or(0);
    for (row, &p) in order.iter().enumerate() {
        let sequence: Vec<u32> = prompts[p]
            .tokens
            .iter()
            .chain(&completions[p])
            .copied()
            .collect();
        let whole = sequence_logprobs(
            &f.model,
            std::slice::from_ref(&sequence),
            merge_images(std::slice::from_ref(&prompts[p])).as_ref(),
            1.0,
            pad,
        )
        .expect("whole");
        let whole: Vec<f32> = whole
            .logprobs
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32");
        let tail = &whole[prompts[p].tokens.len() - 1..];
        let diff = max_diff(
            &cached[row * width..row * width + completions[p].len()],
            tail,
        );
        assert!(
            diff <= 1e-4,
            "sample {row} (prompt {p}): max |Δlogprob| = {diff}"
        );
    }
}
