// embed.cu: token embedding lookup. out[t][:] = table[tokens[t]][:] widened to f32.
// Threads: one block per token (grid.x = n); the block's threads stride over the dim
// columns, so consecutive threads read consecutive elements of the row (coalesced).
// Token ids are validated on the host before they reach the device.
#include "cuda_common.h"

__global__ static void embed_kernel(float *out, const int *tokens, const void *table, int wt, int dim) {
    int t = blockIdx.x;
    size_t row = (size_t)tokens[t] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)t * dim + i] = load_as_f32(table, wt, row + i);
}

void cuda_embed(float *out, const int *tokens, int n, const void *table, DType wt, int dim, cudaStream_t st) {
    embed_kernel<<<n, 256, 0, st>>>(out, tokens, table, (int)wt, dim);
    CUDA_LAUNCH_CHECK();
}
