//! The fused training passes against burn's autodiff through the tensor
//! code (`completion_logprobs`): log-probs, entropies and every weight's
//! gradient.

// A test module in its own file: clippy's test exemptions see only inline
// `#[cfg(test)]` modules and `#[test]` functions, so its helpers say so here.
#![allow(clippy::expect_used, clippy::panic)]

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::{GivenInputs, Packed, Recorded, Scored, Segment};
use crate::generate::{completion_logprobs, fused_completion_scores, Prompt};
use crate::model::{
    Architecture, ImagePatches, Model, ModelConfig, TextConfig, TextDecoder, VisionConfig,
};
use crate::{CpuAutodiff, CpuBackend};

fn model(tied: bool, seed: u64) -> Model<CpuAutodiff> {
    let text = TextConfig {
        vocab_size: 40,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: tied,
        max_position_embeddings: 64,
        mrope_section: None,
    };
    let device = Default::default();
    CpuAutodiff::seed(&device, seed);
    let mut decoder = TextDecoder::init(text.clone(), 0.5, &device);
    // Gains other than 1, so that their part of every gradient shows.
    let gain = |i: usize| {
        let values: Vec<f32> = (0..32)
            .map(|j| 0.6 + 0.03 * ((i * 7 + j) % 23) as f32)
            .collect();
        Param::from_tensor(Tensor::from_data(TensorData::new(values, [32]), &device))
    };
    for (i, layer) in decoder.layers.iter_mut().enumerate() {
        layer.input_layernorm.gamma = gain(2 * i);
        layer.post_attention_layernorm.gamma = gain(2 * i + 1);
    }
    decoder.norm.gamma = gain(9);
    Model {
        vision: None,
        qwen_vision: None,
        text: decoder,
        config: ModelConfig {
            architecture: Architecture::Qwen2,
            text,
            vision: None,
            qwen_vision: None,
            image_token_id: None,
            eos_token_ids: vec![],
            context_limit: None,
            source: Default::default(),
        },
    }
}

/// Two prompts of different lengths; completions of 5, 1, 4 and 6 tokens
/// (so padding columns, and a completion scored only from its prompt).
fn batch() -> (Vec<Prompt>, Vec<(usize, Vec<u32>)>) {
    let prompt = |tokens: Vec<u32>| Prompt {
        tokens,
        images: None,
    };
    let prompts = vec![prompt(vec![3, 17, 8]), prompt(vec![1, 30, 22, 9, 14])];
    let samples = vec![
        (0, vec![5, 6, 7, 39, 2]),
        (0, vec![11]),
        (1, vec![4, 4, 20, 33]),
        (1, vec![12, 0, 25, 38, 19, 7]),
    ];
    (prompts, samples)
}

/// Fixed weights of a linear loss over `[samples, width]`.
fn coefficients(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 37 + seed * 11) % 19) as f32 / 9.0 - 1.0)
        .collect()
}

/// Every float parameter's gradient in `a` and `b`, compared: the largest
/// difference relative to the largest magnitude of the parameter's gradient.
struct Compare<'a> {
    a: &'a GradientsParams,
    b: &'a GradientsParams,
    worst: f32,
    count: usize,
}

/// The largest relative difference between `a`'s and `b`'s gradients over
/// `model`'s float parameters, and how many parameters were compared.
fn largest_difference<M: Module<CpuAutodiff>>(
    model: &M,
    a: &GradientsParams,
    b: &GradientsParams,
) -> (f32, usize) {
    let mut compare = Compare {
        a,
        b,
        worst: 0.0,
        count: 0,
    };
    model.visit(&mut compare);
    (compare.worst, compare.count)
}

impl ModuleVisitor<CpuAutodiff> for Compare<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuAutodiff, D>>) {
        let get = |g: &GradientsParams| -> Vec<f32> {
            let t = g
                .get::<CpuBackend, D>(param.id)
                .unwrap_or_else(|| panic!("no gradient for a {:?} parameter", param.val().dims()));
            assert_eq!(t.dims(), param.val().dims(), "gradient shape");
            t.into_data().into_vec::<f32>().expect("f32")
        };
        let (a, b) = (get(self.a), get(self.b));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        self.worst = self.worst.max(diff / scale);
        self.count += 1;
    }
}

fn check(tied: bool, temperature: f32) {
    let model = model(tied, 7);
    let (prompts, samples) = batch();
    let params = 2 + usize::from(!tied) + 2 * (2 + 4 + 3 + 3);
    compare_with_autodiff(&model, &prompts, &samples, temperature, params);
}

/// The fused scores and gradients of a linear loss over log-probs and
/// entropies against the tensor code under autodiff; `params` parameters
/// get gradients.
fn compare_with_autodiff(
    model: &Model<CpuAutodiff>,
    prompts: &[Prompt],
    samples: &[(usize, Vec<u32>)],
    temperature: f32,
    params: usize,
) {
    let (expected, got) = gradients_both_ways(model, prompts, samples, temperature);
    let (worst, count) = largest_difference(model, &expected, &got);
    assert_eq!(count, params);
    assert!(
        worst <= 1e-4,
        "largest relative gradient difference {worst}"
    );
}

/// The gradients of a linear loss over log-probs and entropies, through
/// the tensor code under autodiff and through the fused passes, once their
/// scores are checked to agree.
fn gradients_both_ways(
    model: &Model<CpuAutodiff>,
    prompts: &[Prompt],
    samples: &[(usize, Vec<u32>)],
    temperature: f32,
) -> (GradientsParams, GradientsParams) {
    let pairs: Vec<(usize, &[u32])> = samples.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    let reference =
        completion_logprobs(model, prompts, &pairs, temperature, 0).expect("tensor code");
    let [n, width] = reference.logprobs.dims();
    let mask: Vec<f32> = reference.mask.to_data().into_vec().expect("mask");
    let a: Vec<f32> = coefficients(n * width, 1)
        .iter()
        .zip(&mask)
        .map(|(c, m)| c * m)
        .collect();
    let b: Vec<f32> = coefficients(n * width, 2)
        .iter()
        .zip(&mask)
        .map(|(c, m)| c * m)
        .collect();
    let device = Default::default();
    let tensor = |v: &[f32]| {
        Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(v.to_vec(), [n, width]), &device)
    };
    let loss = (reference.logprobs.clone() * tensor(&a)).sum()
        + (reference.entropy.clone() * tensor(&b)).sum();
    let expected = GradientsParams::from_grads(loss.backward(), model);

    let fused = fused_completion_scores(model, prompts, &pairs, temperature).expect("fused");
    assert_eq!(fused.width, width);
    let values = |t: &Tensor<CpuAutodiff, 2>| -> Vec<f32> { t.to_data().into_vec().expect("f32") };
    for (name, ours, theirs) in [
        ("log-prob", &fused.logprobs, values(&reference.logprobs)),
        ("entropy", &fused.entropy, values(&reference.entropy)),
    ] {
        for ((x, y), m) in ours.iter().zip(&theirs).zip(&mask) {
            if *m > 0.0 {
                assert!((x - y).abs() <= 1e-5, "{name}: fused {x}, tensor code {y}");
            }
        }
    }
    let got = fused.gradients(&a, Some(&b));
    (expected, got)
}

#[test]
fn tied_gradients_equal_autodiff_through_the_tensor_code() {
    check(true, 1.0);
}

#[test]
fn untied_gradients_at_a_temperature_equal_autodiff_through_the_tensor_code() {
    check(false, 0.7);
}

/// Three prompts, so the passes run as two parts side by side, and samples
/// out of their prompts' order, so each part's scores go to columns of
/// samples that are not consecutive.
#[test]
fn parts_side_by_side_score_samples_out_of_order_as_autodiff_does() {
    let model = model(true, 11);
    let prompt = |tokens: Vec<u32>| Prompt {
        tokens,
        images: None,
    };
    let prompts = vec![
        prompt(vec![3, 17, 8, 21]),
        prompt(vec![1, 30]),
        prompt(vec![9, 14, 2, 6, 33]),
    ];
    let samples = vec![
        (2, vec![5, 6, 7]),
        (0, vec![11, 12, 13, 14, 15]),
        (1, vec![4]),
        (2, vec![20, 33, 1, 2]),
        (0, vec![12, 0]),
        (1, vec![25, 38, 19, 7, 3, 3]),
    ];
    let params = 2 + 2 * (2 + 4 + 3 + 3);
    compare_with_autodiff(&model, &prompts, &samples, 1.0, params);
}

/// One prompt: the passes run as one part.
#[test]
fn one_prompt_runs_as_one_part_as_autodiff_does() {
    let model = model(true, 5);
    let prompts = vec![Prompt {
        tokens: vec![3, 17, 8, 21],
        images: None,
    }];
    let samples = vec![(0, vec![5, 6, 7]), (0, vec![11]), (0, vec![20, 33, 1, 2])];
    let params = 2 + 2 * (2 + 4 + 3 + 3);
    compare_with_autodiff(&model, &prompts, &samples, 1.0, params);
}

#[test]
fn packings_the_passes_cannot_run_are_refused() {
    let model = model(true, 3);
    let segment = |start, len, context| Segment {
        start,
        len,
        context,
    };
    let packed = |segments: Vec<Segment>, scored: Vec<Scored>| Packed {
        tokens: vec![1, 2, 3, 4],
        positions: vec![0, 1, 2, 3],
        segments,
        scored,
    };
    let fine = packed(
        vec![segment(0, 2, None), segment(2, 2, Some(0))],
        vec![Scored { row: 3, target: 5 }],
    );
    assert!(fine.problem(40).is_none());
    let broken = [
        // A gap between segments.
        packed(vec![segment(0, 1, None), segment(2, 2, Some(0))], vec![]),
        // A context that is not earlier.
        packed(vec![segment(0, 2, Some(1)), segment(2, 2, None)], vec![]),
        // Tokens left uncovered.
        packed(vec![segment(0, 2, None)], vec![]),
        // A scored row and a target out of range.
        packed(
            vec![segment(0, 4, None)],
            vec![Scored { row: 4, target: 1 }],
        ),
        packed(
            vec![segment(0, 4, None)],
            vec![Scored { row: 0, target: 40 }],
        ),
    ];
    for p in broken {
        assert!(p.problem(40).is_some(), "{p:?}");
        assert!(Recorded::forward(&model.text, p, GivenInputs::default(), 1.0).is_none());
    }
    let none = GivenInputs::default;
    assert!(Recorded::forward(&model.text, fine.clone(), none(), 0.0).is_none());
    assert!(Recorded::forward(&model.text, fine.clone(), none(), 1.0).is_some());
    // No parts, or one refused part among good ones.
    assert!(Recorded::forward_parts(&model.text, vec![], 1.0).is_none());
    let gap = packed(vec![segment(0, 1, None), segment(2, 2, Some(0))], vec![]);
    let parts = vec![(fine.clone(), none()), (gap, none())];
    assert!(Recorded::forward_parts(&model.text, parts, 1.0).is_none());
    let parts = vec![(fine.clone(), none()), (fine.clone(), none())];
    assert!(Recorded::forward_parts(&model.text, parts, 1.0).is_some());
    // Given inputs: a row out of range, a row twice, too few values.
    let given = |rows: Vec<usize>, count: usize| GivenInputs {
        rows,
        values: vec![0.5; count * 32],
    };
    for bad in [
        given(vec![4], 1),
        given(vec![1, 1], 2),
        given(vec![0, 2], 1),
    ] {
        assert!(Recorded::forward(&model.text, fine.clone(), bad, 1.0).is_none());
    }
    assert!(Recorded::forward(&model.text, fine, given(vec![0, 2], 2), 1.0).is_some());
    // No samples, a prompt out of range, an empty completion, an image for
    // a model without a vision tower: the caller takes the tensor code.
    let (mut prompts, samples) = batch();
    let pairs: Vec<(usize, &[u32])> = samples.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    assert!(fused_completion_scores(&model, &prompts, &pairs, 1.0).is_some());
    assert!(fused_completion_scores(&model, &prompts, &pairs[..0], 1.0).is_none());
    assert!(fused_completion_scores(&model, &prompts, &[(2, &[1u32][..])], 1.0).is_none());
    assert!(fused_completion_scores(&model, &prompts, &[(0, &[][..])], 1.0).is_none());
    prompts[1].images = Some(ImagePatches {
        count: 1,
        values: vec![0.0; 12],
        grids: vec![],
    });
    assert!(fused_completion_scores(&model, &prompts, &pairs, 1.0).is_none());
}

/// The GRPO loss as the trainer builds it (clipped ratios against old
/// log-probs, k3 KL to a reference in the loss, an entropy bonus,
/// token-mean), on the fused scores' leaves and on the tensor code:
/// the same gradient for every weight.
#[test]
fn a_grpo_loss_on_the_fused_leaves_has_autodiffs_gradients() {
    use crate::grpo::kl::{Clamp, Estimator};
    use crate::grpo::policy_loss::{compute, KlInLoss, LossConfig, LossInputs};

    let model = model(true, 11);
    let (prompts, samples) = batch();
    let pairs: Vec<(usize, &[u32])> = samples.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    let reference = completion_logprobs(&model, &prompts, &pairs, 1.0, 0).expect("tensor code");
    let [n, width] = reference.logprobs.dims();
    let device = Default::default();
    let tensor =
        |v: Vec<f32>| Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(v, [n, width]), &device);
    let logp: Vec<f32> = reference.logprobs.to_data().into_vec().expect("f32");
    // Old log-probs off by up to ±0.45, so that some ratios clip; the
    // reference's off by up to ±0.3.
    let shifted = |scale: f32, seed: usize| -> Vec<f32> {
        logp.iter()
            .zip(coefficients(n * width, seed))
            .map(|(l, c)| l + scale * c)
            .collect()
    };
    let config = LossConfig {
        kl: Some(KlInLoss {
            estimator: Estimator::K3,
            beta: 0.04,
            clamp: Clamp::None,
        }),
        entropy_coef: 0.01,
        max_completion_length: width,
        ..LossConfig::default()
    };
    let inputs = |logp: Tensor<CpuAutodiff, 2>, entropy: Tensor<CpuAutodiff, 2>| LossInputs {
        logp,
        old_logp: Some(tensor(shifted(0.45, 3))),
        ref_logp: Some(tensor(shifted(0.3, 4))),
        mask: reference.mask.clone(),
        advantages: Tensor::from_data(TensorData::new(vec![1.0f32, -0.5, 0.8, -1.2], [n]), &device),
        entropy: Some(entropy),
        normaliser: None,
    };
    let expected = compute(
        &inputs(reference.logprobs.clone(), reference.entropy.clone()),
        &config,
        1,
    )
    .expect("loss");
    assert!(expected.stats.clip_low_fraction + expected.stats.clip_high_fraction > 0.0);
    let expected = GradientsParams::from_grads(expected.loss.backward(), &model);

    let fused = fused_completion_scores(&model, &prompts, &pairs, 1.0).expect("fused");
    let leaves = fused.leaves::<CpuBackend>(&device, true);
    let out = compute(
        &inputs(leaves.logprobs.clone(), leaves.entropy.clone()),
        &config,
        1,
    )
    .expect("loss");
    let got = fused.backward(&leaves, out.loss);
    let (worst, count) = largest_difference(&model, &expected, &got);
    assert_eq!(count, 2 + 2 * 12);
    assert!(worst <= 1e-4, "largest relative difference {worst}");
}

/// A `tiny_vlm`-shaped model: the decoder of [`model`] (untied) and a
/// one-block vision tower over 8×8 images in 4×4 patches (4 placeholders
/// per image, token 39).
fn vision_model() -> Model<CpuAutodiff> {
    let mut text_only = model(false, 5);
    let vision = VisionConfig {
        image_size: 8,
        patch_size: 4,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        rms_norm_eps: 1e-6,
        image_mean: [0.5; 3],
        image_std: [0.25; 3],
    };
    let config = ModelConfig {
        architecture: Architecture::TinyVlm,
        vision: Some(vision),
        image_token_id: Some(39),
        ..text_only.config.clone()
    };
    let mut model = Model::init(config, &Default::default());
    std::mem::swap(&mut model.text, &mut text_only.text);
    model
}

/// Two prompts with one and two images, and four completions of them.
fn image_batch() -> (Vec<Prompt>, Vec<(usize, Vec<u32>)>) {
    let images = |count: usize, seed: usize| ImagePatches {
        count,
        values: coefficients(count * 4 * 48, seed),
        grids: vec![],
    };
    let prompts = vec![
        Prompt {
            tokens: vec![3, 39, 39, 39, 39, 17, 8],
            images: Some(images(1, 5)),
        },
        Prompt {
            tokens: vec![1, 39, 39, 39, 39, 30, 39, 39, 39, 39, 22],
            images: Some(images(2, 6)),
        },
    ];
    // A completion may hold the placeholder token: there it is a token.
    let samples = vec![
        (0, vec![5, 6, 39, 2]),
        (1, vec![12, 0, 25, 38, 19, 7]),
        (1, vec![11]),
        (0, vec![4, 4, 20]),
    ];
    (prompts, samples)
}

#[test]
fn image_prompts_train_the_vision_tower_as_autodiff_does() {
    let model = vision_model();
    let (prompts, samples) = image_batch();
    struct Count(usize);
    impl ModuleVisitor<CpuAutodiff> for Count {
        fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<CpuAutodiff, D>>) {
            self.0 += 1;
        }
    }
    let mut vision_params = Count(0);
    model.vision.visit(&mut vision_params);
    let vision_params = vision_params.0;
    assert!(vision_params > 5);
    compare_with_autodiff(&model, &prompts, &samples, 1.0, 27 + vision_params);
    // Placeholders without their images: the tensor code says what is wrong.
    let mut missing = prompts.clone();
    missing[1].images = Some(ImagePatches {
        count: 1,
        values: coefficients(4 * 48, 7),
        grids: vec![],
    });
    let pairs: Vec<(usize, &[u32])> = samples.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    assert!(fused_completion_scores(&model, &missing, &pairs, 1.0).is_none());
}

/// `freeze_vision`: the vision tower's weights take no gradient, through
/// the fused passes as through autodiff, and the decoder's gradients are
/// the same both ways.
#[test]
fn a_frozen_vision_tower_takes_no_gradient() {
    assert!(!vision_model().for_training(false).vision_frozen());
    let model = vision_model().for_training(true);
    assert!(model.vision_frozen());
    let (prompts, samples) = image_batch();
    let (expected, got) = gradients_both_ways(&model, &prompts, &samples, 1.0);
    struct NoGradient<'a>(&'a [&'a GradientsParams], usize);
    impl ModuleVisitor<CpuAutodiff> for NoGradient<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuAutodiff, D>>) {
            for grads in self.0 {
                assert!(grads.get::<CpuBackend, D>(param.id).is_none());
            }
            self.1 += 1;
        }
    }
    let mut none = NoGradient(&[&expected, &got], 0);
    model.vision.visit(&mut none);
    assert!(none.1 > 5);
    let (worst, count) = largest_difference(&model.text, &expected, &got);
    assert_eq!(count, 27);
    assert!(
        worst <= 1e-4,
        "largest relative gradient difference {worst}"
    );
}
