// kvview.h: where the KV cache holds each token, and a read-only view of one stream (one
// KV head's keys or values of one layer) for code that reads the packed layout in place:
// the attention (kernels/attention_ref.c, kernels/attention.c) and the GPU cache, which keeps
// the same layout on the device (kernels/cuda/kvcache_cuda.h).
//
// A stream's tokens, by position t, fall in three regions (docs/DESIGN.md §3):
//
//   [0, sink_end)          fp16 rows kept as they are: the attention sink, or, in a 16-bit
//                          stream, every token (row t of `rows`)
//   [sink_end, quant_end)  quantized: per group, packed codes u and an fp16 scale s and
//                          offset m, so that x̂ = u·s + m (quant/quantize.h)
//   [quant_end, len)       the fp16 window, a ring of R rows after the sink's: token t sits
//                          in row S + (t - S) mod R
//
// kv_regions() is the one definition of these boundaries: the CPU cache quantizes a token
// when an append moves quant_end past it (quant/kvcache.c), the attention reads each region
// its own way, and the CUDA cache computes the same boundaries on the device. Tokens below
// quant_end never change again; the window is rewritten as tokens leave it.
//
// Packed groups (group_bytes bytes of codes each, one (s, m) pair of fp16 each):
//   per-token streams: quantized token j = t - S has groups_per_token groups, group g over
//     channels [g·G, (g+1)·G) at index j·groups_per_token + g;
//   per-channel keys (KIVI): token j is in block b = j / G; channel c of block b is the
//     group at index b·head_dim + c, holding that channel of the block's G tokens.
// Code i of a group sits in byte i / (8 / bits), low bits first (kv_code).
#ifndef KVT_KVVIEW_H
#define KVT_KVVIEW_H

#include <stdint.h>

// Callable from CUDA device code too (the GPU cache uses the same rules).
#ifdef __CUDACC__
#define KV_HOST_DEVICE __host__ __device__
#else
#define KV_HOST_DEVICE
#endif

typedef struct {
    int64_t sink_end;     // [0, sink_end): fp16 rows kept as they are
    int64_t quant_end;    // [sink_end, quant_end): quantized
    int64_t len;          // [quant_end, len): the fp16 window
} KVRegions;

// The regions of a stream of `bits` (16 = fp16) holding len tokens, with sink S and residual
// window R. Per-token streams keep the R most recent tokens in fp16 (R = 0: quantize on
// append); per-channel keys gather R tokens and quantize them together (R a multiple of G).
KV_HOST_DEVICE static inline KVRegions kv_regions(int bits, int per_channel, int64_t len, int64_t S, int64_t R) {
    KVRegions r;
    r.len = len;
    r.sink_end = bits == 16 || len < S ? len : S;
    int64_t past = len - r.sink_end;                        // tokens after the sink
    int64_t n_quant = per_channel ? past / (R > 0 ? R : 1) * R : (past > R ? past - R : 0);
    r.quant_end = bits == 16 ? len : r.sink_end + n_quant;
    return r;
}

// Row of fp16 token t (sink, window or 16-bit stream) in the stream's array of rows.
KV_HOST_DEVICE static inline int64_t kv_row(int bits, int64_t t, int64_t S, int64_t R) {
    return bits == 16 || t < S ? t : S + (t - S) % R;
}

// Code i of a packed group of `bits`-bit codes.
KV_HOST_DEVICE static inline unsigned kv_code(const uint8_t *group, int i, int bits) {
    int per_byte = 8 / bits;
    return (group[i / per_byte] >> ((i % per_byte) * bits)) & ((1u << bits) - 1);
}

// One stream as the cache holds it now (kvcache_view in quant/kvcache.h makes one). The
// pointers stay valid while the cache lives; the regions hold until the next append.
typedef struct {
    int bits;               // 16 (fp16), 8, 4, 2
    int per_channel;        // 1: KIVI keys, a group is G tokens of one channel
    int group;              // G: channels of one token per group, or tokens per group (per channel)
    int groups_per_token;   // per-token streams: head_dim / G
    int head_dim;
    int64_t group_bytes;    // packed bytes of one group's codes
    int64_t sink, residual; // S and R
    KVRegions r;            // where each token is, for the current length r.len
    const uint16_t *rows;   // fp16 rows: [len][head_dim] (16-bit) or [S + R][head_dim] (sink, ring)
    const uint8_t *codes;   // [groups][group_bytes]
    const uint16_t *sm;     // [groups][2]: fp16 scale s, fp16 offset m
} KVStreamView;

static inline int kv_is_quantized(const KVStreamView *s, int64_t t) {
    return t >= s->r.sink_end && t < s->r.quant_end;
}

// The fp16 row of token t (which must not be quantized).
static inline const uint16_t *kv_fp16(const KVStreamView *s, int64_t t) {
    return s->rows + kv_row(s->bits, t, s->sink, s->residual) * s->head_dim;
}

// Tokens from t on (up to end) held the same way and contiguously in memory: fp16 rows up to
// the end of the sink, quantized tokens up to the window, window rows up to where the ring wraps.
static inline int64_t kv_run(const KVStreamView *s, int64_t t, int64_t end) {
    int64_t stop = t < s->r.sink_end ? s->r.sink_end
                 : t < s->r.quant_end ? s->r.quant_end
                 : t + (s->residual - (t - s->sink) % s->residual);
    return (stop < end ? stop : end) - t;
}

// The group holding channel c of quantized token t, and the code's index in it.
static inline int64_t kv_group_of(const KVStreamView *s, int64_t t, int c, int *index) {
    int64_t j = t - s->sink;
    if (s->per_channel) {
        *index = (int)(j % s->group);
        return j / s->group * s->head_dim + c;
    }
    *index = c % s->group;
    return j * s->groups_per_token + c / s->group;
}

#endif
