// kvsnap.c: kvcache_copy (kvsnap.h). Layout facts from quant/kvstore.h.
#include "kvsnap.h"
#include "../quant/kvstore.h"
#include "../util/util.h"

#include <string.h>

static void copy_stream(const KVCache *src, KVStream *d, const KVStream *s, int64_t len) {
    int64_t hd = src->spec.head_dim;
    d->n_quant = s->n_quant;
    if (s->bits == 16) {                       // one fp16 row per position
        memcpy(d->fp16, s->fp16, (size_t)(len * hd * 2));
        return;
    }
    // the sink rows and the whole fp16 window ring (rows not yet used are harmless)
    memcpy(d->fp16, s->fp16, (size_t)((src->spec.sink + src->spec.residual) * hd * 2));
    int64_t groups = s->per_channel ? s->n_quant / s->group * hd : s->n_quant * s->groups_per_token;
    memcpy(d->codes, s->codes, (size_t)(groups * s->group_bytes));
    memcpy(d->sm, s->sm, (size_t)groups * 4);
}

void kvcache_copy(KVCache *dst, const KVCache *src) {
    const KVSpec *a = &src->spec, *b = &dst->spec;
    int64_t n = (int64_t)a->n_layers * a->n_kv_heads;
    if (a->n_layers != b->n_layers || a->n_kv_heads != b->n_kv_heads || a->head_dim != b->head_dim ||
        a->group != b->group || a->residual != b->residual || a->key_axis != b->key_axis ||
        a->symmetric != b->symmetric || a->sink != b->sink || src->max_tokens != dst->max_tokens ||
        memcmp(a->bits, b->bits, (size_t)n * sizeof(KVBits)))
        fatal("kvcache_copy: the two caches differ in spec or capacity");
    for (int l = 0; l < a->n_layers; l++) {
        dst->len[l] = src->len[l];
        for (int h = 0; h < a->n_kv_heads; h++)
            for (int v = 0; v < 2; v++)
                copy_stream(src, (KVStream *)kv_stream(dst, l, h, v), kv_stream(src, l, h, v), src->len[l]);
    }
}
