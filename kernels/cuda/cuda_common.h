// cuda_common.h: what every CUDA file of kvtuner.c shares: the error checks (every CUDA and
// cuBLAS call goes through one, so a failure is one line naming the call, file and line),
// weight-dtype loads and stores on the device, block reductions, and the launchers of the
// small kernels, so that forward_cuda.cu and the harness (check_kernels.cu) call the same code.
#ifndef KVT_CUDA_COMMON_H
#define KVT_CUDA_COMMON_H

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../../util/util.h"
#include "../../model/config.h"
}

// Debug mode: KVT_CUDA_SYNC=1 in the environment makes every kernel launch wait for its
// kernel to finish. A fault inside a kernel (an illegal address, say) is otherwise reported
// by whichever later call synchronises first, far from its cause; in this mode it is
// reported at the launch that caused it. Off by default: it costs a round trip per kernel.
static inline int cuda_sync_each_launch(void) {
    static int on = -1;
    if (on < 0) {
        const char *s = getenv("KVT_CUDA_SYNC");
        on = s && *s && strcmp(s, "0") != 0;
    }
    return on;
}

// An error that a kernel raised while it ran: the CUDA runtime reports it at a later call.
static inline int cuda_kernel_fault(cudaError_t e) {
    return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorMisalignedAddress ||
           e == cudaErrorIllegalInstruction || e == cudaErrorInvalidPc || e == cudaErrorHardwareStackError ||
           e == cudaErrorAssert || e == cudaErrorLaunchTimeout;
}

// One line on stderr, exit 1 (util's fatal). Out of memory gets its own wording because it is
// the failure a user can act on (a smaller --ctx, a smaller model); a kernel fault says how to
// find the kernel.
#define CUDA_CHECK(call) do {                                                                  \
        cudaError_t e_ = (call);                                                               \
        if (e_ == cudaErrorMemoryAllocation)                                                   \
            fatal("CUDA: too little GPU memory (%s at %s:%d)", #call, __FILE__, __LINE__);     \
        if (e_ != cudaSuccess)                                                                 \
            fatal("CUDA: %s (%s at %s:%d%s)", cudaGetErrorString(e_), #call, __FILE__, __LINE__, \
                  cuda_kernel_fault(e_) && !cuda_sync_each_launch()                            \
                      ? "; raised by an earlier kernel: KVT_CUDA_SYNC=1 names its launch" : ""); \
    } while (0)

// cuBLAS entry points, opened at first use (cublas_loader.cu): call cublas()->gemm_ex(...).
typedef struct {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n, int k,
                              const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                              cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                              cublasComputeType_t compute, cublasGemmAlgo_t algo);   // cublasGemmEx (32-bit sizes)
    decltype(&cublasGetStatusString) status_string;
} CublasApi;
const CublasApi *cublas(void);

#define CUBLAS_CHECK(call) do {                                                                \
        cublasStatus_t s_ = (call);                                                            \
        if (s_ == CUBLAS_STATUS_ALLOC_FAILED)                                                  \
            fatal("cuBLAS: too little GPU memory (%s at %s:%d)", #call, __FILE__, __LINE__);   \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                       \
            fatal("cuBLAS: %s (%s at %s:%d)", cublas()->status_string(s_), #call, __FILE__, __LINE__); \
    } while (0)

// After every kernel launch: launch-configuration errors surface here, at the launch site,
// and in debug mode (KVT_CUDA_SYNC=1) the errors the kernel raises while it runs too.
#define CUDA_LAUNCH_CHECK() do {                                                               \
        CUDA_CHECK(cudaGetLastError());                                                        \
        if (cuda_sync_each_launch()) {                                                         \
            cudaError_t s_ = cudaDeviceSynchronize();                                          \
            if (s_ != cudaSuccess)                                                             \
                fatal("CUDA: %s in the kernel launched at %s:%d", cudaGetErrorString(s_), __FILE__, __LINE__); \
        }                                                                                      \
    } while (0)

// ---- device helpers -------------------------------------------------------------------

// `#pragma unroll` for code that also compiles for the host (the host compiler ignores it
// with a warning).
#ifdef __CUDA_ARCH__
#define UNROLL _Pragma("unroll")
#else
#define UNROLL
#endif

// Element i of an array stored in dtype t (the model's weight dtype), as f32.
__device__ __forceinline__ float load_as_f32(const void *p, int t, size_t i) {
    if (t == DTYPE_F32) return ((const float *)p)[i];
    if (t == DTYPE_F16) return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

// GEMM inputs. cublasGemmEx wants A and B of one type, so the activations that feed a
// projection must be in the weights' dtype; rounding them to f16 (11-bit mantissa) or bf16 (8)
// would move K and V by ~1e-3 and flip quantization codes against the CPU path. So an
// activation v is stored as a sum of `nsplit` planes of that dtype — v = hi + lo (f16, 22
// bits) or hi + mid + lo (bf16, 24 bits) — and the GEMM runs over all planes as extra columns
// (the weights are still read once); cuda_add_splits() sums the planes' outputs. f32 weights
// take one plane.
// Store v as element i of an array in dtype t (f32, f16, bf16).
__device__ __forceinline__ void store_as(void *p, int t, size_t i, float v) {
    if (t == DTYPE_F32) ((float *)p)[i] = v;
    else if (t == DTYPE_F16) ((__half *)p)[i] = __float2half_rn(v);
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}

static inline int act_splits(DType t) { return t == DTYPE_F32 ? 1 : t == DTYPE_F16 ? 2 : 3; }

// Store v as element i of plane 0, its remainders in planes 1.. (plane = elements per plane).
__device__ __forceinline__ void store_split(void *p, int t, size_t plane, size_t i, float v) {
    if (t == DTYPE_F32) { ((float *)p)[i] = v; return; }
    if (t == DTYPE_F16) {
        __half hi = __float2half_rn(v);
        ((__half *)p)[i] = hi;
        ((__half *)p)[plane + i] = __float2half_rn(v - __half2float(hi));
        return;
    }
    __nv_bfloat16 hi = __float2bfloat16_rn(v);
    float r = v - __bfloat162float(hi);
    __nv_bfloat16 mid = __float2bfloat16_rn(r);
    ((__nv_bfloat16 *)p)[i] = hi;
    ((__nv_bfloat16 *)p)[plane + i] = mid;
    ((__nv_bfloat16 *)p)[2 * plane + i] = __float2bfloat16_rn(r - __bfloat162float(mid));
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum / max over the whole block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. Uses 32 floats of shared memory; callable several times in a row.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float red[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();                     // red may still be read by a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v) {
    __shared__ float red[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return warp_max(v);
}

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

// ---- launchers of the small kernels (one .cu each) ------------------------------------
// All work on device pointers, asynchronously on `st`. Rows are tokens of a batch.

// embed.cu: out[n][dim] (f32) = rows tokens[0..n) of table[vocab][dim] (dtype wt).
void cuda_embed(float *out, const int *tokens, int n, const void *table, DType wt, int dim, cudaStream_t st);
// rmsnorm.cu: out[n][dim] = x * rsqrt(mean(x^2) + eps) * w, as GEMM input planes of dtype ot
// (store_split; planes of n * dim elements).
void cuda_rmsnorm(void *out, DType ot, const float *x, const float *w, int n, int dim, float eps, cudaStream_t st);
// rope.cu: rotate adjacent pairs of x1[n][h1*head_dim] and x2[n][h2*head_dim] (Q and K; x2 may
// be NULL with h2 = 0); row t is at position pos0 + t. With rotate_half, each head vector is
// then stored in rotate-half channel order (quant/kvrotate.h).
void cuda_rope(float *x1, int h1, float *x2, int h2, int n, int head_dim, int64_t pos0, const float *freqs,
               int rotate_half, cudaStream_t st);
// swiglu.cu: h[t][j] = silu(g) * u with g = gu[t][j], u = gu[t][hidden + j] (gu [n][2*hidden], the
// fused gate/up output), as GEMM input planes of dtype ht (planes of n * hidden elements).
void cuda_swiglu(void *h, DType ht, const float *gu, int n, int hidden, cudaStream_t st);
// residual.cu: x[i] = (accumulate ? x[i] : 0) + Σ_s parts[s*n + i], s < nsplit, i < n: the sum of
// a GEMM's per-plane outputs, and with accumulate the residual add.
void cuda_add_splits(float *x, const float *parts, size_t n, int nsplit, int accumulate, cudaStream_t st);
// softmax.cu: softmax of each of the rows x[rows][n], in place.
void cuda_softmax(float *x, int rows, int n, cudaStream_t st);

// gemv.cu: the decode projections. out[s][t * ld[s] + r] = Σ_c W_s[r][c] x[t][c] (+ the old
// value if accumulate) for t < n <= GEMV_MAX_TOKENS tokens and every row r of up to
// GEMV_MAX_MATRICES matrices W_s [rows_s][k] of dtype t, stacked by rows into one launch.
// x [n][k] is f32. cuda_gemv_fits says whether the kernel takes (t, n, k) at all.
#define GEMV_MAX_TOKENS 4
#define GEMV_MAX_MATRICES 3
typedef struct {
    int n;                                    // matrices
    const void *w[GEMV_MAX_MATRICES];         // [rows_s][k] each, in the weight dtype
    float *out[GEMV_MAX_MATRICES];            // [tokens][ld[s]]
    int64_t ld[GEMV_MAX_MATRICES];            // row stride of out[s] (its matrix's rows)
    int64_t first[GEMV_MAX_MATRICES + 1];     // first stacked row of each matrix; first[n]: all rows
} GemvRows;
int cuda_gemv_fits(DType t, int n, int k);
void cuda_gemv(const GemvRows *m, const float *x, int n, int k, DType t, int accumulate, cudaStream_t st);
// The kernel's variants, which the harness times side by side: 16-byte loads per lane per row
// in flight (2, 4), rows per warp (1, 2), and weights loaded as streamed (evict-first) or not.
// cuda_gemv runs GEMV_DEFAULT, the fastest measured on the H200 (kernels/cuda/README.md).
typedef struct { int depth, rows_per_warp, stream; } GemvVariant;
#define GEMV_DEFAULT (GemvVariant{ 2, 1, 1 })
void cuda_gemv_variant(const GemvRows *m, const float *x, int n, int k, DType t, int accumulate, GemvVariant v,
                       cudaStream_t st);

#endif
