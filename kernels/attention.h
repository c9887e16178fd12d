// attention.h: attention of query positions over one layer of the (quantized) KV cache,
// softmax(q·K̂ᵀ/√d)·V̂ for every query head, where K̂ and V̂ are the cache's fp16 rows and
// dequantized groups x̂ = u·s + m (quant/kvview.h says where each token is held).
//
// Two implementations of the same function:
//   reference  kernels/attention_ref.c: one query head, token by token, in plain C. Read it
//              first; it is the tests' oracle and `./run --attention reference` runs it.
//   fast       kernels/attention.c (and attention_avx2.c, attention_vnni.c): scores and weighted values
//              computed on the packed codes without dequantizing them, the query rounded to
//              16-bit integers for integer dot products, split over threads in 128-token
//              chunks. It agrees with the reference within ATTN_TOLERANCE.
#ifndef KVT_ATTENTION_H
#define KVT_ATTENTION_H

#include "../quant/kvcache.h"
#include "../quant/kvview.h"

typedef enum {
    ATTN_FAST = 0,          // the fast path, in the best variant this CPU runs (the default)
    ATTN_REFERENCE = 1,     // kernels/attention_ref.c
    ATTN_FAST_PORTABLE = 2, // the fast path's plain C variant
    ATTN_FAST_AVX2 = 3,     // the fast path's AVX2 + FMA + F16C variant (x86-64)
    ATTN_FAST_VNNI = 4,     // the AVX2 variant with AVX-512 VNNI's int16 dot products (x86-64)
} AttnImpl;

// How far the fast path may be from the reference, per output element of a head:
// |fast − reference| <= ATTN_TOLERANCE · max |v̂| over the values that head attends to. Its
// own rounding (the 16-bit query, 2⁻¹⁶ of the largest query element; float sums in another
// order) is far below the fp16 rounding every cached value already carries (2⁻¹¹).
#define ATTN_TOLERANCE 1e-3f

// One layer's attention step for n consecutive positions (a prompt block, or one decode token).
typedef struct {
    const float *q;         // [n][n_heads * head_dim], RoPE applied
    const float *k, *v;     // [n][n_kv_heads * head_dim]: the positions' own keys and values
                            //   (attention_query: NULL, the position attends to the cache alone)
    float *out;             // [n][n_heads * head_dim]
    int n;                  // positions
    int n_heads;            // query heads, a multiple of the cache's KV heads (GQA)
} AttnRows;

// Position by position, in order: attend with its q over every cached token and over its own
// k and v as computed (rounded to fp16, as the cache stores them), then append its k and v to
// `layer` of the cache, where they are quantized if the cache's regions say so. This is the
// seed's timing (docs/DESIGN.md §3.3): a token sees itself unquantized, every earlier token as
// stored. A batch of positions gives exactly the cache and the outputs that one call per
// position gives.
void attention_layer(KVCache *c, int layer, const AttnRows *x, AttnImpl impl);

// One query position (x->n == 1) over `layer` as the cache holds it, and over x->k, x->v if
// they are given, as attention_layer's attention step; nothing is appended.
void attention_query(const KVCache *c, int layer, const AttnRows *x, AttnImpl impl);

// The reference for one query head q [head_dim] over every token of one KV head's key and
// value streams, and then over the position's own key and value rows own_k, own_v [head_dim]
// (fp16-rounded; NULL: none): out [head_dim] (kernels/attention_ref.c).
void attention_ref_head(const KVStreamView *k, const KVStreamView *v, const float *own_k, const float *own_v,
                        const float *q, float *out);

// 1 if this machine runs `impl` (ATTN_FAST_AVX2 needs AVX2, FMA and F16C; ATTN_FAST_VNNI
// also AVX-512F, VL and VNNI).
int attention_available(AttnImpl impl);
// "reference", "fast (avx512vnni)", "fast (avx2)", "fast (portable)": what `impl` runs here.
const char *attention_name(AttnImpl impl);

#endif
