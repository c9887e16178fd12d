// kvcache.h: the (quantized) KV cache. fp16 is the baseline; K and V may each be stored
// at 8, 4 or 2 bits per element, per layer and per KV head (KVTuner, Li et al. 2025).
//
// Token life cycle (docs/DESIGN.md §3; kv_regions in kvview.h is its one definition), per layer,
// per KV head, separately for K and V:
//   - the first `sink` tokens stay fp16 forever;
//   - a new token enters an fp16 window; per-token streams keep the R most recent tokens
//     there and quantize the oldest as it leaves (R = 0: quantize on append); per-channel
//     keys (KIVI) gather R tokens and then quantize all R at once, in blocks of G tokens;
//   - a quantized token is never requantized. Quantization reads the token's fp16 value.
// A position attends before its K/V are appended (kernels/attention.h), so it sees itself
// unquantized and every earlier token as stored (docs/DESIGN.md §3.3).
// Every stored value is first rounded to fp16, so the fp16 baseline and the quantizers see
// the same numbers. A non-finite K/V element, or one beyond the fp16 range, is fatal.
#ifndef KVT_KVCACHE_H
#define KVT_KVCACHE_H

#include <stdint.h>
#include "kvview.h"

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
    uint8_t *rotate;    // [n_layers] 1: the layer's q, k, v are Hadamard-rotated (quant/kvrotate.h);
                        //   NULL: no layer is. Owned like `bits` (build_kvspec_rotate, free_kvspec)
} KVSpec;

typedef struct KVCache KVCache;

// A spec with every layer and head at the same bits (16,16 = fp16 baseline), with the
// pertoken grouping (G = -1, R = 0, asymmetric, no sink); callers may then edit fields.
void build_kvspec_uniform(KVSpec *s, int n_layers, int n_kv_heads, int head_dim, int k_bits, int v_bits);
void free_kvspec(KVSpec *s);
// Give s a rotate array (all 0) if it has none, and return it.
uint8_t *build_kvspec_rotate(KVSpec *s);
// Check a spec for consistency (bits in the set, G divides head_dim for per-token groups,
// R a positive multiple of G for per-channel keys, ...): fatal naming `what` and the problem.
void kvspec_validate(const KVSpec *s, const char *what);

KVCache *build_kvcache(const KVSpec *spec, int64_t max_tokens);
void free_kvcache(KVCache *c);
void kvcache_reset(KVCache *c);                   // empty, keep allocation

// Append one token's keys and values for one layer: k, v are [n_kv_heads * head_dim].
// The token joins the fp16 window; tokens leaving the window are quantized (once).
void kvcache_append(KVCache *c, int layer, const float *k, const float *v);
int64_t kvcache_len(const KVCache *c, int layer);
int64_t kvcache_max_tokens(const KVCache *c);
const KVSpec *kvcache_spec(const KVCache *c);

// Exact bytes in use for the current contents (codes + scales/offsets + fp16 window).
// bits_per_elem = 8 * total / (number of K and V elements held).
typedef struct { uint64_t code_bytes, scale_bytes, fp16_bytes, total; double bits_per_elem; } KVMemory;
KVMemory kvcache_memory(const KVCache *c, int layer /* -1 = all layers */);

// The stream of KV head `head` (keys, or values if is_value) of `layer` as it stands: its
// layout and where each token is (quant/kvview.h). The attention reads the cache through it.
KVStreamView kvcache_view(const KVCache *c, int layer, int head, int is_value);

// ---- inspection (tests, tools) -------------------------------------------------------
// 1 if token t of (layer, head, K or V) is currently quantized, 0 if it is held in fp16.
int kvcache_is_quantized(const KVCache *c, int layer, int head, int is_value, int64_t t);
// The value attention sees for token t of (layer, head, K or V): out[head_dim].
void kvcache_read(const KVCache *c, int layer, int head, int is_value, int64_t t, float *out);
// 1 if the two caches (same spec and capacity) hold byte-identical contents.
int kvcache_equal(const KVCache *a, const KVCache *b);

// ---- copy (the benchmarks prefill a shared prefix once and restore it per continuation) ----
// dst := src. Both built by build_kvcache from equal specs with equal max_tokens (fatal otherwise).
// Copies only what is in use: lengths, quantized groups, fp16 rows / windows.
void kvcache_copy(KVCache *dst, const KVCache *src);

#endif
