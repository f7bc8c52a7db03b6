//! AdamW for the trainers: burn's update rule and optimiser state, with
//! each parameter's update done in one pass over its values on the CPU
//! backend.
//!
//! burn's `AdamW` updates a parameter through about fifteen tensor
//! operations, each a fresh buffer and a pass over the values; on the CPU
//! backend this takes one pass that reads the gradient, updates both
//! moments where they lie and writes the weight to a new buffer (split
//! across the worker threads for large tensors). The arithmetic is burn's,
//! operation for operation in `f32` (no fused multiply-adds), so the
//! results are bit-identical to burn's `AdamW` (tested below), and the
//! state is burn's own [`AdamWState`]: checkpoints written before keep
//! loading. On every other backend, and for a tensor that is not `f32`,
//! the step is burn's.

use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer,
};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use safer_ir::plan::AdamSpec;

use crate::model::on_cpu;

/// Values per task when a tensor's update is split across the worker threads.
const CHUNK: usize = 1 << 15;

/// AdamW's settings: the moments' decay rates β₁ and β₂, ε, and the
/// decoupled weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWSettings {
    /// Decay of the gradient's running mean.
    pub beta_1: f32,
    /// Decay of the squared gradient's running mean.
    pub beta_2: f32,
    /// Added to the root of the squared gradient's mean.
    pub epsilon: f32,
    /// Decoupled weight decay (the weight shrinks by `lr · weight_decay`).
    pub weight_decay: f32,
}

impl AdamWSettings {
    /// A stage's settings: `adam` and `weight_decay` from its algorithm block.
    pub fn of(adam: &AdamSpec, weight_decay: f64) -> Self {
        Self {
            beta_1: adam.adam_beta1 as f32,
            beta_2: adam.adam_beta2 as f32,
            epsilon: adam.adam_epsilon as f32,
            weight_decay: weight_decay as f32,
        }
    }

    /// burn's `AdamW` with these settings.
    pub fn burns_adamw(&self) -> AdamW {
        AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .build()
    }
}

/// AdamW with decoupled weight decay, fused on the CPU backend.
#[derive(Clone)]
pub struct FusedAdamW {
    settings: AdamWSettings,
    /// burn's optimiser with the same settings, for other backends.
    generic: AdamW,
}

impl FusedAdamW {
    /// AdamW with `settings`.
    pub fn new(settings: AdamWSettings) -> Self {
        Self {
            settings,
            generic: settings.burns_adamw(),
        }
    }

    /// One update of `weight` by `grad`: returns the new weight, and
    /// updates the moments `m` and `v` in place (they hold the state after
    /// `time - 1` steps, anything when `time` is 1, and afterwards the state
    /// after `time` steps). All are in the same (logical) order.
    ///
    /// The weight goes to a new buffer, as it does in burn's AdamW: written
    /// in place, it left the allocator free to hand the training passes'
    /// transient memory back to the kernel after every step, and the next
    /// step took it again page by page (250,000 page faults against 53,000
    /// in 25 GRPO steps of `runtime/benches/grpo_step.safer`, 10 ms more per
    /// backward pass).
    fn update(
        &self,
        lr: LearningRate,
        time: usize,
        weight: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        grad: &[f32],
    ) -> Vec<f32> {
        let AdamWSettings {
            beta_1: b1,
            beta_2: b2,
            epsilon: eps,
            weight_decay,
        } = self.settings;
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let decay_rate = lr * f64::from(weight_decay);
        let keep = (1.0 - decay_rate) as f32;
        let lr = lr as f32;
        let t = i32::try_from(time).unwrap_or(i32::MAX);
        let (c1, c2) = (1f32 - b1.powi(t), 1f32 - b2.powi(t));
        let fresh = time == 1;
        let apply = |out: &mut [f32], w: &[f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
            let values = out.iter_mut().zip(w).zip(m).zip(v).zip(g);
            for ((((out, &w), m), v), &g) in values {
                // burn's order: `m·β₁ + g·(1−β₁)`, `v·β₂ + (g·g)·(1−β₂)` (the
                // first step starts from `g·(1−β₁)` and `(g·g)·(1−β₂)`).
                if fresh {
                    *m = g * f1;
                    *v = (g * g) * f2;
                } else {
                    *m = *m * b1 + g * f1;
                    *v = *v * b2 + (g * g) * f2;
                }
                let delta = (*m / c1) / ((*v / c2).sqrt() + eps);
                let decayed = if decay_rate == 0.0 { w } else { w * keep };
                *out = decayed - delta * lr;
            }
        };
        let mut out = vec![0.0f32; weight.len()];
        if weight.len() <= CHUNK {
            apply(&mut out, weight, m, v, grad);
        } else {
            out.par_chunks_mut(CHUNK)
                .zip(weight.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(grad.par_chunks(CHUNK))
                .for_each(|((((out, w), m), v), g)| apply(out, w, m, v, g));
        }
        out
    }

    /// The fused step on the CPU backend, from [`cpu_inputs`]; the
    /// caller's tensors must be dropped by then, so that the moments' buffers
    /// are theirs alone and are updated in place (a buffer still shared is
    /// copied first).
    fn step_cpu<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        inputs: CpuInputs,
        device: &B::Device,
    ) -> (Tensor<B, D>, Option<AdamWState<B, D>>) {
        let CpuInputs {
            param,
            grad,
            moments,
        } = inputs;
        let shape = param.shape();
        let (param, grad) = (contiguous(param), contiguous(grad));
        let (mut m, mut v, time) = match moments {
            Some((m, v, time)) => (contiguous(m), contiguous(v), time + 1),
            None => {
                let zeros = || FlexTensor::zeros(shape.clone(), DType::F32);
                (zeros(), zeros(), 1)
            }
        };
        let updated = self.update(
            lr,
            time,
            param.storage::<f32>(),
            m.storage_mut::<f32>(),
            v.storage_mut::<f32>(),
            grad.storage::<f32>(),
        );
        let tensor = |data: TensorData| Tensor::<B, D>::from_data(data, device);
        let state = AdamWState::new(AdaptiveMomentumState::new(
            time,
            tensor(m.into_data()),
            tensor(v.into_data()),
        ));
        (tensor(TensorData::new(updated, shape)), Some(state))
    }
}

/// What the fused step reads: the parameter, its gradient and its moments
/// with the steps taken, as `f32` burn-flex tensors of one shape (shared
/// handles until the caller drops its own).
struct CpuInputs {
    param: FlexTensor,
    grad: FlexTensor,
    moments: Option<(FlexTensor, FlexTensor, usize)>,
}

/// The inputs of the fused step, if `B` is the CPU backend, every tensor
/// `f32` of the parameter's shape, and the state burn's plain AdamW state
/// (no AMSGrad maximum).
fn cpu_inputs<B: Backend, const D: usize>(
    tensor: &Tensor<B, D>,
    grad: &Tensor<B, D>,
    state: Option<&AdamWState<B, D>>,
) -> Option<CpuInputs> {
    let shape = tensor.shape();
    let of = |t: &Tensor<B, D>| on_cpu::flex_f32(t).filter(|f| f.shape() == shape);
    let moments = match state {
        None => None,
        Some(s) if s.momentum.max_moment_2.is_none() => Some((
            of(&s.momentum.moment_1)?,
            of(&s.momentum.moment_2)?,
            s.momentum.time,
        )),
        Some(_) => return None,
    };
    Some(CpuInputs {
        param: of(tensor)?,
        grad: of(grad)?,
        moments,
    })
}

/// `t`'s values in logical order, exactly filling its buffer from the
/// start (no copy when they already do). burn-flex's `to_contiguous` makes
/// the same test, but answers an already contiguous tensor with a second
/// handle on its buffer, which would make the moments' buffers shared and
/// copied on write.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if on_cpu::fills_buffer(&t) {
        t
    } else {
        t.to_contiguous()
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        match cpu_inputs(&tensor, &grad, state.as_ref()) {
            Some(inputs) => {
                let device = tensor.device();
                // The inputs' buffers become theirs alone.
                drop((tensor, grad, state));
                self.step_cpu(lr, inputs, &device)
            }
            None => SimpleOptimizer::<B>::step(&self.generic, lr, tensor, grad, state),
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use burn::optim::{AdamWState, SimpleOptimizer};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use safer_ir::plan::AdamSpec;

    use super::{cpu_inputs, AdamWSettings, FusedAdamW};
    use crate::model::on_cpu;
    use crate::{CpuAutodiff, CpuBackend};

    fn random<B: Backend, const D: usize>(rng: &mut ChaCha8Rng, shape: [usize; D]) -> Tensor<B, D> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn values<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<u32> {
        let data = t.to_data().into_vec::<f32>().unwrap();
        data.iter().map(|v| v.to_bits()).collect()
    }

    type State<B> = Option<AdamWState<B, 2>>;

    /// Runs `steps` updates of a `[rows, cols]` weight with both optimisers
    /// (the weight first viewed transposed when `transposed`, as loaded
    /// weights are) and asserts equal bits of the weights and moments.
    fn compare<B: Backend>(rows: usize, cols: usize, weight_decay: f32, transposed: bool) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let settings = AdamWSettings {
            beta_1: 0.9,
            beta_2: 0.95,
            epsilon: 1e-8,
            weight_decay,
        };
        let fused = FusedAdamW::new(settings);
        let reference = settings.burns_adamw();
        let start: Tensor<B, 2> = if transposed {
            random::<B, 2>(&mut rng, [cols, rows]).transpose()
        } else {
            random(&mut rng, [rows, cols])
        };
        let (mut a, mut b) = (start.clone(), start);
        let (mut state_a, mut state_b): (State<B>, State<B>) = (None, None);
        for step in 0..4 {
            let grad = random::<B, 2>(&mut rng, [rows, cols]).mul_scalar(0.1 * f64::from(step + 1));
            let lr = 1e-2 / f64::from(step + 1);
            // On the CPU backend the fused step is the one that runs.
            let fused_runs = cpu_inputs(&a, &grad, state_a.as_ref()).is_some();
            assert_eq!(fused_runs, on_cpu::is_cpu::<B>());
            (a, state_a) = SimpleOptimizer::<B>::step(&fused, lr, a, grad.clone(), state_a);
            (b, state_b) = SimpleOptimizer::<B>::step(&reference, lr, b, grad, state_b);
            assert_eq!(values(&a), values(&b), "weights after step {step}");
            let (sa, sb) = (state_a.as_ref().unwrap(), state_b.as_ref().unwrap());
            assert_eq!(sa.momentum.time, sb.momentum.time);
            assert_eq!(values(&sa.momentum.moment_1), values(&sb.momentum.moment_1));
            assert_eq!(values(&sa.momentum.moment_2), values(&sb.momentum.moment_2));
        }
    }

    #[test]
    fn the_fused_step_gives_burns_adamw_bit_for_bit() {
        compare::<CpuBackend>(24, 40, 0.01, false);
        compare::<CpuBackend>(24, 40, 0.0, false);
        // A loaded weight, stored `[out, in]` and viewed `[in, out]`.
        compare::<CpuBackend>(33, 17, 0.1, true);
        // Large enough to be split across the worker threads.
        compare::<CpuBackend>(256, 300, 0.01, true);
        // Other backends take burn's own step.
        compare::<CpuAutodiff>(24, 40, 0.01, false);
    }

    /// A step from a state burn's `AdamW` made (as a checkpoint written
    /// before holds), from transposed weights and gradients.
    #[test]
    fn the_fused_step_continues_from_burns_state() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let settings = AdamWSettings {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
        };
        let burns = settings.burns_adamw();
        let transposed = |rng: &mut ChaCha8Rng| random::<CpuBackend, 2>(rng, [9, 14]).transpose();
        let mut weight = transposed(&mut rng);
        let mut state: State<CpuBackend> = None;
        for _ in 0..2 {
            let grad = transposed(&mut rng);
            (weight, state) =
                SimpleOptimizer::<CpuBackend>::step(&burns, 1e-2, weight, grad, state);
        }
        let grad = transposed(&mut rng);
        let fused = FusedAdamW::new(settings);
        let (a, state_a) = SimpleOptimizer::<CpuBackend>::step(
            &fused,
            1e-2,
            weight.clone(),
            grad.clone(),
            state.clone(),
        );
        let (b, state_b) = SimpleOptimizer::<CpuBackend>::step(&burns, 1e-2, weight, grad, state);
        assert_eq!(values(&a), values(&b));
        let (sa, sb) = (state_a.unwrap(), state_b.unwrap());
        assert_eq!(sa.momentum.time, 3);
        assert_eq!(values(&sa.momentum.moment_2), values(&sb.momentum.moment_2));
    }

    /// The moments of a state nothing else holds are updated in their own
    /// buffers.
    #[test]
    fn unshared_moments_are_updated_in_place() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let fused = FusedAdamW::new(AdamWSettings::of(&AdamSpec::default(), 0.0));
        let grad = random::<CpuBackend, 2>(&mut rng, [6, 4]);
        let weight = random::<CpuBackend, 2>(&mut rng, [6, 4]);
        let (weight, state) = SimpleOptimizer::<CpuBackend>::step(&fused, 1e-2, weight, grad, None);
        let buffer = |t: &Tensor<CpuBackend, 2>| {
            std::sync::Arc::as_ptr(&on_cpu::flex_f32(t).unwrap().data_arc()) as usize
        };
        let before = buffer(&state.as_ref().unwrap().momentum.moment_1);
        let grad = random::<CpuBackend, 2>(&mut rng, [6, 4]);
        let (_, state) = SimpleOptimizer::<CpuBackend>::step(&fused, 1e-2, weight, grad, state);
        assert_eq!(buffer(&state.unwrap().momentum.moment_1), before);
    }

    #[test]
    fn a_stages_settings_map_field_by_field() {
        let spec = AdamSpec {
            adam_beta1: 0.8,
            adam_beta2: 0.95,
            adam_epsilon: 1e-6,
        };
        let settings = AdamWSettings::of(&spec, 0.1);
        assert_eq!(
            settings,
            AdamWSettings {
                beta_1: 0.8,
                beta_2: 0.95,
                epsilon: 1e-6,
                weight_decay: 0.1,
            }
        );
    }

    #[test]
    fn buffers_shared_with_other_tensors_are_left_as_they_were() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let fused = FusedAdamW::new(AdamWSettings {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
        });
        let weight = random::<CpuBackend, 2>(&mut rng, [8, 5]);
        let before = values(&weight);
        // A frozen reference model holds the same buffer.
        let frozen = weight.clone();
        let grad = random::<CpuBackend, 2>(&mut rng, [8, 5]);
        let (weight, state) = SimpleOptimizer::<CpuBackend>::step(&fused, 1e-2, weight, grad, None);
        assert_eq!(values(&frozen), before);
        assert_ne!(values(&weight), before);
        // A checkpoint's record holds the moments.
        let saved = state.clone().unwrap();
        let saved_m = values(&saved.momentum.moment_1);
        let grad = random::<CpuBackend, 2>(&mut rng, [8, 5]);
        let (_, state) = SimpleOptimizer::<CpuBackend>::step(&fused, 1e-2, weight, grad, state);
        assert_eq!(values(&saved.momentum.moment_1), saved_m);
        assert_ne!(values(&state.unwrap().momentum.moment_1), saved_m);
    }
}
