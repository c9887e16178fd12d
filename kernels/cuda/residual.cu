// residual.cu: sums into the f32 residual stream. x[i] = (accumulate ? x[i] : 0) + Σ_s parts[s][i]:
// a GEMM that ran over the planes of a split input (cuda_common.h, store_split) wrote one
// output per plane; their sum is the projection, and adding it into x is the residual
// connection (the attention or FFN branch added back, f32 as on the CPU). Planes are summed
// in a fixed order, hi first.
// Threads: one thread per element, a flat grid over the n = tokens * dim elements.
#include "cuda_common.h"

__global__ static void add_splits_kernel(float *x, const float *parts, size_t n, int nsplit, int accumulate) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float s = parts[i];
    for (int k = 1; k < nsplit; k++) s += parts[k * n + i];
    x[i] = accumulate ? x[i] + s : s;
}

void cuda_add_splits(float *x, const float *parts, size_t n, int nsplit, int accumulate, cudaStream_t st) {
    add_splits_kernel<<<cdiv(n, 256), 256, 0, st>>>(x, parts, n, nsplit, accumulate);
    CUDA_LAUNCH_CHECK();
}
