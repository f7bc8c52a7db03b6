//! The GRPO engine against `fixtures/grpo/grpo.json` (PyTorch transcriptions
//! of TRL, verl and Safe RLHF; see `make_fixtures.py`): advantages, KL values
//! and gradients, every loss variant with its gradient with respect to the
//! log-probs, clip fractions, overlong penalties, dynamic-sampling masks,
//! the Lagrange multiplier and the learning-rate schedules.
//!
//! Tolerance: |a − b| ≤ 1e-6 or ≤ 1e-5 relative (the engine runs in f32,
//! the fixtures in f64).

#![allow(clippy::panic)]

use burn::tensor::{Tensor, TensorData};
use safer_runtime::grpo::advantage::{self, AdvantageConfig, MultiObjective, Scale};
use safer_runtime::grpo::aggregate::Aggregation;
use safer_runtime::grpo::kl::{self, Clamp, Estimator};
use safer_runtime::grpo::policy_loss::{self, Importance, KlInLoss, LossConfig, LossInputs};
use safer_runtime::grpo::{cost, dynamic_sampling, overlong, schedule, to_vec};
use safer_runtime::CpuAutodiff as B;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/grpo/grpo.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN) as f32],
        Value::Null => vec![f32::NAN],
        _ => panic!("not numbers: {v}"),
    }
}

fn close(a: f32, b: f32) -> bool {
    let diff = (a - b).abs();
    diff <= 1e-6 || diff <= 1e-5 * b.abs()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w), "{what}[{i}]: got {g}, want {w}");
    }
}

fn tensor2(f: &Value, key: &str) -> Tensor<B, 2> {
    let n = f["n"].as_u64().unwrap_or(0) as usize;
    let t = f["t"].as_u64().unwrap_or(0) as usize;
    Tensor::from_data(
        TensorData::new(floats(&f[key]), [n, t]),
        &Default::default(),
    )
}

fn estimator(name: &str) -> Estimator {
    match name {
        "k1" => Estimator::K1,
        "k2" => Estimator::K2,
        "k3" => Estimator::K3,
        _ => Estimator::K3Corrected,
    }
}

fn clamp(name: &str) -> Clamp {
    match name {
        "verl" => Clamp::Verl,
        "openrlhf" => Clamp::OpenRlhf,
        _ => Clamp::None,
    }
}

#[test]
fn advantages_match_trl() {
    let f = fixture();
    let crit = &f["criteria"];
    let rewards: Vec<Vec<f32>> = crit["values"]
        .as_array()
        .into_iter()
        .flatten()
        .map(floats)
        .collect();
    let weights = floats(&crit["weights"]);
    for case in f["advantage_cases"].as_array().into_iter().flatten() {
        let cfg = AdvantageConfig {
            group_size: f["group_size"].as_u64().unwrap_or(0) as usize,
            scale: match case["scale"].as_str() {
                Some("group") => Scale::Group,
                Some("none") => Scale::None,
                _ => Scale::Batch,
            },
            eps: case["eps"].as_f64().unwrap_or(0.0),
            multi: if case["multi"] == "normalize_then_sum" {
                MultiObjective::NormalizeThenSum
            } else {
                MultiObjective::SumThenNormalize
            },
        };
        let got = advantage::compute(&rewards, &["a", "b"], &weights, &cfg, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let what = format!("advantages {case:?}");
        assert_close(&what, &got.values, &floats(&case["advantages"]));
        assert_close("combined rewards", &got.rewards, &floats(&case["rewards"]));
        assert_eq!(
            got.zero_variance_groups as u64,
            case["zero_variance_groups"].as_u64().unwrap_or(99)
        );
    }
}

#[test]
fn kl_values_and_gradients_match() {
    let f = fixture();
    let mask = tensor2(&f, "mask");
    for case in f["kl_cases"].as_array().into_iter().flatten() {
        let logp = tensor2(&f, "logp").require_grad();
        let ratio = (logp.clone() - tensor2(&f, "old_logp")).exp();
        let est = estimator(case["estimator"].as_str().unwrap_or(""));
        let v = kl::per_token(
            est,
            logp.clone(),
            tensor2(&f, "ref_logp"),
            Some(ratio),
            clamp(case["clamp"].as_str().unwrap_or("")),
        );
        let what = format!("{} {}", case["estimator"], case["clamp"]);
        assert_close(&format!("kl {what}"), &to_vec(&v), &floats(&case["values"]));
        let objective = (v * mask.clone()).sum() / mask.clone().sum();
        let grads = objective.backward();
        let g = logp.grad(&grads).unwrap_or_else(|| panic!("no gradient"));
        assert_close(
            &format!("kl grad {what}"),
            &to_vec(&g),
            &floats(&case["grad"]),
        );
    }
}

#[test]
fn every_loss_variant_matches_with_its_gradient() {
    let f = fixture();
    let n = f["n"].as_u64().unwrap_or(0) as usize;
    let adv = floats(&f["advantages_for_loss"]);
    let cases = f["loss_cases"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() >= 10);
    for case in cases {
        let c = &case["config"];
        let kl = c.get("kl").map(|k| KlInLoss {
            estimator: estimator(k["estimator"].as_str().unwrap_or("")),
            beta: k["beta"].as_f64().unwrap_or(0.0) as f32,
            clamp: clamp(k["clamp"].as_str().unwrap_or("")),
        });
        let cfg = LossConfig {
            clip_low: c["clip_low"].as_f64().unwrap_or(0.0) as f32,
            clip_high: c["clip_high"].as_f64().unwrap_or(0.0) as f32,
            dual_clip: c.get("dual_clip").and_then(Value::as_f64).map(|v| v as f32),
            importance: if c["importance"] == "sequence" {
                Importance::Sequence
            } else {
                Importance::Token
            },
            aggregation: match c["aggregation"].as_str() {
                Some("seq_mean_token_mean") => Aggregation::SeqMeanTokenMean,
                Some("token_mean") => Aggregation::TokenMean,
                Some("token_mean_local") => Aggregation::TokenMeanLocal,
                _ => Aggregation::SeqSumConst,
            },
            kl,
            entropy_coef: c.get("entropy_coef").and_then(Value::as_f64).unwrap_or(0.0) as f32,
            max_completion_length: c["max_completion_length"].as_u64().unwrap_or(1) as usize,
            log_ratio_clamp: c
                .get("log_ratio_clamp")
                .and_then(Value::as_f64)
                .map(|v| v as f32),
        };
        let logp = tensor2(&f, "logp").require_grad();
        let inputs = LossInputs {
            logp: logp.clone(),
            old_logp: Some(tensor2(&f, "old_logp")),
            ref_logp: Some(tensor2(&f, "ref_logp")),
            mask: tensor2(&f, "mask"),
            advantages: Tensor::from_data(TensorData::new(adv.clone(), [n]), &Default::default()),
            entropy: Some(tensor2(&f, "entropy")),
            normaliser: c["normaliser"].as_f64().map(|v| v as f32),
        };
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let out = policy_loss::compute(&inputs, &cfg, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(
            &format!("{name} loss"),
            &to_vec(&out.loss),
            &[case["loss"].as_f64().unwrap_or(0.0) as f32],
        );
        let grads = out.loss.backward();
        let g = logp.grad(&grads).unwrap_or_else(|| panic!("no gradient"));
        assert_close(&format!("{name} grad"), &to_vec(&g), &floats(&case["grad"]));
        for (key, got) in [
            ("clip_low_fraction", out.stats.clip_low_fraction),
            ("clip_high_fraction", out.stats.clip_high_fraction),
            ("dual_clip_fraction", out.stats.dual_clip_fraction),
            ("ratio_mean", out.stats.ratio_mean),
        ] {
            assert_close(
                &format!("{name} {key}"),
                &[got],
                &[case[key].as_f64().unwrap_or(0.0) as f32],
            );
        }
    }
}

#[test]
fn overlong_sampling_cost_and_schedules_match() {
    let f = fixture();
    for c in f["overlong_cases"].as_array().into_iter().flatten() {
        let got = overlong::penalty(
            c["len"].as_u64().unwrap_or(0) as usize,
            c["max"].as_u64().unwrap_or(0) as usize,
            c["cache"].as_u64().unwrap_or(0) as usize,
            c["factor"].as_f64().unwrap_or(0.0) as f32,
        );
        assert_close(
            &format!("overlong {c}"),
            &[got],
            &[c["penalty"].as_f64().unwrap_or(0.0) as f32],
        );
    }
    let s = &f["sampling"];
    let values = floats(&s["values"]);
    let varies = dynamic_sampling::keep_groups(&values, 3, dynamic_sampling::Keep::Varies)
        .unwrap_or_default();
    let band = dynamic_sampling::keep_groups(&values, 3, dynamic_sampling::Keep::Band(0.01, 0.99))
        .unwrap_or_default();
    let as_bools = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|b| b.as_bool().unwrap_or(false))
            .collect::<Vec<_>>()
    };
    assert_eq!(varies, as_bools(&s["varies"]));
    assert_eq!(band, as_bools(&s["band"]));

    let c = &f["cost"]["config"];
    let mut lag = cost::Lagrangian::new(cost::CostConfig {
        threshold: c["threshold"].as_f64().unwrap_or(0.0),
        lambda_init: c["init"].as_f64().unwrap_or(1.0),
        lambda_lr: c["lr"].as_f64().unwrap_or(0.0),
        lambda_max: c["max"].as_f64().unwrap_or(1.0),
        window: c["window"].as_u64().unwrap_or(1) as usize,
        delay: c["delay"].as_u64().unwrap_or(0),
    });
    let want = floats(&f["cost"]["lambdas"]);
    for (step, batch) in f["cost"]["batches"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        lag.observe(&floats(batch));
        let got = lag.update(step as u64) as f32;
        assert_close(&format!("lambda at step {step}"), &[got], &[want[step]]);
    }

    for c in f["schedule_cases"].as_array().into_iter().flatten() {
        let sched = match c["schedule"].as_str() {
            Some("constant") => schedule::Schedule::Constant,
            Some("linear") => schedule::Schedule::Linear,
            _ => schedule::Schedule::Cosine,
        };
        let got = schedule::lr(
            1e-3,
            sched,
            c["warmup"].as_u64().unwrap_or(0),
            c["total"].as_u64().unwrap_or(0),
            c["step"].as_u64().unwrap_or(0),
        );
        assert_close(
            &format!("lr {c}"),
            &[got as f32],
            &[c["lr"].as_f64().unwrap_or(0.0) as f32],
        );
    }
}
