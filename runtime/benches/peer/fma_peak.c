/* This machine's f32 arithmetic peak: one core issuing nothing but
 * independent AVX-512 fused multiply-adds (16 chains of 16 lanes, enough to
 * cover the instruction's latency on both FMA ports). The GRPO benchmark
 * (grpo_step_vs_trl.sh) prints it beside the rate the step's linear products
 * reach, to show how close the floor is to what the hardware can do.
 *
 *   cc -O3 -march=native runtime/benches/peer/fma_peak.c -o target/fma_peak
 *   target/fma_peak            # prints GFLOP/s on one core
 *
 * Needs a compiler and a CPU with AVX-512F; the script skips it otherwise.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 16

int main(void) {
    __m512 acc[CHAINS];
    const __m512 scale = _mm512_set1_ps(1.0000001f), shift = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    const long iterations = 50000000;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long n = 0; n < iterations; n++) {
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], scale, shift);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9;
    float sum = 0; /* keeps the chains live */
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(acc[i]);
    /* 16 lanes x 2 flops (a multiply and an add) per FMA. */
    printf("%.1f\n", iterations * (double)CHAINS * 16 * 2 / seconds / 1e9 + 0 * sum);
    return 0;
}
