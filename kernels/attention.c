// attention.c: one query position attending over the (quantized) KV cache of one layer.
//
// The cache is read where it lies (layout in quant/kvstore.h), a tile of at most 32 tokens at
// a time: fp16 rows are converted, quantized groups unpacked and mapped through x̂ = u·s + m
// (quant/quantize.h) into a small float buffer that stays in L1, and the scores and the
// weighted sum of values are computed from it. No dequantized copy of the cache ever exists;
// the buffer holds 32 tokens of one head (8 KB at head_dim 64). Per-channel key blocks (KIVI)
// are unpacked channel by channel, each group holding the G tokens of one channel.
// Decode is bound by memory traffic, so each KV head's data is read once for all the query
// heads that share it (GQA), and the work is split over (KV head, token chunk) pairs so that
// a few KV heads still keep every core busy: each pair computes its chunk's scores, softmax
// (with its own max and sum) and weighted values in one go, and the chunks are merged at the
// end. Chunking depends only on the context length and the merge runs in a fixed order, so
// results are deterministic, which keeps batched prefill and token-by-token decoding
// bit-identical (docs/DESIGN.md §3).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../quant/kvcache.h"
#include "../quant/kvstore.h"
#include "../util/util.h"

// The tile loops below are plain C that the compiler vectorizes. Built for the x86-64 baseline
// they get 4-wide SSE2; stream_range is also compiled a second time for AVX2+FMA+F16C, and the
// copy to use is chosen once by the CPU it runs on (as kernels.c does for matmul). Prefill and
// decode go through the same copy, so they stay bit-identical on a given machine.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KVT_PORTABLE)
#define KVT_X86 1
#endif
#define INLINE static inline __attribute__((always_inline))

#ifdef _OPENMP
#define SIMD _Pragma("omp simd")
#define SIMD_SUM _Pragma("omp simd reduction(+:acc)")
#define SIMD_SUM4 _Pragma("omp simd reduction(+:a0,a1,a2,a3)")
#else
#define SIMD_SUM4
#define SIMD
#define SIMD_SUM
#endif

// fp16 -> fp32 for the finite values the cache holds (it refuses inf/NaN on append): move
// exponent and mantissa into place and rebias by multiplying by 2^(127-15). Branch-free, so
// it vectorizes; subnormals come out right because the product is exact.
static inline float h2f(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)(h & 0x7fff) << 13 };
    v.f *= 0x1p112f;
    v.u |= (uint32_t)(h & 0x8000) << 16;
    return v.f;
}

static void row_to_f32(const uint16_t *row, float *x, int n) {
    SIMD for (int i = 0; i < n; i++) x[i] = h2f(row[i]);
}

// codes2[b] = the four 2-bit codes of byte b, as floats (built by the preprocessor).
#define C2(b) { (float)((b) & 3), (float)(((b) >> 2) & 3), (float)(((b) >> 4) & 3), (float)((b) >> 6) }
#define C2x4(b) C2(b), C2((b) + 1), C2((b) + 2), C2((b) + 3)
#define C2x16(b) C2x4(b), C2x4((b) + 4), C2x4((b) + 8), C2x4((b) + 12)
#define C2x64(b) C2x16(b), C2x16((b) + 16), C2x16((b) + 32), C2x16((b) + 48)
static const float codes2[256][4] = { C2x64(0), C2x64(64), C2x64(128), C2x64(192) };

// Dequantize one packed group of n codes into x[i] = u_i·s + m (bit order as quant/quantize.c:
// code i in byte i/(8/bits), low bits first). The loops over whole bytes vectorize.
INLINE void dequant_group(const uint8_t *p, int n, int bits, float s, float m, float *x) {
    int i = 0;
    if (bits == 8) {
        SIMD for (int k = 0; k < n; k++) x[k] = (float)p[k] * s + m;
        return;
    }
    if (bits == 4) {
        SIMD for (int k = 0; k < n / 2; k++) {
            x[2 * k] = (float)(p[k] & 15) * s + m;
            x[2 * k + 1] = (float)(p[k] >> 4) * s + m;
        }
        i = n / 2 * 2;
    } else {                                 // 2 bits: a table gives the byte's 4 codes at once
        for (int k = 0; k < n / 4; k++) {
            const float *u = codes2[p[k]];
            SIMD for (int j = 0; j < 4; j++) x[4 * k + j] = u[j] * s + m;
        }
        i = n / 4 * 4;
    }
    int per_byte = 8 / bits;
    for (; i < n; i++) x[i] = (float)((p[i / per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1)) * s + m;
}

static inline float dot(const float *a, const float *b, int n) {
    float acc = 0.0f;
    SIMD_SUM for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

// ---- tiles: up to TILE tokens of one stream, dequantized into a small float buffer -----------

enum { TILE = 32 };

// Load tokens [t, ...) of stream s into buf[n][hd] and return n >= 1: at most TILE tokens,
// never past t_end or the end of t's region (sink / quantized / window), so each tile is read
// with one method. (Per-channel key blocks are read by block_scores instead.)
INLINE int64_t load_tile(const KVCache *c, const KVStream *s, int64_t t, int64_t t_end, float *buf) {
    int hd = c->spec.head_dim;
    int64_t S = c->spec.sink, q1 = S + s->n_quant, end = t + TILE < t_end ? t + TILE : t_end;
    if (s->bits == 16 || t < S || t >= q1) {                // fp16 rows, contiguous up to `end`
        if (s->bits != 16 && t < S && end > S) end = S;     // the sink
        if (s->bits != 16 && t >= q1) {                     // the window ring: stop where it wraps
            int64_t R = c->spec.residual, wrap = t + (R - (t - S) % R);
            if (end > wrap) end = wrap;
        }
        row_to_f32(kv_fp16_row(c, s, t), buf, (int)((end - t) * hd));
        return end - t;
    }
    if (end > q1) end = q1;
    int G = s->group;
    int64_t n = end - t, ng = s->groups_per_token, gi0 = (t - S) * ng;
    for (int64_t g = 0; g < n * ng; g++)                    // group g of the tile: channels of one token
        dequant_group(s->codes + (gi0 + g) * s->group_bytes, G, s->bits, h2f(s->sm[2 * (gi0 + g)]),
                      h2f(s->sm[2 * (gi0 + g) + 1]), buf + g * G);
    return n;
}

// The query heads sharing one KV head: q[h*hd ..], and the score of token t for head h < gq
// at att[h*ld + t - base] (base: the first token the att rows hold).
typedef struct { const float *q; float *att; int64_t ld; int gq, hd; int64_t base; } HeadGroup;

// att[h][t0 + j] = q_h · k_j for the n keys of a tile; four keys at a time (four independent
// sums, and each q element loaded once for four keys).
INLINE void tile_scores(const HeadGroup *g, const float *k, int64_t n, int64_t t0) {
    int hd = g->hd;
    for (int h = 0; h < g->gq; h++) {
        const float *q = g->q + h * hd;
        float *att = g->att + h * g->ld + (t0 - g->base);
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const float *k0 = k + j * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            SIMD_SUM4 for (int i = 0; i < hd; i++) { a0 += q[i] * k0[i]; a1 += q[i] * k1[i]; a2 += q[i] * k2[i]; a3 += q[i] * k3[i]; }
            att[j] = a0; att[j + 1] = a1; att[j + 2] = a2; att[j + 3] = a3;
        }
        for (; j < n; j++) att[j] = dot(q, k + j * hd, hd);
    }
}

// out[h] += Σ_j att[h][t0 + j] · v_j for the n values of a tile; four values per pass over
// out, so out is loaded and stored a quarter as often.
INLINE void tile_values(const HeadGroup *g, const float *v, int64_t n, int64_t t0, float *out) {
    int hd = g->hd;
    for (int h = 0; h < g->gq; h++) {
        const float *p = g->att + h * g->ld + (t0 - g->base);
        float *o = out + h * hd;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const float *v0 = v + j * hd, *v1 = v0 + hd, *v2 = v1 + hd, *v3 = v2 + hd;
            float p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
            SIMD for (int i = 0; i < hd; i++) o[i] += p0 * v0[i] + p1 * v1[i] + p2 * v2[i] + p3 * v3[i];
        }
        for (; j < n; j++) {
            float pj = p[j];
            const float *vj = v + j * hd;
            SIMD for (int i = 0; i < hd; i++) o[i] += pj * vj[i];
        }
    }
}

// Per-channel keys (KIVI): the block of G tokens holding token t, dequantized channel by
// channel into kb[c][i] (G·head_dim floats, 8 KB for G 32, head_dim 64): a group is one
// channel of the block's G tokens. Returns the block's first token.
INLINE int64_t block_load(const KVCache *c, const KVStream *s, int64_t t, float *kb) {
    int G = s->group, hd = c->spec.head_dim;
    int64_t b = (t - c->spec.sink) / G;
    for (int ch = 0; ch < hd; ch++) {
        int64_t gi = b * hd + ch;
        dequant_group(s->codes + gi * s->group_bytes, G, s->bits, h2f(s->sm[2 * gi]), h2f(s->sm[2 * gi + 1]), kb + ch * G);
    }
    return c->spec.sink + b * G;
}

// Scores of the block's tokens [t, end) from kb: score[i] = Σ_c q[c]·kb[c][i], eight tokens
// at a time so the sums stay in registers.
INLINE void block_scores(const HeadGroup *g, const float *kb, int G, int64_t b0, int64_t t, int64_t end) {
    int hd = g->hd, i0 = (int)(t - b0), i1 = (int)(end - b0);
    for (int h = 0; h < g->gq; h++) {
        const float *q = g->q + h * hd;
        float *att = g->att + h * g->ld + (t - g->base);       // att[i - i0]: token b0 + i
        int i = i0;
        for (; i + 8 <= i1; i += 8) {
            float acc[8] = { 0 };
            for (int ch = 0; ch < hd; ch++) {
                const float *k = kb + ch * G + i;
                float qc = q[ch];
                SIMD for (int j = 0; j < 8; j++) acc[j] += qc * k[j];
            }
            for (int j = 0; j < 8; j++) att[i - i0 + j] = acc[j];
        }
        for (; i < i1; i++) {
            float acc = 0.0f;
            for (int ch = 0; ch < hd; ch++) acc += q[ch] * kb[ch * G + i];
            att[i - i0] = acc;
        }
    }
}

// One pass over tokens [t0, t1) of stream s for nq queries: keys (out == NULL: scores) or
// values (out[i]: accumulate for query i). Each tile or block is dequantized once and then
// used by every query, which is what makes block prefill cheaper than one query at a time;
// each query's arithmetic is the same whatever nq is.
INLINE void stream_range_body(const KVCache *c, const KVStream *s, const HeadGroup *g, int nq, float *const *out,
                              int64_t t0, int64_t t1) {
    int hd = g->hd;
    int64_t q0 = c->spec.sink, q1 = q0 + s->n_quant;
    if (s->per_channel && s->bits != 16) {
        float kb[hd * s->group];
        for (int64_t t = t0; t < t1;) {
            if (t >= q0 && t < q1) {                                   // (keys only: scores)
                int64_t b0 = block_load(c, s, t, kb), end = b0 + s->group < t1 ? b0 + s->group : t1;
                for (int i = 0; i < nq; i++) block_scores(&g[i], kb, s->group, b0, t, end);
                t = end;
                continue;
            }
            float buf[TILE * hd];
            int64_t n = load_tile(c, s, t, t1, buf);
            for (int i = 0; i < nq; i++) tile_scores(&g[i], buf, n, t);
            t += n;
        }
        return;
    }
    float buf[TILE * hd];
    for (int64_t t = t0; t < t1;) {
        int64_t n = load_tile(c, s, t, t1, buf);
        for (int i = 0; i < nq; i++) {
            if (out) tile_values(&g[i], buf, n, t, out[i]);
            else tile_scores(&g[i], buf, n, t);
        }
        t += n;
    }
}

static void stream_range_base(const KVCache *c, const KVStream *s, const HeadGroup *g, int nq, float *const *out,
                              int64_t t0, int64_t t1) {
    stream_range_body(c, s, g, nq, out, t0, t1);
}

#ifdef KVT_X86
__attribute__((target("avx2,fma,f16c")))
static void stream_range_avx2(const KVCache *c, const KVStream *s, const HeadGroup *g, int nq, float *const *out,
                              int64_t t0, int64_t t1) {
    stream_range_body(c, s, g, nq, out, t0, t1);
}
#endif

typedef void (*StreamRangeFn)(const KVCache *, const KVStream *, const HeadGroup *, int, float *const *, int64_t, int64_t);

static StreamRangeFn pick_stream_range(void) {
#ifdef KVT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return stream_range_avx2;
#endif
    return stream_range_base;
}

// ---- the layer's attention -------------------------------------------------------------------
//
// Split-K ("flash decoding"): the cache is cut into chunks of CHUNK tokens at fixed positions
// (chunk c holds tokens [c·CHUNK, (c+1)·CHUNK)), and each (KV head, chunk) work item runs
// softmax over its own chunk, keeping the chunk's max and sum, and leaves an unnormalized
// partial output; the chunks are then merged, rescaled to the global max, in chunk order. One
// pass over the cache, one fork/join, and a result that depends on nothing but the data.
// Because chunk boundaries are fixed, a chunk that is complete and already quantized (or
// fp16 for good) when a block of prompt tokens arrives is the same for every query of the
// block: block prefill computes those chunks for all the block's queries at once, reading
// each packed tile once, and the rest (the fp16 window, the last chunk) query by query.

enum { CHUNK = 128 };

// Scores, chunk softmax and weighted values of tokens [t0, t1) of KV head kh for nq queries
// whose heads of this KV head start at q[i]. o[i]: partial output [gq][hd] (unnormalized),
// st[i]: [gq][2] chunk max and sum. att: scores scratch, query i's head h at
// att[(i·gq + h)·ld + t - base].
static void attend_chunk(StreamRangeFn stream_range, const KVCache *c, int layer, int kh, int gq, int64_t t0,
                         int64_t t1, int nq, const float *const *q, float *att, int64_t ld, int64_t base,
                         float *const *o, float *const *st) {
    int hd = c->spec.head_dim;
    float scale = 1.0f / sqrtf((float)hd);
    if (nq < 1) return;
    HeadGroup g[nq];
    for (int i = 0; i < nq; i++) g[i] = (HeadGroup){q[i], att + (int64_t)i * gq * ld, ld, gq, hd, base};
    stream_range(c, kv_stream(c, layer, kh, 0), g, nq, NULL, t0, t1);          // scores
    for (int i = 0; i < nq; i++) {
        memset(o[i], 0, sizeof(float) * (size_t)(gq * hd));
        for (int h = 0; h < gq; h++) {                                           // chunk softmax
            float *a = g[i].att + h * ld, mx = -INFINITY, total = 0.0f;
            for (int64_t t = t0 - base; t < t1 - base; t++) { a[t] *= scale; if (a[t] > mx) mx = a[t]; }
            for (int64_t t = t0 - base; t < t1 - base; t++) { a[t] = expf(a[t] - mx); total += a[t]; }
            st[i][2 * h] = mx; st[i][2 * h + 1] = total;
        }
    }
    stream_range(c, kv_stream(c, layer, kh, 1), g, nq, o, t0, t1);             // Σ p·v
}

// Chunk partials of one query: part[(kh·stride + ch)·gq + h][hd], stat[...][2].
typedef struct { float *part, *stat; int64_t stride; } Partials;

static float *part_o(const Partials *p, int kh, int64_t ch, int gq, int hd) { return p->part + ((kh * p->stride + ch) * gq) * hd; }
static float *part_st(const Partials *p, int kh, int64_t ch, int gq) { return p->stat + ((kh * p->stride + ch) * gq) * 2; }

// out[kh][h] = Σ_ch w_ch · o_ch / Σ_ch w_ch · sum_ch with w_ch = exp(max_ch - max), in chunk order.
static void merge_chunks(const Partials *p, int n_kv, int gq, int hd, int64_t n_chunks, float *out) {
    for (int kh = 0; kh < n_kv; kh++)
        for (int h = 0; h < gq; h++) {
            float *o = out + ((int64_t)kh * gq + h) * hd, mx = -INFINITY, total = 0.0f;
            for (int64_t ch = 0; ch < n_chunks; ch++) {
                float m = part_st(p, kh, ch, gq)[2 * h];
                if (m > mx) mx = m;
            }
            memset(o, 0, sizeof(float) * (size_t)hd);
            for (int64_t ch = 0; ch < n_chunks; ch++) {
                const float *st = part_st(p, kh, ch, gq) + 2 * h;
                if (st[0] == -INFINITY) continue;
                float w = expf(st[0] - mx);
                total += w * st[1];
                const float *po = part_o(p, kh, ch, gq, hd) + (int64_t)h * hd;
                for (int k = 0; k < hd; k++) o[k] += w * po[k];
            }
            float inv = 1.0f / total;
            for (int k = 0; k < hd; k++) o[k] *= inv;
        }
}

// One query over the chunks [from[kh], n_chunks) of each KV head (the others are in p
// already), then the merge. att: [n_heads][max_tokens] scratch.
static void attend_query(const KVCache *c, int layer, const float *q, int gq, const int64_t *from, Partials *p,
                         float *att, float *out) {
    const KVSpec *sp = &c->spec;
    int hd = sp->head_dim, n_kv = sp->n_kv_heads;
    int64_t T = c->len[layer], ld = c->max_tokens, n_chunks = (T + CHUNK - 1) / CHUNK;
    StreamRangeFn stream_range = pick_stream_range();
    int64_t n_items = 0;
    for (int kh = 0; kh < n_kv; kh++) n_items += n_chunks - from[kh];
    // Threads only pay off with enough rows to read: below ~1k (token, KV head) rows the
    // fork/join costs more than the work. (Results do not depend on it.)
    int par = n_items > 1 && (T - from[0] * CHUNK) * n_kv >= 1024;
    (void)par;                                   // (unused without OpenMP)
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < n_items; it++) {
        int kh = 0;
        int64_t r = it;
        while (r >= n_chunks - from[kh]) r -= n_chunks - from[kh++];
        int64_t ch = from[kh] + r, t0 = ch * CHUNK, t1 = t0 + CHUNK < T ? t0 + CHUNK : T;
        const float *qk = q + (int64_t)kh * gq * hd;
        float *o = part_o(p, kh, ch, gq, hd), *st = part_st(p, kh, ch, gq);
        attend_chunk(stream_range, c, layer, kh, gq, t0, t1, 1, &qk, att + (int64_t)kh * gq * ld, ld, 0, &o, &st);
    }
    merge_chunks(p, n_kv, gq, hd, n_chunks, out);
}

static int query_groups(const KVSpec *sp, int n_heads) {
    if (n_heads % sp->n_kv_heads != 0)
        fatal("attention: %d query heads do not share %d kv heads evenly", n_heads, sp->n_kv_heads);
    return n_heads / sp->n_kv_heads;
}

void kvcache_attention(const KVCache *c, int layer, const float *q, int n_heads, float *out, float *att) {
    const KVSpec *sp = &c->spec;
    int hd = sp->head_dim, n_kv = sp->n_kv_heads, gq = query_groups(sp, n_heads);
    int64_t T = c->len[layer], n_chunks = (T + CHUNK - 1) / CHUNK;
    if (T == 0) { memset(out, 0, sizeof(float) * (size_t)n_heads * hd); return; }
    Partials p = { xmalloc(sizeof(float) * (size_t)(n_kv * n_chunks * gq) * (size_t)(hd + 2)), NULL, n_chunks };
    p.stat = p.part + n_kv * n_chunks * gq * hd;
    int64_t from[n_kv];
    for (int kh = 0; kh < n_kv; kh++) from[kh] = 0;
    attend_query(c, layer, q, gq, from, &p, att, out);
    free(p.part);
}

// Tokens [0, end) of a stream that no later append can change: everything of an fp16 stream,
// the sink and the quantized tokens of a quantized one (the fp16 window is rewritten as
// tokens leave it).
static int64_t fixed_end(const KVCache *c, const KVStream *s, int64_t T) {
    if (s->bits == 16 || s->n_quant == 0) return s->bits == 16 || T < c->spec.sink ? T : c->spec.sink;
    return c->spec.sink + s->n_quant;
}

// Block prefill: append tokens one by one and attend, each query exactly as a lone decode
// step would, but with the chunks that are fixed before the block computed for all its
// queries together. At most `block` queries at a time, so the partials stay small.
void kvcache_attend_prompt(KVCache *c, int layer, const float *q, const float *k, const float *v, int n, int n_heads,
                           float *out, float *att) {
    const KVSpec *sp = &c->spec;
    int hd = sp->head_dim, n_kv = sp->n_kv_heads, gq = query_groups(sp, n_heads);
    size_t qd = (size_t)n_heads * hd, kvd = (size_t)n_kv * hd;
    StreamRangeFn stream_range = pick_stream_range();
    for (int j0 = 0; j0 < n;) {
        int64_t T0 = c->len[layer];
        int64_t stride = (T0 + n - j0 + CHUNK - 1) / CHUNK;                 // chunks of the longest query
        size_t per_query = (size_t)(n_kv * stride * gq) * (size_t)(hd + 2);
        int B = (int)((size_t)(16 << 20) / (per_query * sizeof(float)));    // <= 16 MB of partials
        if (B < 1) B = 1;
        if (B > n - j0) B = n - j0;
        int64_t from[n_kv], n_items = 0;             // chunks complete and fixed before the block
        for (int kh = 0; kh < n_kv; kh++) {
            int64_t ek = fixed_end(c, kv_stream(c, layer, kh, 0), T0), ev = fixed_end(c, kv_stream(c, layer, kh, 1), T0);
            from[kh] = B > 1 ? (ek < ev ? ek : ev) / CHUNK : 0;
            n_items += from[kh];
        }
        float *mem = xmalloc(per_query * sizeof(float) * (size_t)B);
        Partials *p = xmalloc(sizeof(Partials) * (size_t)B);
        for (int i = 0; i < B; i++) {
            p[i] = (Partials){ mem + per_query * i, NULL, stride };
            p[i].stat = p[i].part + n_kv * stride * gq * hd;
        }
        if (n_items > 0)
        #pragma omp parallel if (n_items > 1)
        {
            float *scratch = xmalloc(sizeof(float) * (size_t)B * gq * CHUNK);
            const float *qs[B];
            float *os[B], *sts[B];
            #pragma omp for schedule(static)
            for (int64_t it = 0; it < n_items; it++) {
                int kh = 0;
                int64_t ch = it;
                while (ch >= from[kh]) ch -= from[kh++];
                for (int i = 0; i < B; i++) {
                    qs[i] = q + (size_t)(j0 + i) * qd + (size_t)kh * gq * hd;
                    os[i] = part_o(&p[i], kh, ch, gq, hd);
                    sts[i] = part_st(&p[i], kh, ch, gq);
                }
                attend_chunk(stream_range, c, layer, kh, gq, ch * CHUNK, (ch + 1) * CHUNK, B, qs, scratch, CHUNK,
                             ch * CHUNK, os, sts);
            }
            free(scratch);
        }
        for (int i = 0; i < B; i++) {                // in position order: append, then attend (docs/DESIGN.md §3)
            size_t j = (size_t)(j0 + i);
            kvcache_append(c, layer, k + j * kvd, v + j * kvd);
            attend_query(c, layer, q + j * qd, gq, from, &p[i], att, out + j * qd);
        }
        free(p); free(mem);
        j0 += B;
    }
}
