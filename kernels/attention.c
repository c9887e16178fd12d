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
// bit-identical (DESIGN §3).
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

// The query heads sharing one KV head: q[h*hd ..], att[h*ld + t] for h < gq.
typedef struct { const float *q; float *att; int64_t ld; int gq, hd; } HeadGroup;

// att[h][t0 + j] = q_h · k_j for the n keys of a tile; four keys at a time (four independent
// sums, and each q element loaded once for four keys).
INLINE void tile_scores(const HeadGroup *g, const float *k, int64_t n, int64_t t0) {
    int hd = g->hd;
    for (int h = 0; h < g->gq; h++) {
        const float *q = g->q + h * hd;
        float *att = g->att + h * g->ld + t0;
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
        const float *p = g->att + h * g->ld + t0;
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

// Per-channel keys (KIVI): scores of the tokens [t, ...) of t's block, up to t_end; returns
// how many. A group is one channel c of the block's G tokens: the block is dequantized
// channel by channel into kb[c][i] (G·head_dim floats, 8 KB for G 32, head_dim 64), then
// score[i] = Σ_c q[c]·kb[c][i], eight tokens at a time so the sums stay in registers.
INLINE int64_t block_scores(const KVCache *c, const KVStream *s, const HeadGroup *g, int64_t t, int64_t t_end) {
    int G = s->group, hd = g->hd;
    int64_t b = (t - c->spec.sink) / G, b0 = c->spec.sink + b * G, end = b0 + G < t_end ? b0 + G : t_end;
    float kb[hd * G];
    for (int ch = 0; ch < hd; ch++) {
        int64_t gi = b * hd + ch;
        dequant_group(s->codes + gi * s->group_bytes, G, s->bits, h2f(s->sm[2 * gi]), h2f(s->sm[2 * gi + 1]), kb + ch * G);
    }
    int i0 = (int)(t - b0), i1 = (int)(end - b0);
    for (int h = 0; h < g->gq; h++) {
        const float *q = g->q + h * hd;
        float *att = g->att + h * g->ld + b0;
        int i = i0;
        for (; i + 8 <= i1; i += 8) {
            float acc[8] = { 0 };
            for (int ch = 0; ch < hd; ch++) {
                const float *k = kb + ch * G + i;
                float qc = q[ch];
                SIMD for (int j = 0; j < 8; j++) acc[j] += qc * k[j];
            }
            for (int j = 0; j < 8; j++) att[i + j] = acc[j];
        }
        for (; i < i1; i++) {
            float acc = 0.0f;
            for (int ch = 0; ch < hd; ch++) acc += q[ch] * kb[ch * G + i];
            att[i] = acc;
        }
    }
    return end - t;
}

// One work item: keys (out == NULL: scores) or values (out: accumulate) of tokens [t0, t1).
INLINE void stream_range_body(const KVCache *c, const KVStream *s, const HeadGroup *g, float *out, int64_t t0, int64_t t1) {
    float buf[TILE * g->hd];
    int64_t q0 = c->spec.sink, q1 = q0 + s->n_quant;
    for (int64_t t = t0; t < t1;) {
        if (s->per_channel && s->bits != 16 && t >= q0 && t < q1) {   // (keys only: scores)
            t += block_scores(c, s, g, t, t1);
            continue;
        }
        int64_t n = load_tile(c, s, t, t1, buf);
        if (out) tile_values(g, buf, n, t, out);
        else tile_scores(g, buf, n, t);
        t += n;
    }
}

static void stream_range_base(const KVCache *c, const KVStream *s, const HeadGroup *g, float *out, int64_t t0, int64_t t1) {
    stream_range_body(c, s, g, out, t0, t1);
}

#ifdef KVT_X86
__attribute__((target("avx2,fma,f16c")))
static void stream_range_avx2(const KVCache *c, const KVStream *s, const HeadGroup *g, float *out, int64_t t0, int64_t t1) {
    stream_range_body(c, s, g, out, t0, t1);
}
#endif

typedef void (*StreamRangeFn)(const KVCache *, const KVStream *, const HeadGroup *, float *, int64_t, int64_t);

static StreamRangeFn pick_stream_range(void) {
#ifdef KVT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return stream_range_avx2;
#endif
    return stream_range_base;
}

// ---- the layer's attention -------------------------------------------------------------------

void kvcache_attention(const KVCache *c, int layer, const float *q, int n_heads, float *out, float *att) {
    const KVSpec *sp = &c->spec;
    int hd = sp->head_dim, n_kv = sp->n_kv_heads;
    if (n_heads % n_kv != 0) fatal("attention: %d query heads do not share %d kv heads evenly", n_heads, n_kv);
    int gq = n_heads / n_kv;
    int64_t T = c->len[layer], ld = c->max_tokens;
    if (T == 0) { memset(out, 0, sizeof(float) * (size_t)n_heads * hd); return; }
    // Chunks of >= 128 tokens, at most 32 of them, fixed by T alone (determinism, see top).
    int64_t n_chunks = (T + 127) / 128;
    if (n_chunks > 32) n_chunks = 32;
    int64_t chunk = (T + n_chunks - 1) / n_chunks;
    int64_t n_items = n_kv * n_chunks;
    // Threads only pay off with enough rows to read: below ~1k (token, KV head) rows the
    // fork/join costs more than the work. (Results do not depend on it: same chunks, same order.)
    int par = T * n_kv >= 1024;
    StreamRangeFn stream_range = pick_stream_range();
    (void)par;                                 // (unused without OpenMP)

    // Split-K ("flash decoding"): each item runs softmax over its own chunk, keeping the chunk's
    // max and sum, and leaves an unnormalized partial output; the chunks are then merged,
    // rescaled to the global max, in a fixed order. One pass over the cache, one fork/join.
    float scale = 1.0f / sqrtf((float)hd);
    float *part = xmalloc(sizeof(float) * (size_t)(n_items * gq) * (size_t)(hd + 2));  // [item][gq][hd], then max, sum
    float *stat = part + n_items * gq * hd;
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < n_items; it++) {
        int kh = (int)(it / n_chunks);
        int64_t t0 = (it % n_chunks) * chunk, t1 = t0 + chunk < T ? t0 + chunk : T;
        float *o = part + it * gq * hd, *st = stat + it * gq * 2;
        memset(o, 0, sizeof(float) * (size_t)(gq * hd));
        for (int h = 0; h < gq; h++) { st[2 * h] = -INFINITY; st[2 * h + 1] = 0.0f; }
        if (t0 >= t1) continue;
        HeadGroup g = { q + (int64_t)kh * gq * hd, att + (int64_t)kh * gq * ld, ld, gq, hd };
        stream_range(c, kv_stream(c, layer, kh, 0), &g, NULL, t0, t1);        // scores
        for (int h = 0; h < gq; h++) {                                          // chunk softmax
            float *a = g.att + h * ld, mx = -INFINITY, total = 0.0f;
            for (int64_t t = t0; t < t1; t++) { a[t] *= scale; if (a[t] > mx) mx = a[t]; }
            for (int64_t t = t0; t < t1; t++) { a[t] = expf(a[t] - mx); total += a[t]; }
            st[2 * h] = mx; st[2 * h + 1] = total;
        }
        stream_range(c, kv_stream(c, layer, kh, 1), &g, o, t0, t1);            // Σ p·v
    }
    for (int kh = 0; kh < n_kv; kh++)                                           // merge the chunks
        for (int h = 0; h < gq; h++) {
            float *o = out + ((int64_t)kh * gq + h) * hd, mx = -INFINITY, total = 0.0f;
            for (int64_t ch = 0; ch < n_chunks; ch++) {
                float m = stat[((kh * n_chunks + ch) * gq + h) * 2];
                if (m > mx) mx = m;
            }
            memset(o, 0, sizeof(float) * (size_t)hd);
            for (int64_t ch = 0; ch < n_chunks; ch++) {
                int64_t i = (kh * n_chunks + ch) * gq + h;
                if (stat[2 * i] == -INFINITY) continue;                         // empty chunk
                float w = expf(stat[2 * i] - mx);
                total += w * stat[2 * i + 1];
                const float *p = part + i * hd;
                for (int k = 0; k < hd; k++) o[k] += w * p[k];
            }
            float inv = 1.0f / total;
            for (int k = 0; k < hd; k++) o[k] *= inv;
        }
    free(part);
}
