// swiglu.cu: the SwiGLU gate, h = silu(g) * u with silu(g) = g / (1 + e^-g), written as the
// down projection's input planes in its weights' dtype (store_split in cuda_common.h).
// The input is the fused gate/up GEMM's output: per token hidden gate values then hidden up
// values, gu[t] = [g | u].
// Threads: one thread per output element, a flat grid over n = tokens * hidden elements.
#include "cuda_common.h"

__global__ static void swiglu_kernel(void *h, int ht, const float *gu, size_t n, int hidden) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t t = i / hidden, j = i % hidden;
    float g = gu[t * 2 * hidden + j], u = gu[t * 2 * hidden + hidden + j];
    store_split(h, ht, n, i, g / (1.0f + expf(-g)) * u);
}

void cuda_swiglu(void *h, DType ht, const float *gu, int n_tokens, int hidden, cudaStream_t st) {
    size_t n = (size_t)n_tokens * hidden;
    swiglu_kernel<<<cdiv(n, 256), 256, 0, st>>>(h, (int)ht, gu, n, hidden);
    CUDA_LAUNCH_CHECK();
}
