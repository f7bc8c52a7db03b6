//! The decoder's linear layers' weights, `[d_in, d_out]` each, in the order
//! a forward runs them (per layer q, k, v, o, gate, up, down), the output
//! head last (the untied head, or the embeddings transposed): the products
//! of the floor examples.

use burn::nn::Linear;
use burn::tensor::Tensor;
use safer_runtime::model::Model;
use safer_runtime::CpuBackend as B;

/// Every linear weight of `model`'s decoder and its output head, in order.
pub fn linear_weights(model: &Model<B>) -> Vec<Tensor<B, 2>> {
    let weight = |l: &Linear<B>| l.weight.val();
    let mut all = Vec::new();
    for layer in &model.text.layers {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        for l in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj] {
            all.push(weight(l));
        }
        for l in [&m.gate_proj, &m.up_proj, &m.down_proj] {
            all.push(weight(l));
        }
    }
    all.push(match &model.text.lm_head {
        Some(head) => weight(head),
        None => model.text.embed_tokens.weight.val().transpose(),
    });
    all
}
