//! Global gradient-norm clipping: one norm over every parameter's gradient
//! (burn's own `GradientClipping::Norm` clips each tensor separately).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

struct SquaredNorm<'g> {
    grads: &'g GradientsParams,
    sum: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = super::to_vec(&g.powi_scalar(2).sum());
            self.sum += f64::from(s.first().copied().unwrap_or(0.0));
        }
    }
}

struct Scale<'g> {
    grads: &'g mut GradientsParams,
    factor: f32,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of a module's gradients.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm { grads, sum: 0.0 };
    module.visit(&mut v);
    v.sum.sqrt()
}

/// Scales all gradients so that their global norm is at most `max_norm`;
/// returns the norm before clipping (a logged metric).
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_norm(module, grads);
    if norm > max_norm && norm > 0.0 {
        let mut v = Scale {
            grads,
            factor: (max_norm / norm) as f32,
        };
        module.visit(&mut v);
    }
    norm
}
