//! Building blocks shared by the architectures: linear layers, RMSNorm,
//! embeddings and the SwiGLU MLP, created either randomly or from Hugging Face
//! weights, and exported back under the same names.
//!
//! Hugging Face stores a linear weight as `[out, in]`; burn's [`Linear`] keeps
//! `[in, out]`, so loading and exporting transpose.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::error::ModelError;
use super::few_rows;
use super::on_cpu;
use super::weights::{WeightReader, WeightWriter};

/// Applies `linear` to `x`: `[batch, seq, d_in]` → `[batch, seq, d_out]` as
/// one `[batch·seq, d_in] × [d_in, d_out]` product (burn's 3-D linear runs a
/// batched product that rereads the weight for every row); a decode step's
/// few rows take [`few_rows::product`].
pub fn project<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, seq, d_in] = x.dims();
    let x = x.reshape([batch * seq, d_in]);
    let y = match few_rows::product(&x, &linear.weight.val()) {
        Some(y) => match &linear.bias {
            Some(bias) => y + bias.val().unsqueeze(),
            None => y,
        },
        None => linear.forward(x),
    };
    let d_out = y.dims()[1];
    y.reshape([batch, seq, d_out])
}

/// A linear layer `d_in → d_out` from `{prefix}.weight` (and `{prefix}.bias`).
pub fn load_linear<B: Backend>(
    weights: &WeightReader,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Result<Linear<B>, ModelError> {
    // Kept in the stored `[out, in]` layout and viewed as `[in, out]`: a
    // decode step multiplies a few rows by every weight, and reading each
    // output's weights contiguously is what keeps that product fed from
    // memory (1.7x faster than a contiguous `[in, out]` copy when the
    // weights do not fit in cache; runtime/examples/decode_profile.rs).
    let stored = weights.values(&format!("{prefix}.weight"), &[d_out, d_in])?;
    let weight =
        Tensor::<B, 2>::from_data(TensorData::new(stored, [d_out, d_in]), device).transpose();
    let bias = if bias {
        Some(Param::from_tensor(weights.tensor(
            &format!("{prefix}.bias"),
            [d_out],
            device,
        )?))
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias,
    })
}

/// The same layer with its weight contiguous `[in, out]`, the layout a
/// training update leaves: the one gemm multiplies many rows by without
/// repacking the weight first (a reference model's scoring passes,
/// through [`few_rows::StoredWeight::of_either`]). One copy of a weight in
/// the decoding layout on the CPU; any other weight is left as it is.
pub fn scoring_layout<B: Backend>(mut linear: Linear<B>) -> Linear<B> {
    linear.weight = linear.weight.map(|w| {
        let [d_in, d_out] = w.dims();
        if few_rows::StoredWeight::of(&w).is_none() {
            return w;
        }
        // The decoding layout views a stored `[out, in]` matrix: its
        // transpose is that matrix, contiguous.
        let stored = w.clone().transpose();
        let relaid = on_cpu::flex_f32(&stored).and_then(|f| {
            let values = f.as_slice::<f32>().filter(|_| on_cpu::fills_buffer(&f))?;
            let mut rows = vec![0.0f32; d_in * d_out];
            transpose::transpose(values, &mut rows, d_in, d_out);
            Some(rows)
        });
        match relaid {
            Some(rows) => {
                Tensor::<B, 2>::from_data(TensorData::new(rows, [d_in, d_out]), &w.device())
            }
            None => w,
        }
    });
    linear
}

/// The same layer with its weight stored `[out, in]` (viewed as `[in, out]`),
/// the layout [`load_linear`] gives and decoding wants. Training's updates
/// write weights back contiguous `[in, out]`; this restores the layout
/// with one copy of the weight (on the CPU a cache-blocked transposition,
/// and none for a weight [`few_rows::StoredWeight`] already reads).
pub fn decoding_layout<B: Backend>(mut linear: Linear<B>) -> Linear<B> {
    linear.weight = linear.weight.map(|w| {
        let [d_in, d_out] = w.dims();
        if few_rows::StoredWeight::of(&w).is_some() {
            return w;
        }
        let transposed = on_cpu::flex_f32(&w).and_then(|f| {
            let values = f.as_slice::<f32>().filter(|_| on_cpu::fills_buffer(&f))?;
            let mut stored = vec![0.0f32; d_in * d_out];
            transpose::transpose(values, &mut stored, d_out, d_in);
            Some(stored)
        });
        match transposed {
            Some(stored) => {
                let device = w.device();
                Tensor::<B, 2>::from_data(TensorData::new(stored, [d_out, d_in]), &device)
                    .transpose()
            }
            None => w
                .transpose()
                .reshape([d_out * d_in])
                .reshape([d_out, d_in])
                .transpose(),
        }
    });
    linear
}

/// A randomly initialised linear layer (burn's default Kaiming-uniform init).
pub fn init_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

/// Exports a linear layer in the Hugging Face layout.
pub fn export_linear<B: Backend>(out: &mut WeightWriter, prefix: &str, linear: &Linear<B>) {
    out.add(format!("{prefix}.weight"), linear.weight.val().transpose());
    if let Some(bias) = &linear.bias {
        out.add(format!("{prefix}.bias"), bias.val());
    }
}

/// An RMSNorm of width `d` from `{prefix}.weight`.
pub fn load_rms_norm<B: Backend>(
    weights: &WeightReader,
    prefix: &str,
    d: usize,
    eps: f64,
    device: &B::Device,
) -> Result<RmsNorm<B>, ModelError> {
    let gamma = weights.tensor(&format!("{prefix}.weight"), [d], device)?;
    Ok(RmsNorm {
        gamma: Param::from_tensor(gamma),
        epsilon: eps,
    })
}

/// A fresh RMSNorm (gain 1).
pub fn init_rms_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> RmsNorm<B> {
    RmsNormConfig::new(d).with_epsilon(eps).init(device)
}

/// Exports an RMSNorm's gain as `{prefix}.weight`.
pub fn export_rms_norm<B: Backend>(out: &mut WeightWriter, prefix: &str, norm: &RmsNorm<B>) {
    out.add(format!("{prefix}.weight"), norm.gamma.val());
}

/// An embedding table `[vocab, d]` from `{name}`.
pub fn load_embedding<B: Backend>(
    weights: &WeightReader,
    name: &str,
    vocab: usize,
    d: usize,
    device: &B::Device,
) -> Result<Embedding<B>, ModelError> {
    Ok(Embedding {
        weight: Param::from_tensor(weights.tensor(name, [vocab, d], device)?),
    })
}

/// A random embedding table with standard deviation `std`.
pub fn init_embedding<B: Backend>(
    vocab: usize,
    d: usize,
    std: f64,
    device: &B::Device,
) -> Embedding<B> {
    EmbeddingConfig::new(vocab, d)
        .with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std })
        .init(device)
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`, no biases.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection `d → hidden`.
    pub gate_proj: Linear<B>,
    /// Up projection `d → hidden`.
    pub up_proj: Linear<B>,
    /// Down projection `hidden → d`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Every projection through `relayout` ([`decoding_layout`],
    /// [`scoring_layout`]).
    pub fn relaid(self, relayout: &impl Fn(Linear<B>) -> Linear<B>) -> Self {
        Self {
            gate_proj: relayout(self.gate_proj),
            up_proj: relayout(self.up_proj),
            down_proj: relayout(self.down_proj),
        }
    }

    /// A random MLP `d → hidden → d`.
    pub fn init(d: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            gate_proj: init_linear(d, hidden, false, device),
            up_proj: init_linear(d, hidden, false, device),
            down_proj: init_linear(hidden, d, false, device),
        }
    }

    /// Loads `{prefix}.gate_proj`, `.up_proj`, `.down_proj`.
    pub fn load(
        weights: &WeightReader,
        prefix: &str,
        d: usize,
        hidden: usize,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            gate_proj: load_linear(
                weights,
                &format!("{prefix}.gate_proj"),
                d,
                hidden,
                false,
                device,
            )?,
            up_proj: load_linear(
                weights,
                &format!("{prefix}.up_proj"),
                d,
                hidden,
                false,
                device,
            )?,
            down_proj: load_linear(
                weights,
                &format!("{prefix}.down_proj"),
                hidden,
                d,
                false,
                device,
            )?,
        })
    }

    /// Exports under the names [`Mlp::load`] reads.
    pub fn export(&self, out: &mut WeightWriter, prefix: &str) {
        export_linear(out, &format!("{prefix}.gate_proj"), &self.gate_proj);
        export_linear(out, &format!("{prefix}.up_proj"), &self.up_proj);
        export_linear(out, &format!("{prefix}.down_proj"), &self.down_proj);
    }

    /// `x`: `[batch, seq, d]` → `[batch, seq, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(project(&self.gate_proj, x.clone()));
        project(&self.down_proj, gate * project(&self.up_proj, x))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use burn::module::Param;
    use burn::nn::Linear;
    use burn::tensor::{Tensor, TensorData};

    use super::{decoding_layout, scoring_layout};
    use crate::model::on_cpu;
    use crate::CpuBackend;

    fn linear(weight: Tensor<CpuBackend, 2>) -> Linear<CpuBackend> {
        Linear {
            weight: Param::from_tensor(weight),
            bias: None,
        }
    }

    fn stored_contiguously(weight: &Tensor<CpuBackend, 2>) -> bool {
        on_cpu::flex_f32(&weight.clone().transpose()).is_some_and(|f| on_cpu::fills_buffer(&f))
    }

    #[test]
    fn a_trained_weight_is_relaid_with_its_values_and_a_relaid_one_is_kept() {
        let values: Vec<f32> = (0..35).map(|i| i as f32).collect();
        // `[in 5, out 7]`, contiguous, as an update leaves it.
        let trained = Tensor::<CpuBackend, 2>::from_data(
            TensorData::new(values, [5, 7]),
            &Default::default(),
        );
        let want = trained.to_data();
        let relaid = decoding_layout(linear(trained)).weight.val();
        assert_eq!(relaid.to_data(), want);
        assert!(stored_contiguously(&relaid));
        let buffer = on_cpu::flex_f32(&relaid).unwrap().data_arc();
        let again = decoding_layout(linear(relaid)).weight.val();
        assert!(std::sync::Arc::ptr_eq(
            &on_cpu::flex_f32(&again).unwrap().data_arc(),
            &buffer
        ));
        assert_eq!(again.to_data(), want);
    }

    /// The scoring layout is the contiguous `[in, out]` an update leaves:
    /// a decoding-layout weight is copied into it with its values, and a
    /// weight already in it is kept.
    #[test]
    fn a_decoding_weight_is_relaid_for_scoring_with_its_values() {
        let values: Vec<f32> = (0..35).map(|i| i as f32).collect();
        let trained = Tensor::<CpuBackend, 2>::from_data(
            TensorData::new(values, [5, 7]),
            &Default::default(),
        );
        let want = trained.to_data();
        let decoding = decoding_layout(linear(trained)).weight.val();
        let scoring = scoring_layout(linear(decoding)).weight.val();
        assert_eq!(scoring.to_data(), want);
        assert!(!stored_contiguously(&scoring));
        let flex = on_cpu::flex_f32(&scoring).unwrap();
        assert!(on_cpu::fills_buffer(&flex), "contiguous [in, out]");
        let again = scoring_layout(linear(scoring)).weight.val();
        assert!(std::sync::Arc::ptr_eq(
            &on_cpu::flex_f32(&again).unwrap().data_arc(),
            &flex.data_arc()
        ));
    }
}
