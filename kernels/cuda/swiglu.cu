// swiglu.cu: the SwiGLU gate, h = silu(g) * u with silu(g) = g / (1 + e^-g), written as the
// down projection's input planes in its weights' dtype (store_split in cuda_common.h).
// Threads: one thread per element, a flat grid over the n = tokens * hidden_dim elements.
#include "cuda_common.h"

__global__ static void swiglu_kernel(void *h, int ht, const float *g, const float *u, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i];
    store_split(h, ht, n, i, gi / (1.0f + expf(-gi)) * u[i]);
}

void cuda_swiglu(void *h, DType ht, const float *g, const float *u, size_t n, cudaStream_t st) {
    swiglu_kernel<<<cdiv(n, 256), 256, 0, st>>>(h, (int)ht, g, u, n);
    CUDA_LAUNCH_CHECK();
}
