//! Reaching the CPU backend's own tensors from code generic over the
//! backend, for the CPU-only fast paths ([`super::few_rows`],
//! [`super::kv_cache`], [`super::cpu_forward`], the decoding shards of
//! `generate`, [`super::layers::decoding_layout`], the fused AdamW of
//! `crate::adamw`).
//!
//! Each function answers `None` on any other backend (autodiff, wgpu,
//! cuda), where callers take burn's generic operations.

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

use crate::CpuBackend;

/// Whether `B` is the CPU backend (burn-flex, without autodiff).
pub fn is_cpu<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<CpuBackend>()
}

/// Whether `B` is the CPU backend under autodiff ([`crate::CpuAutodiff`]).
pub fn is_cpu_autodiff<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<crate::CpuAutodiff>()
}

/// `value` as `C`, its CPU-backend type (`TextDecoder<CpuBackend>` for a
/// `TextDecoder<B>`, `KvCache<CpuBackend>` for a `KvCache<B>`), if `B` is
/// the CPU backend.
pub fn downcast_ref<T: Any, C: Any>(value: &T) -> Option<&C> {
    (value as &dyn Any).downcast_ref()
}

/// `value` as its CPU-backend type `C`, mutably; see [`downcast_ref`].
pub fn downcast_mut<T: Any, C: Any>(value: &mut T) -> Option<&mut C> {
    (value as &mut dyn Any).downcast_mut()
}

/// `t` as a CPU-backend tensor, if `B` is the CPU backend.
pub fn as_cpu<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<&Tensor<CpuBackend, D>> {
    downcast_ref(t)
}

/// `t` as a mutable CPU-backend tensor, if `B` is the CPU backend.
pub fn as_cpu_mut<B: Backend, const D: usize>(
    t: &mut Tensor<B, D>,
) -> Option<&mut Tensor<CpuBackend, D>> {
    downcast_mut(t)
}

/// A CPU-backend tensor as a `Tensor<B, D>`, if `B` is the CPU backend.
pub fn from_cpu<B: Backend, const D: usize>(t: Tensor<CpuBackend, D>) -> Option<Tensor<B, D>> {
    let mut slot = Some(t);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<Tensor<B, D>>>()
        .and_then(Option::take)
}

/// The `f32` burn-flex tensor behind `t` (a shared handle, no copy), if
/// `B` is the CPU backend and `t` holds `f32`.
pub fn flex_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
    match as_cpu(t)?.clone().into_primitive() {
        TensorPrimitive::Float(tensor) if tensor.dtype() == DType::F32 => Some(tensor),
        _ => None,
    }
}

/// Whether `t`'s values lie in logical order from the start of its buffer
/// to its end (so that its storage is its values, and one tensor's and
/// another's line up element by element).
pub fn fills_buffer(t: &FlexTensor) -> bool {
    let n = t.layout().num_elements();
    t.layout().contiguous_offsets() == Some((0, n)) && t.bytes().len() == n * t.dtype().size()
}
