// kvstore.h: the storage layout of the KV cache, shared by quant/kvcache.c (which writes it)
// and kernels/attention.c (which reads it). Not part of the public API.
//
// One KVStream holds one KV head's keys or values for one layer. Its tokens, by position t:
//
//   [0, sink)                     fp16 rows, kept forever
//   [sink, sink + n_quant)        quantized (packed codes + fp16 scale/offset per group)
//   [sink + n_quant, len)         fp16 window, a ring of R rows: token t sits in row
//                                 (t - sink) mod R
//
// A 16-bit stream is just fp16 rows [max_tokens][head_dim], one per position.
//
// Quantized layouts (group_bytes = packed bytes of one group's codes):
//   per-token  (axis token): token j = t - sink, group g of its head vector is group
//              index j * groups_per_token + g, over channels [g*G, (g+1)*G).
//   per-channel (keys, KIVI): token j is in block b = j / G; channel c of block b is group
//              index b * head_dim + c, over tokens [b*G, (b+1)*G) of that channel.
// codes:  [n_groups][group_bytes];  sm: [n_groups][2] = fp16 scale, fp16 offset.
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
    int64_t n_quant;      // tokens quantized so far (positions sink .. sink + n_quant - 1)
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

// fp16 row of token t (which must be held in fp16).
static inline const uint16_t *kv_fp16_row(const KVCache *c, const KVStream *s, int64_t t) {
    int hd = c->spec.head_dim;
    if (s->bits == 16) return s->fp16 + t * hd;
    int64_t S = c->spec.sink;
    if (t < S) return s->fp16 + t * hd;
    return s->fp16 + (S + (t - S) % c->spec.residual) * hd;
}

#endif
