//! Throughput of burn-flex's matrix product on the shapes of the benchmark
//! model (Qwen2, width 256, MLP 704): the figures behind the weight layout
//! of `model::layers::load_linear` and the speed bounds in runtime/README.md
//! (the measurements themselves: runtime/benches/HISTORY.md).
//!
//! ```sh
//! cargo run --release -p safer-runtime --example matmul_rates
//! ```
//!
//! "cold" cycles through 24 weight matrices (17 MB, more than the L2 caches
//! hold), as a decode step through the whole model does; "hot" reuses one.
//! "few rows" is `model::few_rows::matmul`, what a decode step's linear
//! layers use. The 1024-row "hot" line pays for its 2.9 MB output on every
//! call: glibc returns that memory to the kernel and faults it in again,
//! which halves the rate printed (runtime/benches/HISTORY.md, GRPO step;
//! `GLIBC_TUNABLES=glibc.malloc.trim_threshold=4294967295:glibc.malloc.mmap_threshold=4294967295`
//! turns that off).

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use safer_runtime::model::few_rows;
use safer_runtime::CpuBackend as B;

type Product = fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>;

/// Microseconds per product of `x` with each of `weights` in turn.
fn micros(x: &Tensor<B, 2>, weights: &[Tensor<B, 2>], rounds: usize, product: Product) -> f64 {
    for w in weights {
        let _ = product(x.clone(), w.clone()).into_data();
    }
    let start = Instant::now();
    for _ in 0..rounds {
        for w in weights {
            std::hint::black_box(product(x.clone(), w.clone()));
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / (rounds * weights.len()) as f64
}

fn main() {
    let device = Default::default();
    let (k, n) = (256, 704);
    let random = |dims: [usize; 2]| Tensor::<B, 2>::random(dims, Distribution::Default, &device);
    let x8 = random([8, k]);
    let in_out: Vec<_> = (0..24).map(|_| random([k, n])).collect();
    let out_in: Vec<_> = (0..24).map(|_| random([n, k]).transpose()).collect();
    let gflops = |m: usize, us: f64| 2.0 * (m * k * n) as f64 / us / 1e3;
    let burn: Product = |x, w| x.matmul(w);
    let cold_in_out = micros(&x8, &in_out, 100, burn);
    let cold_out_in = micros(&x8, &out_in, 100, burn);
    println!(
        "8x{k}x{n}, cold, weights contiguous [in, out]: {cold_in_out:.0} us ({:.1} GFLOP/s)",
        gflops(8, cold_in_out)
    );
    println!(
        "8x{k}x{n}, cold, weights [out, in] viewed:      {cold_out_in:.0} us ({:.1} GFLOP/s)",
        gflops(8, cold_out_in)
    );
    for m in [1, 4, 8, 16] {
        let x = random([m, k]);
        let plain = micros(&x, &out_in, 100, burn);
        let few = micros(&x, &out_in, 100, few_rows::matmul);
        println!(
            "{m}x{k}x{n}, cold, [out, in]: burn {plain:.0} us ({:.1} GFLOP/s), few rows {few:.0} us ({:.1} GFLOP/s)",
            gflops(m, plain),
            gflops(m, few)
        );
    }
    for m in [8, 64, 1024] {
        let x = random([m, k]);
        let hot = micros(&x, &in_out[..1], 200, burn);
        println!(
            "{m}x{k}x{n}, hot: {hot:.0} us ({:.1} GFLOP/s)",
            gflops(m, hot)
        );
    }
}
