// rope.cu: rotary position embedding, rotate-adjacent-pairs convention (model/modelbin.h):
// (x[2i], x[2i+1]) of every head of token t turns by angle (pos0 + t) * freqs[i].
// The inverse frequencies, Llama-3.1 scaling included, come from the CPU's rope_freqs()
// (kernels/kernels.c), computed once on the host and uploaded, so both devices rotate by
// the same angles; the angle is formed as the CPU forms it (f32 product, then cos/sin).
// Queries and keys rotate in one launch: x1 has h1 heads per token (Q), x2 has h2 (K).
// Threads: one thread per (token, head, pair); a flat grid over n * (h1 + h2) * head_dim/2.
#include "cuda_common.h"

__global__ static void rope_kernel(float *x1, int h1, float *x2, int h2, int n, int head_dim, int64_t pos0,
                                   const float *freqs) {
    int half = head_dim / 2, heads = h1 + h2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * heads * half) return;
    int i = (int)(idx % half);
    size_t th = idx / half;                         // token * (h1 + h2) + head
    int t = (int)(th / heads), h = (int)(th % heads);
    float angle = (float)(pos0 + t) * freqs[i];
    float s, c;
    sincosf(angle, &s, &c);
    float *p = h < h1 ? x1 + ((size_t)t * h1 + h) * head_dim + 2 * i : x2 + ((size_t)t * h2 + (h - h1)) * head_dim + 2 * i;
    float a = p[0], b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
}

// The same rotation, then each head vector stored in rotate-half order [x_0, x_2, ... | x_1,
// x_3, ...]: the channel order of per-token key groups smaller than head_dim
// (quant/kvrotate.h, docs/DESIGN.md §3.10), which the CPU applies to q and k after RoPE.
// One block per head vector, a thread per pair: all pairs are read before any is written.
__global__ static void rope_rotate_half_kernel(float *x1, int h1, float *x2, int h2, int head_dim, int64_t pos0,
                                               const float *freqs) {
    int half = head_dim / 2, heads = h1 + h2, i = threadIdx.x;
    int t = blockIdx.x / heads, h = blockIdx.x % heads;
    float *p = h < h1 ? x1 + ((size_t)t * h1 + h) * head_dim : x2 + ((size_t)t * h2 + (h - h1)) * head_dim;
    float a = 0.0f, b = 0.0f, s, c;
    if (i < half) {
        sincosf((float)(pos0 + t) * freqs[i], &s, &c);
        float x = p[2 * i], y = p[2 * i + 1];
        a = x * c - y * s;
        b = x * s + y * c;
    }
    __syncthreads();
    if (i < half) { p[i] = a; p[half + i] = b; }
}

void cuda_rope(float *x1, int h1, float *x2, int h2, int n, int head_dim, int64_t pos0, const float *freqs,
               int rotate_half, cudaStream_t st) {
    if (rotate_half) {
        if (head_dim / 2 > 1024) fatal("cuda_rope: head_dim %d is too large for rotate-half order", head_dim);
        rope_rotate_half_kernel<<<(unsigned)n * (h1 + h2), 32 * cdiv(head_dim / 2, 32), 0, st>>>(x1, h1, x2, h2, head_dim,
                                                                                               pos0, freqs);
    } else {
        size_t total = (size_t)n * (h1 + h2) * (head_dim / 2);
        rope_kernel<<<cdiv(total, 256), 256, 0, st>>>(x1, h1, x2, h2, n, head_dim, pos0, freqs);
    }
    CUDA_LAUNCH_CHECK();
}
