// rmsnorm.cu: RMSNorm of each row, out = x * rsqrt(mean(x^2) + eps) * weight, written as the
// next GEMM's input planes in its weights' dtype (store_split in cuda_common.h).
// Threads: one block per row (grid.x = n tokens), 256 threads striding over dim; each
// thread sums squares of its elements, the block reduces (warp shuffles, then one warp),
// and every thread scales and writes its own elements again.
#include "cuda_common.h"

// A decode step normalises one row at a time, so this kernel's time is its latency: the loads
// of a thread's elements are issued together (unrolled, 16 bytes each where dim allows)
// rather than one after another.
__global__ static void rmsnorm_kernel(void *out, int ot, size_t plane, const float *x, const float *w, int dim, float eps) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    if ((dim & 3) == 0) {
        const float4 *x4 = (const float4 *)xr;
#pragma unroll 8
        for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
            float4 a = x4[i];
            ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
        }
    } else {
#pragma unroll 8
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    }
    ss = block_sum(ss);
    float r = rsqrtf(ss / dim + eps);
#pragma unroll 8
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        store_split(out, ot, plane, (size_t)blockIdx.x * dim + i, w[i] * (xr[i] * r));
}

void cuda_rmsnorm(void *out, DType ot, const float *x, const float *w, int n, int dim, float eps, cudaStream_t st) {
    rmsnorm_kernel<<<n, 256, 0, st>>>(out, (int)ot, (size_t)n * dim, x, w, dim, eps);
    CUDA_LAUNCH_CHECK();
}
