// rmsnorm.cu: RMSNorm of each row, out = x * rsqrt(mean(x^2) + eps) * weight, written as the
// next GEMM's input planes in its weights' dtype (store_split in cuda_common.h).
// Threads: one block per row (grid.x = n tokens), 256 threads striding over dim; each
// thread sums squares of its elements, the block reduces (warp shuffles, then one warp),
// and every thread scales and writes its own elements again.
#include "cuda_common.h"

__global__ static void rmsnorm_kernel(void *out, int ot, size_t plane, const float *x, const float *w, int dim, float eps) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss);
    float r = rsqrtf(ss / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        store_split(out, ot, plane, (size_t)blockIdx.x * dim + i, w[i] * (xr[i] * r));
}

void cuda_rmsnorm(void *out, DType ot, const float *x, const float *w, int n, int dim, float eps, cudaStream_t st) {
    rmsnorm_kernel<<<n, 256, 0, st>>>(out, (int)ot, (size_t)n * dim, x, w, dim, eps);
    CUDA_LAUNCH_CHECK();
}
