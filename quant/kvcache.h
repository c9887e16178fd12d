// kvcache.h: the (quantized) KV cache. fp16 is the baseline; K and V may each be stored
// at 8, 4 or 2 bits per element, per layer and per KV head (KVTuner, Li et al. 2025).
#ifndef KVT_KVCACHE_H
#define KVT_KVCACHE_H

#include <stdint.h>

typedef enum { KEY_AXIS_TOKEN = 0, KEY_AXIS_CHANNEL = 1 } KeyAxis;

typedef struct { int k_bits, v_bits; } KVBits;   // each in {16, 8, 4, 2}; 16 = fp16

typedef struct {
    int n_layers, n_kv_heads, head_dim;
    KVBits *bits;       // [n_layers][n_kv_heads]
    int group;          // G: per-token group size (-1 = whole head vector) / per-channel tokens per group
    int residual;       // R: most recent tokens kept fp16
    int key_axis;       // KeyAxis for keys; values are always per token
    int symmetric;      // 0 asymmetric (default), 1 symmetric
    int sink;           // first N tokens kept fp16 forever
} KVSpec;

typedef struct KVCache KVCache;

// A spec with every layer and head at the same bits (16,16 = fp16 baseline).
void build_kvspec_uniform(KVSpec *s, int n_layers, int n_kv_heads, int head_dim, int k_bits, int v_bits);
void free_kvspec(KVSpec *s);

KVCache *build_kvcache(const KVSpec *spec, int64_t max_tokens);
void free_kvcache(KVCache *c);
void kvcache_reset(KVCache *c);                   // empty, keep allocation

// Append one token's keys and values for one layer: k, v are [n_kv_heads * head_dim].
// The token joins the fp16 window; tokens leaving the window are quantized (once).
void kvcache_append(KVCache *c, int layer, const float *k, const float *v);
int64_t kvcache_len(const KVCache *c, int layer);
const KVSpec *kvcache_spec(const KVCache *c);

// Exact bytes in use for the current contents (codes + scales/offsets + fp16 window).
typedef struct { uint64_t code_bytes, scale_bytes, fp16_bytes, total; double bits_per_elem; } KVMemory;
KVMemory kvcache_memory(const KVCache *c, int layer /* -1 = all layers */);

// Attention of one query position over every cached token of `layer`:
// q [n_heads * head_dim] (RoPE applied), out [n_heads * head_dim].
// att is scratch of [n_heads * max_tokens] floats. Heads run in parallel (OpenMP).
void kvcache_attention(const KVCache *c, int layer, const float *q, int n_heads, float *out, float *att);

#endif
