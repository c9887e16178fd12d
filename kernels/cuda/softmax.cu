// softmax.cu: softmax of each row of x[rows][n], in place, max-subtracted for range.
// Threads: one block per row (grid.x = rows), 256 threads striding over the row; two block
// reductions (max, then the sum of exponentials), then every thread rescales its elements.
// (Decode attention does its softmax inside attention_cuda.cu, chunk by chunk, so that
// scores never go to global memory; this kernel is the plain one, e.g. over logits.)
#include "cuda_common.h"

__global__ static void softmax_kernel(float *x, int n) {
    float *r = x + (size_t)blockIdx.x * n;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, r[i]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) { float e = expf(r[i] - mx); r[i] = e; sum += e; }
    sum = block_sum(sum);
    float inv = 1.0f / sum;
    for (int i = threadIdx.x; i < n; i += blockDim.x) r[i] *= inv;
}

void cuda_softmax(float *x, int rows, int n, cudaStream_t st) {
    softmax_kernel<<<rows, 256, 0, st>>>(x, n);
    CUDA_LAUNCH_CHECK();
}
