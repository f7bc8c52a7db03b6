//! The Qwen2.5-VL parity fixture (`runtime/fixtures/models/qwen2_5_vl/`,
//! made by `make_qwen2_5_vl_fixture.py`), on whichever backend `B` is: the
//! CPU test and the feature-gated GPU tests share these checks.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::burn;
use safer_runtime::generate::{generate, Prompt, SamplingParams};
use safer_runtime::model::weights::WeightReader;
use safer_runtime::model::{ImagePatches, Layout, Model, ModelInput};
use safer_runtime::text::TextTokenizer;
use serde_json::Value;

use super::parity::{dir, expected, ids};

/// The fixture loaded on `B`, with what transformers computed.
pub struct Fixture<B: Backend> {
    /// The model folder.
    pub dir: PathBuf,
    /// The model.
    pub model: Model<B>,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// `expected.json`.
    pub expected: Value,
    /// `expected.safetensors` (pixel values and logits).
    pub reference: WeightReader,
}

impl<B: Backend> Fixture<B> {
    /// Loads the fixture on `device`.
    pub fn load(device: &B::Device) -> Self {
        let dir = dir("qwen2_5_vl");
        let model = Model::<B>::load(&dir, device).expect("load");
        let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
        let reference =
            WeightReader::open_file(&dir.join("expected.safetensors")).expect("expected");
        Self {
            expected: expected(&dir),
            dir,
            model,
            tokenizer,
            reference,
        }
    }

    /// The cases: a text-only prompt, one image, two images.
    pub fn cases(&self) -> &Vec<Value> {
        self.expected["cases"].as_array().expect("cases")
    }

    /// The path of image `name`.
    pub fn image_path(&self, name: &str) -> PathBuf {
        self.dir.join("images").join(format!("{name}.png"))
    }

    /// Image `name`'s grid of patches, as the processor made it.
    pub fn grid(&self, name: &str) -> [usize; 3] {
        let grid = ids(&self.expected["images"][name]["grid"]);
        [grid[0] as usize, grid[1] as usize, grid[2] as usize]
    }

    /// The pixel values transformers' processor made of image `name`.
    pub fn their_pixels(&self, name: &str) -> Vec<f32> {
        let [t, h, w] = self.grid(name);
        let dim = self
            .model
            .config
            .qwen_vision
            .as_ref()
            .expect("vision")
            .patch_dim();
        self.reference
            .values(&format!("pixels.{name}"), &[t * h * w, dim])
            .expect("pixels")
    }

    /// A case's prompt with transformers' pixel values for its images, so
    /// the model is compared on the same inputs.
    pub fn prompt_with_their_pixels(&self, case: &Value) -> Prompt {
        let names: Vec<&str> = case["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|n| n.as_str().expect("name"))
            .collect();
        let images = (!names.is_empty()).then(|| ImagePatches {
            count: names.len(),
            values: names.iter().flat_map(|n| self.their_pixels(n)).collect(),
            grids: names.iter().map(|n| self.grid(n)).collect(),
        });
        Prompt {
            tokens: ids(&case["prompt"]),
            images,
        }
    }
}

/// The largest absolute difference of two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every case's logits agree with transformers within `tolerance`;
/// returns the largest difference.
pub fn check_logits<B: Backend>(device: &B::Device, tolerance: f32) -> f32 {
    let f = Fixture::<B>::load(device);
    let vocab = f.model.vocab_size();
    let mut worst = 0.0f32;
    for case in f.cases() {
        let prompt = f.prompt_with_their_pixels(case);
        let len = prompt.tokens.len();
        let input = ModelInput {
            tokens: prompt.tokens,
            layout: Layout::dense(1, len, true),
            images: prompt.images,
        };
        let ours: Vec<f32> = f
            .model
            .forward(&input, None)
            .expect("forward")
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32");
        let name = case["name"].as_str().expect("name");
        let theirs = f
            .reference
            .values(&format!("logits.{name}"), &[len, vocab])
            .expect("reference");
        let diff = max_diff(&ours, &theirs);
        println!("qwen2_5_vl {name}: max |Δlogit| {diff:e}");
        assert!(diff <= tolerance, "{name}: max |Δlogit| = {diff}");
        worst = worst.max(diff);
    }
    worst
}

/// Greedy continuations equal transformers', one prompt at a time and
/// left-padded together (with one prompt repeated, so rows share its cache).
pub fn check_greedy<B: Backend>(device: &B::Device) {
    let mut f = Fixture::<B>::load(device);
    f.tokenizer.eos_ids.clear(); // the fixture generated without an end token
    let params = SamplingParams::greedy(10);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let prompts: Vec<Prompt> = f
        .cases()
        .iter()
        .map(|c| f.prompt_with_their_pixels(c))
        .collect();
    let wants: Vec<Vec<u32>> = f.cases().iter().map(|c| ids(&c["greedy"])).collect();
    for ((prompt, want), case) in prompts.iter().zip(&wants).zip(f.cases()) {
        let got = generate(
            &f.model,
            &f.tokenizer,
            std::slice::from_ref(prompt),
            &params,
            &mut rng,
        )
        .expect("generate");
        assert_eq!(&got[0].tokens, want, "{}", case["name"]);
    }
    // Left-padded together, each row keeps its own images and rotary offset.
    let mut batch = prompts.clone();
    batch.push(prompts[2].clone());
    let got = generate(&f.model, &f.tokenizer, &batch, &params, &mut rng).expect("batched");
    for (i, completion) in got.iter().enumerate() {
        assert_eq!(&completion.tokens, &wants[i.min(2)], "batch row {i}");
    }
}
