// kvcache_cuda.h: the GPU KV cache (internal to kernels/cuda/). It is the CPU cache's layout
// (quant/kvstore.h) placed in device memory: per layer, per KV head, keys and values each a
// stream of fp16 sink rows, bit-packed groups with an fp16 (scale, offset) pair each, and an
// fp16 ring window of R rows. Same group order, same bit order, same fp16 rounding, so a
// cache copied between devices (cuda_kvcache_to_host / _from_host) is the same cache.
// Where each token is held is a function of the cache length alone (kv_regions, the one
// definition in quant/kvview.h), so the device needs no per-stream counters.
#ifndef KVT_KVCACHE_CUDA_H
#define KVT_KVCACHE_CUDA_H

#include "cuda_common.h"
extern "C" {
#include "../../quant/kvcache.h"
#include "../../quant/kvview.h"
}

typedef struct {                // one KV head's keys or values of one layer (KVStream's fields)
    int bits;                   // 16, 8, 4, 2
    int per_channel;            // 1: KIVI groups of `group` tokens of one channel
    int group;                  // elements per group
    int groups_per_token;       // per-token streams: head_dim / group
    int64_t group_bytes;        // packed bytes of one group
    uint16_t *fp16;             // bits 16: [max_tokens][head_dim]; else [sink + R][head_dim]
    uint8_t *codes;             // [max groups][group_bytes]
    uint16_t *sm;               // [max groups][2]: fp16 scale, fp16 offset
} DevStream;

struct CudaKVCache {
    KVSpec spec;                // own copy (bits on the host)
    int64_t max_tokens;
    int64_t *len;               // [n_layers] tokens held, on the host (it drives every launch)
    DevStream *streams;         // host copy of the descriptors, [n_layers][n_kv_heads][2]
    DevStream *d_streams;       // the same on the device
    void *pool;                 // one device allocation holding every stream's arrays
    uint64_t pool_bytes;
    int *d_err;                 // device error record: {code, layer, head*2+is_value, position}
    float *d_tmp;               // scratch for host-side appends: k, v of up to tmp_tokens tokens
    int tmp_tokens;
};

// Quantized tokens of a stream when the cache holds len tokens (kv_regions).
__host__ __device__ static inline int64_t stream_n_quant(const DevStream *s, int64_t len, int64_t S, int64_t R) {
    KVRegions r = kv_regions(s->bits, s->per_channel, len, S, R);
    return r.quant_end - r.sink_end;
}

// Row of token t in the stream's fp16 array (kv_row): all rows, sinks, or the ring.
__host__ __device__ static inline int64_t fp16_row(const DevStream *s, int64_t t, int64_t S, int64_t R) {
    return kv_row(s->bits, t, S, R);
}

// Append n tokens to `layer`: k, v are device arrays [n][n_kv_heads * head_dim] (f32, RoPE
// applied). Groups leaving the window are quantized first, then the new rows are stored.
void cuda_kvcache_append(CudaKVCache *c, int layer, const float *k, const float *v, int n, cudaStream_t st);
// Fatal if an append met a non-finite or out-of-fp16 value (checked after a sync).
void cuda_kvcache_check_error(CudaKVCache *c);

// Scratch for the chunked attention: per query, head and chunk a (max, sum) pair and an
// unnormalised output row.
#define ATT_MAX_Q 16            // queries per launch
#define ATT_MAX_CHUNKS 256      // chunks per (query, head)
#define ATT_MAX_GQ 16           // query heads per KV head that one block serves
typedef struct {
    float2 *ml;                 // [ATT_MAX_Q][n_heads][ATT_MAX_CHUNKS]
    float *po;                  // [ATT_MAX_Q][n_heads][ATT_MAX_CHUNKS][head_dim]
} AttnScratch;
void build_attn_scratch(AttnScratch *a, int n_heads, int head_dim);
void free_attn_scratch(AttnScratch *a);
// Fatal (one line) if attention cannot run this shape on the GPU.
void cuda_attention_check_shape(int n_heads, int n_kv_heads, int head_dim, int64_t max_tokens);

// Query positions for cuda_attention (device arrays, f32).
typedef struct {
    const float *q;         // [n][n_heads * head_dim], RoPE applied
    const float *k, *v;     // [n][n_kv_heads * head_dim]: the positions' own keys and values
    int n, n_heads;
} AttnQueries;

// Attention of x->n query positions over `layer`: query i sees the first len0 + i tokens of
// the cache as it is now and then its own key and value, rounded to fp16 (the seed's timing,
// docs/DESIGN.md §3.3); out [n][n_heads*head_dim] as the output projection's input planes of
// dtype ot, `plane` elements apart (store_split).
void cuda_attention(const CudaKVCache *c, int layer, const AttnQueries *x, int64_t len0, void *out, DType ot,
                    size_t plane, AttnScratch *scr, cudaStream_t st);

#endif
