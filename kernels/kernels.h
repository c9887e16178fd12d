// kernels.h: the CPU kernels of the forward pass. Each has a plain reference in
// tests/test_kernels.c. Batched: x holds n rows (tokens).
#ifndef KVT_KERNELS_H
#define KVT_KERNELS_H

#include "../model/config.h"

// out[n][d] = x[n][k] . W[d][k]^T, W in f32/f16/bf16 (fp32 accumulation) or q8_0 (int8 dot
// products per block of 32, kernels/matmul_q8.c). OpenMP over rows of W.
void matmul(float *out, const float *x, const void *w, DType wt, int n, int k, int d);
// One of several projections of the same input: out[n][d] = x[n][k] . W[d][k]^T.
typedef struct {
    float *out;          // [n][d]
    const void *w;       // [d][k] in the call's dtype
    int d;
} MatmulOut;
// Several matmuls of one input (Q, K and V; gate and up) in one parallel region: the threads
// share out the rows of all of them, so a decode step pays one fork/join instead of `count`.
// Each output is exactly what matmul() would give.
void matmul_multi(const float *x, DType wt, int n, int k, const MatmulOut *outs, int count);
// o[n][dim] = x * rsqrt(mean(x^2) + eps) * weight
void rmsnorm(float *o, const float *x, const float *weight, int n, int dim, float eps);
// Inverse frequencies for RoPE, with Llama-3.1 scaling if the config says so. freqs[head_dim/2].
void rope_freqs(float *freqs, const Config *c);
// Rotate adjacent pairs (2i, 2i+1) of each head of x[n_heads*head_dim] at position pos.
void rope(float *x, int n_heads, int head_dim, int pos, const float *freqs);
void softmax(float *x, int n);
// h[i] = silu(g[i]) * u[i]
void swiglu(float *h, const float *g, const float *u, int n);
// Row lookup of the embedding table (any dtype) into fp32.
void embed(float *out, const void *table, DType wt, int dim, int token);

// What this CPU runs, for the kernels that come in SIMD variants (0 off x86-64): AVX2 with FMA
// and F16C, the base of every SIMD variant here; AVX-512 F, VL and VNNI on top of it, for
// fused integer dot products (the q8_0 matmul, the attention).
int cpu_has_avx2(void);
int cpu_has_avx512vnni(void);

#endif
