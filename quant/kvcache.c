// kvcache.c: the KV cache — appending tokens, quantizing them as they leave the fp16
// window, and exact memory accounting. Where each token is held: kv_regions (kvview.h);
// storage: kvstore.h; the attention that reads it: kernels/attention.h.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kvcache.h"
#include "kvstore.h"
#include "quantize.h"
#include "hadamard.h"
#include "../util/util.h"

// ---- spec ----------------------------------------------------------------------------

void build_kvspec_uniform(KVSpec *s, int n_layers, int n_kv_heads, int head_dim, int k_bits, int v_bits) {
    memset(s, 0, sizeof(*s));
    s->n_layers = n_layers;
    s->n_kv_heads = n_kv_heads;
    s->head_dim = head_dim;
    s->bits = xcalloc((size_t)n_layers * (size_t)n_kv_heads, sizeof(KVBits));
    for (int64_t i = 0; i < (int64_t)n_layers * n_kv_heads; i++) s->bits[i] = (KVBits){ k_bits, v_bits };
    s->group = -1;                    // the pertoken preset (docs/DESIGN.md §3)
    s->residual = 0;
    s->key_axis = KEY_AXIS_TOKEN;
}

uint8_t *build_kvspec_rotate(KVSpec *s) {
    if (!s->rotate) s->rotate = xcalloc((size_t)s->n_layers, 1);
    return s->rotate;
}

void free_kvspec(KVSpec *s) {
    free(s->bits);
    free(s->rotate);
    s->bits = NULL;
    s->rotate = NULL;
}

static int valid_bits(int b) { return b == 16 || b == 8 || b == 4 || b == 2; }

void kvspec_validate(const KVSpec *s, const char *what) {
    if (s->n_layers <= 0 || s->n_kv_heads <= 0 || s->head_dim <= 0)
        fatal("%s: bad model shape (%d layers, %d kv heads, head_dim %d)", what, s->n_layers, s->n_kv_heads, s->head_dim);
    int any_key_quant = 0, any_value_quant = 0;
    for (int l = 0; l < s->n_layers; l++)
        for (int h = 0; h < s->n_kv_heads; h++) {
            KVBits b = s->bits[l * s->n_kv_heads + h];
            if (!valid_bits(b.k_bits) || !valid_bits(b.v_bits))
                fatal("%s: layer %d head %d: bits k%d v%d not in {2, 4, 8, 16}", what, l, h, b.k_bits, b.v_bits);
            any_key_quant |= b.k_bits != 16;
            any_value_quant |= b.v_bits != 16;
        }
    if (s->residual < 0) fatal("%s: residual length %d is negative", what, s->residual);
    if (s->sink < 0) fatal("%s: sink %d is negative", what, s->sink);
    if (s->group == 0 || s->group < -1) fatal("%s: group size %d must be positive or -1", what, s->group);
    for (int l = 0; s->rotate && l < s->n_layers; l++)
        if (s->rotate[l] && !hadamard_size_ok(s->head_dim))
            fatal("%s: layer %d: a rotated cache needs head_dim a power of two (it is %d)", what, l, s->head_dim);
    if (!any_key_quant && !any_value_quant) return;     // fp16 everywhere: grouping is irrelevant
    int per_channel = s->key_axis == KEY_AXIS_CHANNEL && any_key_quant;
    int per_token = any_value_quant || (any_key_quant && !per_channel);
    if (per_channel) {
        if (s->group == -1) fatal("%s: per-channel keys need a group size G > 0 (tokens per group)", what);
        if (s->residual == 0 || s->residual % s->group != 0)
            fatal("%s: per-channel keys need the residual length R (%d) to be a positive multiple of the group size G (%d)",
                  what, s->residual, s->group);
    }
    // Per-token groups split the head vector; values are always per token.
    if (per_token && s->group != -1 && s->head_dim % s->group != 0)
        fatal("%s: group size %d does not divide head_dim %d (per-token groups)", what, s->group, s->head_dim);
}

// ---- build / free ----------------------------------------------------------------------

static void *alloc_array(int64_t n, int64_t size, const char *what) {
    uint64_t bytes;
    if (n < 0 || mul_overflow_u64((uint64_t)n, (uint64_t)size, &bytes) || bytes > SIZE_MAX)
        fatal("kv cache: %s size overflows", what);
    return xcalloc(1, bytes ? (size_t)bytes : 1);
}

static void build_stream(KVStream *s, const KVSpec *spec, int bits, int per_channel, int64_t max_tokens) {
    int hd = spec->head_dim;
    s->bits = bits;
    s->per_channel = per_channel;
    if (bits == 16) {
        s->fp16 = alloc_array(max_tokens * hd, 2, "fp16 rows");
        return;
    }
    s->group = per_channel ? spec->group : (spec->group == -1 ? hd : spec->group);
    s->groups_per_token = per_channel ? 0 : hd / s->group;
    s->group_bytes = packed_bytes(s->group, bits);
    s->fp16 = alloc_array((int64_t)(spec->sink + spec->residual) * hd, 2, "fp16 window");
    // Capacity: every token could be quantized; per-channel blocks round up.
    int64_t max_groups = per_channel ? (max_tokens / s->group + 1) * hd : max_tokens * s->groups_per_token;
    s->codes = alloc_array(max_groups, s->group_bytes, "codes");
    s->sm = alloc_array(max_groups, 2 * sizeof(uint16_t), "scales");
}

KVCache *build_kvcache(const KVSpec *spec, int64_t max_tokens) {
    kvspec_validate(spec, "kv cache");
    if (max_tokens <= 0) fatal("kv cache: max_tokens %lld must be positive", (long long)max_tokens);
    KVCache *c = xcalloc(1, sizeof(KVCache));
    c->spec = *spec;
    int64_t n = (int64_t)spec->n_layers * spec->n_kv_heads;
    c->spec.bits = xmalloc((size_t)n * sizeof(KVBits));
    memcpy(c->spec.bits, spec->bits, (size_t)n * sizeof(KVBits));
    if (spec->rotate) {
        c->spec.rotate = xmalloc((size_t)spec->n_layers);
        memcpy(c->spec.rotate, spec->rotate, (size_t)spec->n_layers);
    }
    c->max_tokens = max_tokens;
    c->len = xcalloc((size_t)spec->n_layers, sizeof(int64_t));
    c->streams = xcalloc((size_t)n * 2, sizeof(KVStream));
    for (int64_t i = 0; i < n; i++) {
        build_stream(&c->streams[2 * i], spec, spec->bits[i].k_bits, spec->key_axis == KEY_AXIS_CHANNEL, max_tokens);
        build_stream(&c->streams[2 * i + 1], spec, spec->bits[i].v_bits, 0, max_tokens);
    }
    return c;
}

void free_kvcache(KVCache *c) {
    if (!c) return;
    int64_t n = (int64_t)c->spec.n_layers * c->spec.n_kv_heads * 2;
    for (int64_t i = 0; i < n; i++) {
        free(c->streams[i].fp16);
        free(c->streams[i].codes);
        free(c->streams[i].sm);
    }
    free(c->streams);
    free(c->len);
    free(c->spec.bits);
    free(c->spec.rotate);
    free(c);
}

void kvcache_reset(KVCache *c) {
    for (int l = 0; l < c->spec.n_layers; l++) c->len[l] = 0;
}

int64_t kvcache_len(const KVCache *c, int layer) { return c->len[layer]; }
int64_t kvcache_max_tokens(const KVCache *c) { return c->max_tokens; }
const KVSpec *kvcache_spec(const KVCache *c) { return &c->spec; }

// ---- append and quantize ---------------------------------------------------------------

static void quantize_fail(int layer, int head, int is_value, int64_t t) {
    fatal("kv cache: layer %d kv head %d %s at position %lld: group cannot be quantized (scale or offset beyond fp16)",
          layer, head, is_value ? "value" : "key", (long long)t);
}

// Quantize the fp16 row of token t (per-token stream) into its groups.
static void quantize_token(KVCache *c, KVStream *s, int layer, int head, int is_value, int64_t t, const uint16_t *row) {
    int hd = c->spec.head_dim;
    float x[hd];
    uint8_t u[hd];
    for (int i = 0; i < hd; i++) x[i] = fp16_to_fp32(row[i]);
    int64_t j = t - c->spec.sink;
    for (int g = 0; g < s->groups_per_token; g++) {
        int64_t gi = j * s->groups_per_token + g;
        if (quantize_group(x + g * s->group, s->group, s->bits, c->spec.symmetric, u, &s->sm[2 * gi], &s->sm[2 * gi + 1]))
            quantize_fail(layer, head, is_value, t);
        pack_codes(u, s->group, s->bits, s->codes + gi * s->group_bytes);
    }
}

// Per-channel keys: quantize tokens [t0, t1) of the window (whole blocks of G tokens), each
// channel of a block one group, reading their fp16 rows from the ring.
static void quantize_blocks(KVCache *c, KVStream *s, int layer, int head, int64_t t0, int64_t t1) {
    int hd = c->spec.head_dim, G = s->group;
    int64_t S = c->spec.sink;
    float x[G];
    uint8_t u[G];
    for (int64_t b = (t0 - S) / G; b < (t1 - S) / G; b++)
        for (int ch = 0; ch < hd; ch++) {
            for (int i = 0; i < G; i++) x[i] = fp16_to_fp32(kv_fp16_row(c, s, S + b * G + i)[ch]);
            int64_t gi = b * hd + ch;
            if (quantize_group(x, G, s->bits, c->spec.symmetric, u, &s->sm[2 * gi], &s->sm[2 * gi + 1]))
                quantize_fail(layer, head, 0, S + b * G);
            pack_codes(u, G, s->bits, s->codes + gi * s->group_bytes);
        }
}

// Token t joins the stream. The tokens that this append moves into the quantized region
// (kv_regions) are quantized, once, from their fp16 values: per token, the oldest window
// token (or, with R = 0, the new one); per channel, the R window tokens the new one completes.
static void append_stream(KVCache *c, KVStream *s, int layer, int head, int is_value, int64_t t, const uint16_t *row) {
    int hd = c->spec.head_dim;
    KVRegions before = kv_stream_regions(c, s, t), after = kv_stream_regions(c, s, t + 1);
    int64_t q0 = before.quant_end > after.sink_end ? before.quant_end : after.sink_end, q1 = after.quant_end;
    if (s->per_channel && q1 > q0) {           // the new row completes the blocks: store it, then quantize
        memcpy(kv_fp16_row(c, s, t), row, (size_t)hd * 2);
        quantize_blocks(c, s, layer, head, q0, q1);
        return;
    }
    // Per token, quantize first: the leaving token's ring slot is the one the new row takes.
    for (int64_t u = q0; u < q1; u++)
        quantize_token(c, s, layer, head, is_value, u, u == t ? row : kv_fp16_row(c, s, u));
    if (t < after.sink_end || t >= after.quant_end) memcpy(kv_fp16_row(c, s, t), row, (size_t)hd * 2);
}

void kvcache_append(KVCache *c, int layer, const float *k, const float *v) {
    if (layer < 0 || layer >= c->spec.n_layers) fatal("kv cache: layer %d out of range", layer);
    int64_t t = c->len[layer];
    if (t >= c->max_tokens)
        fatal("kv cache: context full at layer %d (%lld tokens; raise --ctx)", layer, (long long)c->max_tokens);
    int hd = c->spec.head_dim;
    uint16_t row[hd];
    for (int h = 0; h < c->spec.n_kv_heads; h++)
        for (int is_value = 0; is_value < 2; is_value++) {
            const float *x = (is_value ? v : k) + (int64_t)h * hd;
            for (int i = 0; i < hd; i++) {
                if (!isfinite(x[i]) || fabsf(x[i]) > 65504.0f)
                    fatal("kv cache: layer %d kv head %d %s at position %lld: element %d is %g (not finite or beyond fp16)",
                          layer, h, is_value ? "value" : "key", (long long)t, i, (double)x[i]);
                row[i] = fp32_to_fp16(x[i]);
            }
            append_stream(c, (KVStream *)kv_stream(c, layer, h, is_value), layer, h, is_value, t, row);
        }
    c->len[layer] = t + 1;
}

// ---- inspection --------------------------------------------------------------------------

int kvcache_is_quantized(const KVCache *c, int layer, int head, int is_value, int64_t t) {
    KVRegions r = kv_stream_regions(c, kv_stream(c, layer, head, is_value), c->len[layer]);
    return t >= r.sink_end && t < r.quant_end;
}

KVStreamView kvcache_view(const KVCache *c, int layer, int head, int is_value) {
    const KVStream *s = kv_stream(c, layer, head, is_value);
    KVStreamView v = { s->bits, s->per_channel, s->group, s->groups_per_token, c->spec.head_dim, s->group_bytes,
                       c->spec.sink, c->spec.residual, kv_stream_regions(c, s, c->len[layer]), s->fp16, s->codes, s->sm };
    return v;
}

void kvcache_read(const KVCache *c, int layer, int head, int is_value, int64_t t, float *out) {
    const KVStream *s = kv_stream(c, layer, head, is_value);
    int hd = c->spec.head_dim;
    if (t < 0 || t >= c->len[layer]) fatal("kv cache: read of position %lld beyond length", (long long)t);
    if (!kvcache_is_quantized(c, layer, head, is_value, t)) {
        const uint16_t *row = kv_fp16_row(c, s, t);
        for (int i = 0; i < hd; i++) out[i] = fp16_to_fp32(row[i]);
        return;
    }
    int64_t j = t - c->spec.sink;
    uint8_t u[s->per_channel ? s->group : hd];
    if (s->per_channel) {
        int64_t b = j / s->group;
        for (int ch = 0; ch < hd; ch++) {
            int64_t gi = b * hd + ch;
            float x[s->group];
            unpack_codes(s->codes + gi * s->group_bytes, s->group, s->bits, u);
            dequantize_group(u, s->group, s->sm[2 * gi], s->sm[2 * gi + 1], x);
            out[ch] = x[j % s->group];
        }
        return;
    }
    for (int g = 0; g < s->groups_per_token; g++) {
        int64_t gi = j * s->groups_per_token + g;
        unpack_codes(s->codes + gi * s->group_bytes, s->group, s->bits, u);
        dequantize_group(u, s->group, s->sm[2 * gi], s->sm[2 * gi + 1], out + g * s->group);
    }
}

int kvcache_equal(const KVCache *a, const KVCache *b) {
    const KVSpec *s = &a->spec;
    if (s->n_layers != b->spec.n_layers || s->n_kv_heads != b->spec.n_kv_heads || s->head_dim != b->spec.head_dim)
        return 0;
    int hd = s->head_dim;
    for (int l = 0; l < s->n_layers; l++) {
        if (a->len[l] != b->len[l]) return 0;
        for (int h = 0; h < s->n_kv_heads; h++)
            for (int v = 0; v < 2; v++) {
                const KVStream *x = kv_stream(a, l, h, v), *y = kv_stream(b, l, h, v);
                if (x->bits != y->bits) return 0;
                for (int64_t t = 0; t < a->len[l]; t++)          // fp16 rows in use
                    if (!kvcache_is_quantized(a, l, h, v, t) &&
                        memcmp(kv_fp16_row(a, x, t), kv_fp16_row(b, y, t), (size_t)hd * 2)) return 0;
                if (x->bits == 16) continue;
                int64_t nq = kv_stream_n_quant(a, x, a->len[l]);
                int64_t groups = x->per_channel ? nq / x->group * hd : nq * x->groups_per_token;
                if (memcmp(x->codes, y->codes, (size_t)(groups * x->group_bytes)) ||
                    memcmp(x->sm, y->sm, (size_t)groups * 4)) return 0;
            }
    }
    return 1;
}

// ---- copy ----------------------------------------------------------------------------------

static void copy_stream(const KVCache *src, KVStream *d, const KVStream *s, int64_t len) {
    int64_t hd = src->spec.head_dim, nq = kv_stream_n_quant(src, s, len);
    if (s->bits == 16) {                       // one fp16 row per position
        memcpy(d->fp16, s->fp16, (size_t)(len * hd * 2));
        return;
    }
    // the sink rows and the whole fp16 window ring (rows not yet used are harmless)
    memcpy(d->fp16, s->fp16, (size_t)((src->spec.sink + src->spec.residual) * hd * 2));
    int64_t groups = s->per_channel ? nq / s->group * hd : nq * s->groups_per_token;
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

// ---- memory accounting -------------------------------------------------------------------

static void stream_memory(const KVCache *c, const KVStream *s, int64_t len, KVMemory *m) {
    int hd = c->spec.head_dim;
    int64_t n_quant = kv_stream_n_quant(c, s, len), fp16_tokens = len - n_quant;
    m->fp16_bytes += (uint64_t)fp16_tokens * hd * 2;
    if (s->bits == 16) return;
    int64_t groups = s->per_channel ? n_quant / s->group * hd : n_quant * s->groups_per_token;
    m->code_bytes += (uint64_t)(groups * s->group_bytes);
    m->scale_bytes += (uint64_t)groups * 4;              // fp16 scale + fp16 offset per group
}

KVMemory kvcache_memory(const KVCache *c, int layer) {
    KVMemory m = {0};
    uint64_t elems = 0;
    for (int l = 0; l < c->spec.n_layers; l++) {
        if (layer >= 0 && l != layer) continue;
        for (int h = 0; h < c->spec.n_kv_heads; h++)
            for (int v = 0; v < 2; v++) stream_memory(c, kv_stream(c, l, h, v), c->len[l], &m);
        elems += (uint64_t)c->len[l] * c->spec.n_kv_heads * c->spec.head_dim * 2;
    }
    m.total = m.code_bytes + m.scale_bytes + m.fp16_bytes;
    m.bits_per_elem = elems ? 8.0 * (double)m.total / (double)elems : 0.0;
    return m;
}
