//! The GRPO engine end to end and under bad input: a toy categorical policy
//! learns the best action; gradient accumulation over micro-batches equals
//! one batch; NaN/Inf and shape mismatches are errors naming the step and
//! the input; dynamic sampling stops at its cap; global norm clipping.

#![allow(clippy::panic)]

use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safer_runtime::grpo::advantage::{self, AdvantageConfig, MultiObjective, Scale};
use safer_runtime::grpo::aggregate::Aggregation;
use safer_runtime::grpo::dynamic_sampling::{Keep, Sampler};
use safer_runtime::grpo::policy_loss::{self, LossConfig, LossInputs};
use safer_runtime::grpo::{clip, to_vec, GrpoError};
use safer_runtime::CpuAutodiff as AD;

/// A policy over `A` actions with one logit each. (burn's `Module` derive
/// expects the backend parameter to be called `B`.)
#[derive(Module, Debug)]
struct Categorical<B: Backend> {
    logits: Param<Tensor<B, 1>>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn sample(probs: &[f32], rng: &mut Rng) -> usize {
    let u = rng.next();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    probs.len() - 1
}

fn one_hot(actions: &[usize], a: usize) -> Tensor<AD, 2> {
    let mut data = vec![0.0f32; actions.len() * a];
    for (i, &k) in actions.iter().enumerate() {
        data[i * a + k] = 1.0;
    }
    Tensor::from_data(
        TensorData::new(data, [actions.len(), a]),
        &Default::default(),
    )
}

#[test]
fn toy_policy_converges_to_the_best_action() {
    let (a, prompts, group, best) = (5, 4, 8, 3);
    let device = Default::default();
    let mut policy = Categorical::<AD> {
        logits: Param::from_tensor(Tensor::zeros([a], &device)),
    };
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .init::<AD, Categorical<AD>>();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cfg = AdvantageConfig {
        group_size: group,
        scale: Scale::Group,
        eps: 1e-4,
        multi: MultiObjective::SumThenNormalize,
    };
    let loss_cfg = LossConfig {
        aggregation: Aggregation::SeqMeanTokenMean,
        max_completion_length: 1,
        ..LossConfig::default()
    };
    for step in 0..150 {
        let logp_all = log_softmax(policy.logits.val().reshape([1, a]), 1);
        let probs: Vec<f32> = to_vec(&logp_all).iter().map(|l| l.exp()).collect();
        let actions: Vec<usize> = (0..prompts * group)
            .map(|_| sample(&probs, &mut rng))
            .collect();
        // Reward: 1 for the best action, 0.3 for its neighbour, 0 otherwise.
        let rewards: Vec<f32> = actions
            .iter()
            .map(|&k| {
                if k == best {
                    1.0
                } else if k == best - 1 {
                    0.3
                } else {
                    0.0
                }
            })
            .collect();
        let adv = advantage::compute(&[rewards], &["reward"], &[1.0], &cfg, step)
            .unwrap_or_else(|e| panic!("{e}"));
        let n = actions.len();
        let logp = (logp_all.expand([n, a]) * one_hot(&actions, a)).sum_dim(1); // [N, 1]
        let inputs = LossInputs {
            logp,
            old_logp: None,
            ref_logp: None,
            mask: Tensor::ones([n, 1], &device),
            advantages: Tensor::from_data(TensorData::new(adv.values.clone(), [n]), &device),
            entropy: None,
            normaliser: None,
        };
        let out = policy_loss::compute(&inputs, &loss_cfg, step).unwrap_or_else(|e| panic!("{e}"));
        let grads = GradientsParams::from_grads::<AD, _>(out.loss.backward(), &policy);
        policy = optim.step(0.05, policy, grads);
    }
    let final_probs: Vec<f32> = to_vec(&log_softmax(policy.logits.val().reshape([1, a]), 1))
        .iter()
        .map(|l| l.exp())
        .collect();
    assert!(
        final_probs[best] > 0.9,
        "best action probability {final_probs:?}"
    );
}

fn batch(n: usize, t: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng(seed);
    let logp: Vec<f32> = (0..n * t).map(|_| -0.1 - rng.next()).collect();
    let old: Vec<f32> = logp.iter().map(|l| l + 0.2 * (rng.next() - 0.5)).collect();
    let mask: Vec<f32> = (0..n * t)
        .map(|i| if i % t < 1 + (i / t) % t { 1.0 } else { 0.0 })
        .collect();
    let adv: Vec<f32> = (0..n).map(|_| rng.next() - 0.5).collect();
    (logp, old, mask, adv)
}

fn grad_of(
    logp: &[f32],
    old: &[f32],
    mask: &[f32],
    adv: &[f32],
    rows: std::ops::Range<usize>,
    t: usize,
    normaliser: f32,
) -> Vec<f32> {
    let n = rows.len();
    let slice = |v: &[f32]| v[rows.start * t..rows.end * t].to_vec();
    let device = Default::default();
    let lp =
        Tensor::<AD, 2>::from_data(TensorData::new(slice(logp), [n, t]), &device).require_grad();
    let inputs = LossInputs {
        logp: lp.clone(),
        old_logp: Some(Tensor::from_data(
            TensorData::new(slice(old), [n, t]),
            &device,
        )),
        ref_logp: None,
        mask: Tensor::from_data(TensorData::new(slice(mask), [n, t]), &device),
        advantages: Tensor::from_data(TensorData::new(adv[rows.clone()].to_vec(), [n]), &device),
        entropy: None,
        normaliser: Some(normaliser),
    };
    let cfg = LossConfig {
        aggregation: Aggregation::TokenMean,
        ..LossConfig::default()
    };
    let out = policy_loss::compute(&inputs, &cfg, 0).unwrap_or_else(|e| panic!("{e}"));
    let grads = out.loss.backward();
    to_vec(&lp.grad(&grads).unwrap_or_else(|| panic!("no grad")))
}

#[test]
fn micro_batches_with_a_global_normaliser_equal_one_batch() {
    let (n, t) = (8, 6);
    let (logp, old, mask, adv) = batch(n, t, 42);
    let total: f32 = mask.iter().sum();
    let whole = grad_of(&logp, &old, &mask, &adv, 0..n, t, total);
    let mut parts = grad_of(&logp, &old, &mask, &adv, 0..3, t, total);
    parts.extend(grad_of(&logp, &old, &mask, &adv, 3..n, t, total));
    for (a, b) in whole.iter().zip(&parts) {
        assert!((a - b).abs() < 1e-7, "{a} vs {b}");
    }
}

#[test]
fn non_finite_and_misshapen_inputs_are_errors() {
    let cfg = AdvantageConfig {
        group_size: 2,
        scale: Scale::Group,
        eps: 1e-4,
        multi: MultiObjective::SumThenNormalize,
    };
    let err = advantage::compute(&[vec![0.0, f32::INFINITY]], &["safety"], &[1.0], &cfg, 17).err();
    match err {
        Some(GrpoError::NonFinite {
            step: 17,
            ref what,
            index: 1,
            ..
        }) if what.contains("`safety`") => {}
        other => panic!("{other:?}"),
    }
    let msg = advantage::compute(
        &[vec![f32::NAN, 1.0], vec![f32::NAN, 0.0]],
        &["a", "b"],
        &[1.0, 1.0],
        &cfg,
        3,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(msg.contains("step 3") && msg.contains("E0500"), "{msg}");
    assert!(matches!(
        advantage::compute(&[vec![0.0, 1.0, 2.0]], &["a"], &[1.0], &cfg, 0),
        Err(GrpoError::Shape { .. })
    ));

    let device = Default::default();
    let nan_logp =
        Tensor::<AD, 2>::from_data(TensorData::new(vec![-0.5, f32::NAN], [1, 2]), &device);
    let inputs = LossInputs {
        logp: nan_logp,
        old_logp: None,
        ref_logp: None,
        mask: Tensor::ones([1, 2], &device),
        advantages: Tensor::ones([1], &device),
        entropy: None,
        normaliser: None,
    };
    match policy_loss::compute(&inputs, &LossConfig::default(), 9) {
        Err(GrpoError::NonFinite { step: 9, what, .. }) => assert_eq!(what, "policy log-probs"),
        other => panic!("{other:?}"),
    }
    let inputs = LossInputs {
        logp: Tensor::<AD, 2>::zeros([2, 3], &device),
        old_logp: None,
        ref_logp: None,
        mask: Tensor::ones([2, 4], &device),
        advantages: Tensor::ones([2], &device),
        entropy: None,
        normaliser: None,
    };
    match policy_loss::compute(&inputs, &LossConfig::default(), 0) {
        Err(GrpoError::Shape {
            what,
            expected,
            found,
        }) => {
            assert_eq!(
                (what.as_str(), expected, found),
                ("completion mask", vec![2, 3], vec![2, 4])
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dynamic_sampling_fills_a_step_or_stops_at_the_cap() {
    let mut s = Sampler::new("safety", 2, 3, Keep::Varies);
    assert_eq!(
        s.offer(&[1.0, 1.0, 0.0, 1.0], 2).unwrap_or_default(),
        vec![false, true]
    );
    assert!(!s.is_full());
    assert_eq!(
        s.offer(&[0.0, 1.0, 1.0, 0.0], 2).unwrap_or_default(),
        vec![true, false]
    );
    assert!(s.is_full());

    let mut s = Sampler::new("safety", 1, 2, Keep::Varies);
    assert!(s.offer(&[1.0, 1.0], 2).is_ok());
    assert!(s.offer(&[0.0, 0.0], 2).is_ok());
    let err = s
        .offer(&[1.0, 1.0], 2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("E0502") && err.contains("after 3 batches") && err.contains("`safety`"),
        "{err}"
    );
}

#[test]
fn global_norm_clipping_scales_all_gradients_together() {
    let device = Default::default();
    let policy = Categorical::<AD> {
        logits: Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.0f32, 0.0, 0.0], [3]),
            &device,
        )),
    };
    // loss = 3·x0 + 4·x1: gradient (3, 4, 0), norm 5.
    let weights = Tensor::<AD, 1>::from_data(TensorData::new(vec![3.0f32, 4.0, 0.0], [3]), &device);
    let loss = (policy.logits.val() * weights).sum();
    let mut grads = GradientsParams::from_grads::<AD, _>(loss.backward(), &policy);
    let norm = clip::clip_global_norm::<AD, _>(&policy, &mut grads, 1.0);
    assert!((norm - 5.0).abs() < 1e-5);
    assert!((clip::global_norm::<AD, _>(&policy, &grads) - 1.0).abs() < 1e-5);
    let g = grads
        .get::<<AD as burn::tensor::backend::AutodiffBackend>::InnerBackend, 1>(policy.logits.id)
        .unwrap_or_else(|| panic!("no grad"));
    let v = to_vec(&g);
    assert!(
        (v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5,
        "{v:?}"
    );
}

#[test]
fn one_completion_groups_follow_verl_and_kl_can_go_into_the_reward() {
    let cfg = AdvantageConfig {
        group_size: 1,
        scale: Scale::Group,
        eps: 1e-6,
        multi: MultiObjective::SumThenNormalize,
    };
    // verl: a group of one has mean 0 and std 1, so Â = r / (1 + ε).
    let adv = advantage::compute(&[vec![0.5, -1.0]], &["r"], &[1.0], &cfg, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (adv.values[0] - 0.5 / 1.000_001).abs() < 1e-6
            && (adv.values[1] + 1.0 / 1.000_001).abs() < 1e-6
    );
    assert_eq!(adv.zero_variance_groups, 0);
    // KL in the reward: r − β Σ_t m k1.
    let kl = vec![vec![0.1, 0.2, 5.0], vec![0.0, -0.1, 0.0]];
    let mask = vec![vec![1.0, 1.0, 0.0], vec![1.0, 1.0, 1.0]];
    let r = advantage::kl_in_reward(&[1.0, 0.0], &kl, &mask, 0.5).unwrap_or_default();
    assert!(
        (r[0] - 0.85).abs() < 1e-6 && (r[1] - 0.05).abs() < 1e-6,
        "{r:?}"
    );
}

#[test]
fn truncated_completions_leave_the_loss() {
    let device = Default::default();
    let mask = Tensor::<AD, 2>::ones([3, 2], &device);
    let masked = safer_runtime::grpo::policy_loss::mask_truncated(mask, &[false, true, false]);
    assert_eq!(to_vec(&masked), vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn cost_multiplier_grows_while_the_constraint_is_violated() {
    use safer_runtime::grpo::cost::{CostConfig, Lagrangian};
    let mut lag = Lagrangian::new(CostConfig {
        threshold: 0.1,
        lambda_init: 1.0,
        lambda_lr: 0.1,
        lambda_max: 5.0,
        window: 8,
        delay: 2,
    });
    lag.observe(&[0.9, 0.9]);
    assert_eq!(lag.update(0), 1.0, "no update during the delay");
    let mut last = 1.0;
    for step in 2..20 {
        lag.observe(&[0.9, 0.8]);
        let l = lag.update(step);
        assert!(l >= last && l <= 5.0 + 1e-9);
        last = l;
    }
    assert!(
        (last - 5.0).abs() < 1e-9,
        "clamped at lambda_max, got {last}"
    );
    let combined = lag.combine(&[1.0], &[1.0]);
    assert!((combined[0] - (1.0 - 5.0) / 6.0).abs() < 1e-6);
}

#[test]
fn gradient_accumulation_over_micro_batches_matches_one_batch() {
    use burn::optim::GradientsAccumulator;
    let device = Default::default();
    let a = 4;
    let make = || Categorical::<AD> {
        logits: Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.1f32, -0.2, 0.3, 0.0], [a]),
            &device,
        )),
    };
    let actions = [0usize, 1, 2, 3, 2, 2];
    let adv = [0.5f32, -0.5, 1.0, -1.0, 0.2, -0.2];
    let loss_of = |policy: &Categorical<AD>, rows: std::ops::Range<usize>, normaliser: f32| {
        let n = rows.len();
        let logp_all = log_softmax(policy.logits.val().reshape([1, a]), 1);
        let logp = (logp_all.expand([n, a]) * one_hot(&actions[rows.clone()], a)).sum_dim(1);
        let inputs = LossInputs {
            logp,
            old_logp: None,
            ref_logp: None,
            mask: Tensor::ones([n, 1], &device),
            advantages: Tensor::from_data(TensorData::new(adv[rows].to_vec(), [n]), &device),
            entropy: None,
            normaliser: Some(normaliser),
        };
        let cfg = LossConfig {
            aggregation: Aggregation::TokenMean,
            ..LossConfig::default()
        };
        policy_loss::compute(&inputs, &cfg, 0)
            .unwrap_or_else(|e| panic!("{e}"))
            .loss
    };
    let whole = make();
    let full = GradientsParams::from_grads::<AD, _>(loss_of(&whole, 0..6, 6.0).backward(), &whole);
    let split = make();
    let mut acc = GradientsAccumulator::<Categorical<AD>>::new();
    for rows in [0..2, 2..6] {
        let g = GradientsParams::from_grads::<AD, _>(loss_of(&split, rows, 6.0).backward(), &split);
        acc.accumulate::<AD>(&split, g);
    }
    let summed = acc.grads();
    type Inner = <AD as burn::tensor::backend::AutodiffBackend>::InnerBackend;
    let g1 = to_vec(
        &full
            .get::<Inner, 1>(whole.logits.id)
            .unwrap_or_else(|| panic!("no grad")),
    );
    let g2 = to_vec(
        &summed
            .get::<Inner, 1>(split.logits.id)
            .unwrap_or_else(|| panic!("no grad")),
    );
    for (x, y) in g1.iter().zip(&g2) {
        assert!((x - y).abs() < 1e-6, "{g1:?} vs {g2:?}");
    }
}

#[test]
fn step_metrics_are_one_json_line() {
    use safer_runtime::grpo::metrics::StepMetrics;
    use safer_runtime::grpo::policy_loss::LossStats;
    let adv = advantage::compute(
        &[vec![1.0, 0.0, 1.0, 1.0]],
        &["safety"],
        &[1.0],
        &AdvantageConfig {
            group_size: 2,
            scale: Scale::Group,
            eps: 1e-4,
            multi: MultiObjective::SumThenNormalize,
        },
        4,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stats = LossStats {
        kl_mean: Some(0.01),
        ..LossStats::default()
    };
    let m = StepMetrics::new(4, 0.5, &stats, &adv, Some(1.5), Some(0.8));
    assert_eq!(m.zero_variance_fraction, 0.5);
    let line = m.to_json_line();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert_eq!(v["step"], 4);
    assert_eq!(v["zero_variance_fraction"], 0.5);
    assert!(v["lambda"].as_f64().is_some_and(|l| (l - 1.5).abs() < 1e-6));
    assert!(!line.contains('\n'));
}
