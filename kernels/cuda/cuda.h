// cuda.h: the C interface of the CUDA path (kernels/cuda/*.cu), for run.c, tests and benches.
// Only compiled in when the build defines KVT_CUDA (the Makefile does when nvcc is found).
//
// It mirrors the CPU API: a CudaModel holds the weights on the GPU (as forward()'s Model and
// RunState do), a CudaKVCache is a KVCache in GPU memory with the same packed layout, and
// cuda_forward() has forward()'s contract. So a caller swaps
//     logits = forward(&model, &state, cache, tokens, n, pos, all_logits);
// for
//     logits = cuda_forward(cuda_model, cuda_cache, tokens, n, pos, all_logits);
// Every failure (no device, too little GPU memory, an unsupported shape, a CUDA or cuBLAS
// error) is one line on stderr and exit 1, as everywhere in kvtuner.c.
#ifndef KVT_CUDA_H
#define KVT_CUDA_H

#include <stddef.h>
#include <stdint.h>
#include "../../model/model.h"
#include "../../quant/kvcache.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 if a CUDA device can be used; otherwise 0 and the reason in why[n] (no device, no
// driver, ...). Never fatal: tests use it to decide to skip.
int cuda_device_available(char *why, size_t n);
// Fatal with a clear line unless a device is usable; selects device 0. Returns its name.
const char *cuda_init(void);

// ---- the KV cache on the GPU -----------------------------------------------------------
typedef struct CudaKVCache CudaKVCache;
// Same spec rules as build_kvcache (kvspec_validate); fatal if the GPU memory is too small.
CudaKVCache *build_cuda_kvcache(const KVSpec *spec, int64_t max_tokens);
void free_cuda_kvcache(CudaKVCache *c);
void cuda_kvcache_reset(CudaKVCache *c);
int64_t cuda_kvcache_len(const CudaKVCache *c, int layer);
// Append n tokens of host data k, v [n][n_kv_heads*head_dim] to `layer`, in one batch.
void cuda_kvcache_append_host(CudaKVCache *c, int layer, const float *k, const float *v, int n);
// Copy the whole cache to / from a CPU cache built with the same spec and max_tokens.
void cuda_kvcache_to_host(const CudaKVCache *c, KVCache *host);
void cuda_kvcache_from_host(CudaKVCache *c, const KVCache *host);
// Exact bytes in use, as kvcache_memory().
KVMemory cuda_kvcache_memory(const CudaKVCache *c, int layer);
// Benchmarks: append n_tokens pseudo-random tokens to every layer (through the real
// quantize-and-append kernels) so that decode can be timed at a long context without a prefill.
void cuda_kvcache_fill_random(CudaKVCache *c, int64_t n_tokens, uint64_t seed);

// ---- the model on the GPU ----------------------------------------------------------------
typedef struct CudaModel CudaModel;
// Upload the weights of m in their dtype (f32/f16/bf16) and allocate activations for
// batches of up to max_batch tokens. The host model may be freed afterwards.
CudaModel *build_cuda_model(const Model *m, int max_batch);
// Benchmarks: weights of the config's shape filled with pseudo-random values on the device.
CudaModel *build_cuda_model_random(const Config *c, int max_batch, uint64_t seed);
void free_cuda_model(CudaModel *cm);
// forward() on the GPU: tokens[0..n) at positions pos..pos+n-1 (pos must equal the cache
// length), appending to cache. Returns host memory owned by cm: all n rows of logits if
// all_logits, else the last row, [vocab] each.
float *cuda_forward(CudaModel *cm, CudaKVCache *cache, const int *tokens, int n, int64_t pos, int all_logits);
// Bytes of weights one decode step reads (every matrix once, the classifier included).
uint64_t cuda_model_weight_bytes(const CudaModel *cm);

#ifdef __cplusplus
}
#endif
#endif
