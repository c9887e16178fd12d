// kvstore.h: the storage of the KV cache, private to the code that writes and copies it:
// quant/kvcache.c, and kernels/cuda/kvcache_cuda.cu, which mirrors it in GPU memory. Readers
// use the view of quant/kvview.h, which also defines where each token is held (kv_regions)
// and the order of the packed groups.
#ifndef KVT_KVSTORE_H
#define KVT_KVSTORE_H

#include <stdint.h>
#include "kvcache.h"

typedef struct {
    int bits;             // 16, 8, 4, 2
    int per_channel;      // 1: KIVI per-channel groups of `group` tokens
    int group;            // elements per group (channels per token, or tokens per channel)
    int groups_per_token; // per-token streams: head_dim / group
    int64_t group_bytes;  // packed_bytes(group, bits)
    uint16_t *fp16;       // bits 16: [max_tokens][head_dim]; else [sink + R][head_dim]
    uint8_t *codes;       // [max groups][group_bytes]
    uint16_t *sm;         // [max groups][2]
} KVStream;

struct KVCache {
    KVSpec spec;          // own copy (bits array included)
    int64_t max_tokens;
    int64_t *len;         // [n_layers] tokens appended per layer
    KVStream *streams;    // [n_layers][n_kv_heads][2]: 0 = keys, 1 = values
};

static inline const KVStream *kv_stream(const KVCache *c, int layer, int head, int is_value) {
    return &c->streams[((int64_t)layer * c->spec.n_kv_heads + head) * 2 + is_value];
}

// Where the tokens of stream s are when its layer holds len tokens.
static inline KVRegions kv_stream_regions(const KVCache *c, const KVStream *s, int64_t len) {
    return kv_regions(s->bits, s->per_channel, len, c->spec.sink, c->spec.residual);
}

// Quantized tokens of stream s when its layer holds len tokens.
static inline int64_t kv_stream_n_quant(const KVCache *c, const KVStream *s, int64_t len) {
    KVRegions r = kv_stream_regions(c, s, len);
    return r.quant_end - r.sink_end;
}

// fp16 row of token t (which must be held in fp16).
static inline uint16_t *kv_fp16_row(const KVCache *c, const KVStream *s, int64_t t) {
    return s->fp16 + kv_row(s->bits, t, c->spec.sink, c->spec.residual) * c->spec.head_dim;
}

#endif
