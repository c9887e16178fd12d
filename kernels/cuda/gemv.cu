// gemv.cu: the projections of a decode step, out[t] = W · x[t] for a handful of tokens.
//
// Decode reads every weight once per token and does two flops per weight: far below the
// H100/H200's ~200 flops per byte, so a projection is bound by reading W, and the only goal
// is to stream W at memory bandwidth. cuBLAS's GEMM, given one to four columns (and the
// activation planes of cuda_common.h), reached about 40% of it. Here:
//   - a warp per output row (or two); each lane reads 16 bytes of the row at a time (8 f16/bf16
//     weights, 4 f32), so a warp reads 512 contiguous bytes per load;
//   - several such loads are issued before any is used, so enough bytes are in flight to
//     cover the memory latency (how many, and the cache hint, are variants that the harness
//     times side by side: GEMV_DEFAULT in cuda_common.h is the fastest measured);
//   - x is f32 (the producer kernels write one f32 plane when this path runs, see
//     forward_cuda.cu), read through the L1 cache, where every warp of the block finds it;
//   - the lanes' partial sums are added with shuffles; fp32 throughout, as the CPU's matmul.
// Several matrices that read the same x (wq, wk, wv) run in one launch as stacked rows.
#include "cuda_common.h"

__device__ __forceinline__ int dtype_size_dev(int t) { return t == DTYPE_F32 ? 4 : 2; }

// A 16-byte load of weights: through the read-only cache (__ldg), or marked as streamed,
// evict first (__ldcs), so that the weights, read once, do not push x out of the L1.
template <int STREAM> __device__ __forceinline__ uint4 load16(const uint4 *p) { return STREAM ? __ldcs(p) : __ldg(p); }
template <int STREAM> __device__ __forceinline__ float4 load16(const float4 *p) { return STREAM ? __ldcs(p) : __ldg(p); }

// Eight consecutive weights of a row as f32, from one 16-byte load (f16, bf16) or two (f32).
template <int STREAM>
__device__ __forceinline__ void load8(float w[8], const void *row, int t, int i8) {
    if (t == DTYPE_F32) {
        const float4 *p = (const float4 *)row + 2 * i8;
        float4 a = load16<STREAM>(p), b = load16<STREAM>(p + 1);
        w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
        return;
    }
    uint4 u = load16<STREAM>((const uint4 *)row + i8);
    const uint32_t h[4] = { u.x, u.y, u.z, u.w };
    UNROLL
    for (int j = 0; j < 4; j++) {
        if (t == DTYPE_F16) {
            w[2 * j] = __half2float(__ushort_as_half((unsigned short)(h[j] & 0xffffu)));
            w[2 * j + 1] = __half2float(__ushort_as_half((unsigned short)(h[j] >> 16)));
        } else {                          // bf16: the high half of an f32
            w[2 * j] = __uint_as_float(h[j] << 16);
            w[2 * j + 1] = __uint_as_float(h[j] & 0xffff0000u);
        }
    }
}

// acc[i][tok] += w[i][j][0..8) · x[tok][8*i8 .. 8*i8+8) for each of the RPW rows i.
template <int NT, int RPW, int D>
__device__ __forceinline__ void dot8(float acc[RPW][NT], const float w[RPW][D][8], int j, const float *x, int k, int i8) {
    UNROLL
    for (int tok = 0; tok < NT; tok++) {
        const float4 *xp = (const float4 *)(x + (size_t)tok * k) + 2 * i8;
        float4 a = xp[0], b = xp[1];
        UNROLL
        for (int i = 0; i < RPW; i++) {
            const float *wi = w[i][j];
            acc[i][tok] += wi[0] * a.x + wi[1] * a.y + wi[2] * a.z + wi[3] * a.w + wi[4] * b.x + wi[5] * b.y +
                           wi[6] * b.z + wi[7] * b.w;
        }
    }
}

#define GEMV_WARPS 8              // warps per block

// Each warp computes RPW rows of the stack (m.first[n] = rows in all), each lane issuing
// RPW * DEPTH 16-byte loads before it uses them; x is read once per RPW rows.
template <int NT, int DEPTH, int RPW, int STREAM>
__global__ static void gemv_kernel(GemvRows m, int64_t rows, const float *x, int k, int t, int accumulate) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t r0 = ((int64_t)blockIdx.x * GEMV_WARPS + warp) * RPW;
    if (r0 >= rows) return;                       // past the last matrix (no barrier follows)
    const char *row[RPW];
    float *out[RPW];
    int64_t ld[RPW];
    UNROLL
    for (int i = 0; i < RPW; i++) {               // the matrix each row falls in, picked with
        int64_t r = r0 + i < rows ? r0 + i : r0;  // constant indices (a run-time index would copy
        const void *w = m.w[0];                   // the struct to local memory); a row past the
        int64_t rr = r;                           // end repeats r0 and is not stored
        out[i] = m.out[0]; ld[i] = m.ld[0];
        UNROLL
        for (int j = 1; j < GEMV_MAX_MATRICES; j++)
            if (j < m.n && r >= m.first[j]) { w = m.w[j]; out[i] = m.out[j]; ld[i] = m.ld[j]; rr = r - m.first[j]; }
        row[i] = (const char *)w + rr * k * (int64_t)dtype_size_dev(t);
        out[i] += rr;
    }
    float acc[RPW][NT];
    UNROLL
    for (int i = 0; i < RPW; i++)
        UNROLL
        for (int tok = 0; tok < NT; tok++) acc[i][tok] = 0.0f;
    int n8 = k / 8, i8 = lane;
    for (; i8 + 32 * (DEPTH - 1) < n8; i8 += 32 * DEPTH) {     // all the loads, then use them
        float w[RPW][DEPTH][8];
        UNROLL
        for (int i = 0; i < RPW; i++)
            UNROLL
            for (int j = 0; j < DEPTH; j++) load8<STREAM>(w[i][j], row[i], t, i8 + 32 * j);
        UNROLL
        for (int j = 0; j < DEPTH; j++) dot8<NT, RPW>(acc, w, j, x, k, i8 + 32 * j);
    }
    for (; i8 < n8; i8 += 32) {
        float w[RPW][1][8];
        UNROLL
        for (int i = 0; i < RPW; i++) load8<STREAM>(w[i][0], row[i], t, i8);
        dot8<NT, RPW>(acc, w, 0, x, k, i8);
    }
    UNROLL
    for (int i = 0; i < RPW; i++)
        UNROLL
        for (int tok = 0; tok < NT; tok++) {
            float v = warp_sum(acc[i][tok]);
            if (lane == 0 && r0 + i < rows) {
                float *o = out[i] + (int64_t)tok * ld[i];
                *o = accumulate ? *o + v : v;
            }
        }
}

int cuda_gemv_fits(DType t, int n, int k) {
    return n >= 1 && n <= GEMV_MAX_TOKENS && k % 8 == 0 && (t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16);
}

template <int DEPTH, int RPW, int STREAM>
static void launch(const GemvRows *m, int64_t rows, const float *x, int n, int k, DType t, int accumulate,
                   cudaStream_t st) {
    dim3 grid(cdiv((size_t)rows, GEMV_WARPS * RPW)), block(32 * GEMV_WARPS);
    switch (n) {
    case 1: gemv_kernel<1, DEPTH, RPW, STREAM><<<grid, block, 0, st>>>(*m, rows, x, k, (int)t, accumulate); break;
    case 2: gemv_kernel<2, DEPTH, RPW, STREAM><<<grid, block, 0, st>>>(*m, rows, x, k, (int)t, accumulate); break;
    case 3: gemv_kernel<3, DEPTH, RPW, STREAM><<<grid, block, 0, st>>>(*m, rows, x, k, (int)t, accumulate); break;
    default: gemv_kernel<4, DEPTH, RPW, STREAM><<<grid, block, 0, st>>>(*m, rows, x, k, (int)t, accumulate); break;
    }
    CUDA_LAUNCH_CHECK();
}

void cuda_gemv_variant(const GemvRows *m, const float *x, int n, int k, DType t, int accumulate, GemvVariant v,
                       cudaStream_t st) {
    if (!cuda_gemv_fits(t, n, k) || m->n < 1 || m->n > GEMV_MAX_MATRICES)
        fatal("cuda_gemv: %d tokens, k = %d, %d matrices: outside what the kernel handles", n, k, m->n);
    int64_t rows = m->first[m->n];
#define GEMV_CASE(D, R, S) if (v.depth == D && v.rows_per_warp == R && v.stream == S) return launch<D, R, S>(m, rows, x, n, k, t, accumulate, st)
    GEMV_CASE(2, 1, 0); GEMV_CASE(4, 1, 0); GEMV_CASE(2, 2, 0); GEMV_CASE(4, 2, 0);
    GEMV_CASE(2, 1, 1); GEMV_CASE(4, 1, 1); GEMV_CASE(2, 2, 1); GEMV_CASE(4, 2, 1);
#undef GEMV_CASE
    fatal("cuda_gemv: no kernel for depth %d, %d rows per warp, stream %d", v.depth, v.rows_per_warp, v.stream);
}

void cuda_gemv(const GemvRows *m, const float *x, int n, int k, DType t, int accumulate, cudaStream_t st) {
    cuda_gemv_variant(m, x, n, k, t, accumulate, GEMV_DEFAULT, st);
}
