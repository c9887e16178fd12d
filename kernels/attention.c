// attention.c: the fast attention (kernels/attention.h). It computes what the reference in
// kernels/attention_ref.c computes (read that first), changed in four ways that make it fast:
//
//  1. Nothing is dequantized into memory: scores and weighted values are computed on the
//     packed codes, with each group's scale and offset applied once per group
//     (attention_kernels.h has the algebra; the plain C loops are at the end of this file,
//     their AVX2 versions in kernels/attention_avx2.c, compiled again for AVX-512 VNNI by
//     kernels/attention_vnni.c).
//  2. The query is rounded to 16-bit integers so that q·u is an integer dot product, which
//     AVX2 does 16 products per instruction (vpmaddwd), and VNNI adds them up in the same one.
//  3. Split-K ("flash decoding"): the cache is cut into chunks of ATTN_CHUNK tokens at fixed
//     positions; each (KV head, chunk) work item takes its scores, a softmax with its own max
//     and sum, and an unnormalized weighted sum of values; merge() then rescales the chunks to
//     the global max, in chunk order. One pass over the cache, and work items enough to keep
//     every core busy however few KV heads there are.
//  4. GQA: a KV head's keys and values are read once for all the query heads that share it.
//
// Chunks start at fixed positions and merge in a fixed order, so a result depends on nothing
// but the data. The position's own key and value (the seed's timing: it sees itself as
// computed, then it is stored, docs/DESIGN.md §3.3) enter in merge() as one more chunk of one
// token. A prompt runs as a block of positions (attend_block): each position attends and then
// appends its key and value, in order, as a decode step would; the chunks that are complete
// and fixed before the block (sink and quantized tokens, which no later append changes) are
// computed once for all the block's queries, each query exactly as alone. Batched prefill thus
// gives bit for bit the cache and outputs of token-by-token decoding (docs/DESIGN.md §3.5).
//
// One decode token's attention: forward (model/forward.c) → attention_layer → attend_block →
// attend_chunk → the inner loops (key_codes, softmax, value_codes, ... of an AttnKernels table).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "attention_kernels.h"
#include "kernels.h"
#include "../quant/kvrotate.h"
#include "../util/util.h"

// ---- the variants -------------------------------------------------------------------------

int attention_available(AttnImpl impl) {
#ifdef KVT_ATTN_AVX2
    if (impl == ATTN_FAST_AVX2) return cpu_has_avx2();
    if (impl == ATTN_FAST_VNNI) return cpu_has_avx512vnni();
#endif
    return impl == ATTN_FAST || impl == ATTN_REFERENCE || impl == ATTN_FAST_PORTABLE;
}

// The inner loops of a fast variant (NULL: the reference, or a variant this CPU lacks). The
// default, ATTN_FAST, is the widest variant the CPU runs.
static const AttnKernels *kernels_for(AttnImpl impl) {
    if (impl == ATTN_REFERENCE || !attention_available(impl)) return NULL;
#ifdef KVT_ATTN_AVX2
    if (impl == ATTN_FAST_VNNI || (impl == ATTN_FAST && cpu_has_avx512vnni())) return &attn_vnni;
    if (impl == ATTN_FAST_AVX2 || (impl == ATTN_FAST && cpu_has_avx2())) return &attn_avx2;
#endif
    return &attn_portable;
}

const char *attention_name(AttnImpl impl) {
    const AttnKernels *k = kernels_for(impl);
    return impl == ATTN_REFERENCE ? "reference" : k ? k->name : "unavailable";
}

// ---- a block of query positions ----------------------------------------------------------

// What the work items of one block share. Query i, KV head kh, chunk ch: the chunk's partial
// output (unnormalized, [gq][hd]) is part(b, i, kh, ch), its max and sum per head stat(b, ...).
typedef struct {
    const AttnKernels *kern;
    const KVCache *cache;
    int layer, n_kv, gq, hd, nq;   // nq: queries in the block
    int appends;                   // 1: query i sees the cache after appending positions 0..i-1,
                                   //   and its own position is appended after it attends
    int64_t len0;                  // tokens cached before the block
    float *own;                    // [nq][2][n_kv·hd]: query i's own k and v, rounded to fp16; or NULL
    KVStreamView *kv;              // [n_kv][2]: each KV head's keys and values, as they stand now
    Query *query;                  // [nq][n_kv]
    int64_t *fixed;                // [n_kv]: chunks complete and fixed before the block
    int64_t stride;                // chunks held per (query, KV head): the last query's count
    float *part, *stat;            // [nq][n_kv][stride][gq][hd], [...][gq][2]
    float *out;                    // query i's output at out + i·out_stride, [n_kv·gq][hd]
    int64_t out_stride;
    void *mem;                     // the queries' arrays
} Block;

static float *part(const Block *b, int i, int kh, int64_t ch) {
    return b->part + (((int64_t)i * b->n_kv + kh) * b->stride + ch) * b->gq * b->hd;
}
static float *stat(const Block *b, int i, int kh, int64_t ch) {
    return b->stat + (((int64_t)i * b->n_kv + kh) * b->stride + ch) * b->gq * 2;
}
static int64_t chunks_of(int64_t tokens) { return (tokens + ATTN_CHUNK - 1) / ATTN_CHUNK; }
// Cached tokens query i sees (its own position not counted).
static int64_t tokens_of(const Block *b, int i) { return b->len0 + (b->appends ? i : 0); }

static void refresh_views(Block *b) {
    for (int kh = 0; kh < b->n_kv; kh++)
        for (int w = 0; w < 2; w++) b->kv[2 * kh + w] = kvcache_view(b->cache, b->layer, kh, w);
}

// The query heads q [gq][hd] of one KV head, prepared for its key stream k: scaled by 1/√hd,
// rounded to int16 (alpha per head), summed over each key group (the offsets' weight), and
// the int16 copy laid out as the variant's key loop reads it (kern->order_query).
static void prepare_query(Query *q, const AttnKernels *kern, const float *qf, const KVStreamView *k, float *f,
                          int16_t *i16, float *a) {
    int hd = q->hd, G = k->per_channel || k->bits == 16 ? hd : k->group;
    float scale = 1.0f / sqrtf((float)hd), *gsum = a + q->gq;
    for (int h = 0; h < q->gq; h++) {
        float *x = f + h * hd, amax = 0.0f;
        for (int c = 0; c < hd; c++) {
            x[c] = qf[h * hd + c] * scale;
            amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
        }
        float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        a[h] = amax > 0.0f ? amax / 32767.0f : 0.0f;
        for (int c = 0; c < hd; c++) i16[h * hd + c] = (int16_t)lrintf(x[c] * inv);
        for (int g = 0; g < hd / G; g++) {
            float sum = 0.0f;
            for (int c = g * G; c < (g + 1) * G; c++) sum += x[c];
            gsum[h * hd + g] = sum;
        }
    }
    *q = (Query){ f, i16, a, gsum, NULL, q->gq, hd };
    if (kern->order_query) {
        kern->order_query(q, k, i16 + q->gq * hd);
        q->qk = i16 + q->gq * hd;
    }
}

// A block of the positions of x from j0 on (at most 16 MB of partial outputs) against
// `layer`; with appends, query i comes after appending positions j0..j0+i-1. Returns the
// queries it took.
static int build_block(Block *b, const KVCache *c, int layer, const AttnRows *x, int j0, int appends) {
    const KVSpec *sp = kvcache_spec(c);
    int n_kv = sp->n_kv_heads, hd = sp->head_dim, gq = b->gq, nq = x->n - j0;
    int64_t len0 = kvcache_len(c, layer), q_stride = (int64_t)x->n_heads * hd, kvd = (int64_t)n_kv * hd;
    size_t per_query = (size_t)(n_kv * chunks_of(len0 + (appends ? nq : 0)) * gq) * (size_t)(hd + 2);
    int64_t fit = (int64_t)((size_t)(16 << 20) / (per_query * sizeof(float)));
    if (nq > fit) nq = fit > 1 ? (int)fit : 1;
    b->cache = c; b->layer = layer; b->n_kv = n_kv; b->hd = hd; b->nq = nq;
    b->appends = appends; b->len0 = len0;
    b->stride = chunks_of(len0 + (appends ? nq : 0));
    b->kv = xmalloc(sizeof(KVStreamView) * 2 * (size_t)n_kv);
    b->query = xmalloc(sizeof(Query) * (size_t)nq * n_kv);
    b->fixed = xcalloc((size_t)n_kv, sizeof(int64_t));
    b->part = xmalloc(sizeof(float) * (size_t)nq * n_kv * b->stride * gq * (hd + 2));
    b->stat = b->part + (size_t)nq * n_kv * b->stride * gq * hd;
    b->own = NULL;
    if (x->k) {                                   // as the cache would store them
        b->own = xmalloc(sizeof(float) * (size_t)(nq * 2 * kvd));
        for (int i = 0; i < nq; i++)
            for (int64_t e = 0; e < kvd; e++) {
                b->own[(2 * i) * kvd + e] = fp16_round(x->k[(j0 + i) * kvd + e]);
                b->own[(2 * i + 1) * kvd + e] = fp16_round(x->v[(j0 + i) * kvd + e]);
            }
    }
    refresh_views(b);
    size_t per = (size_t)gq * hd, nqk = (size_t)nq * n_kv;   // per (query, KV head): q, its int16 copy
    float *f = xmalloc(nqk * (per * sizeof(float) + 2 * per * sizeof(int16_t) + (gq + per) * sizeof(float)));
    int16_t *i16 = (int16_t *)(f + nqk * per);                // twice (as is, ordered), alpha, group sums
    float *a = (float *)(i16 + 2 * nqk * per);
    b->mem = f;
    for (int i = 0; i < nq; i++)
        for (int kh = 0; kh < n_kv; kh++) {
            size_t j = (size_t)i * n_kv + kh;
            b->query[j].gq = gq; b->query[j].hd = hd;
            prepare_query(&b->query[j], b->kern, x->q + (j0 + i) * q_stride + (int64_t)kh * (int64_t)per, &b->kv[2 * kh],
                          f + j * per, i16 + 2 * j * per, a + j * (gq + per));
        }
    return nq;
}

static void free_block(Block *b) {
    free(b->kv); free(b->query); free(b->fixed); free(b->part); free(b->own); free(b->mem);
}

// Chunks of each KV head that are complete and below the quantized end of both its streams:
// no later append changes them, so they are the same for every later query of the block.
static int64_t count_fixed(Block *b) {
    int64_t n = 0;
    for (int kh = 0; kh < b->n_kv; kh++) {
        int64_t ek = b->kv[2 * kh].r.quant_end, ev = b->kv[2 * kh + 1].r.quant_end;
        b->fixed[kh] = b->nq > 1 ? (ek < ev ? ek : ev) / ATTN_CHUNK : 0;
        n += b->fixed[kh];
    }
    return n;
}

// Work item `it` (chunk, and KV head *kh) of a list holding, per KV head, its fixed chunks
// [0, fixed[kh]) (shared = 1) or the rest of a query's chunks [fixed[kh], upto).
static int64_t nth_item(const Block *b, int shared, int64_t upto, int64_t it, int *kh) {
    for (*kh = 0;; (*kh)++) {
        int64_t lo = shared ? 0 : b->fixed[*kh], hi = shared ? b->fixed[*kh] : upto;
        if (it < hi - lo) return lo + it;
        it -= hi - lo;
    }
}

// ---- one work item -----------------------------------------------------------------------

// Chunk ch of KV head kh for queries i0 .. i1-1: scores run by run (each run of tokens held
// the same way, kv_run), the chunk's softmax, then the weighted values run by run.
static void attend_chunk(const Block *b, int kh, int64_t ch, int i0, int i1) {
    const AttnKernels *kn = b->kern;
    const KVStreamView *k = &b->kv[2 * kh], *v = &b->kv[2 * kh + 1];
    int64_t t0 = ch * ATTN_CHUNK, t1 = t0 + ATTN_CHUNK < k->r.len ? t0 + ATTN_CHUNK : k->r.len, n;
    float s[b->gq * ATTN_CHUNK];                      // scores, then probabilities: [gq][ATTN_CHUNK]
    for (int i = i0; i < i1; i++) {
        const Query *q = &b->query[(size_t)i * b->n_kv + kh];
        for (int64_t t = t0; t < t1; t += n) {
            n = kv_run(k, t, t1);
            if (kv_is_quantized(k, t)) kn->key_codes(q, k, t, n, s + (t - t0));
            else kn->key_rows(q, kv_fp16(k, t), n, s + (t - t0));
        }
        kn->softmax(s, b->gq, t1 - t0, stat(b, i, kh, ch));
        float *o = part(b, i, kh, ch);
        memset(o, 0, sizeof(float) * (size_t)b->gq * b->hd);
        for (int64_t t = t0; t < t1; t += n) {
            n = kv_run(v, t, t1);
            if (kv_is_quantized(v, t)) kn->value_codes(s + (t - t0), b->gq, v, t, n, o);
            else kn->value_rows(s + (t - t0), b->gq, kv_fp16(v, t), n, b->hd, o);
        }
    }
}

// Query i, query head hh: out = Σ_ch e^(max_ch − M) o_ch / Σ_ch e^(max_ch − M) sum_ch, with M
// the largest chunk max, chunks in order; then the query's own key and value, a chunk of one
// token with max = its score a and sum = 1.
static void merge(const Block *b, int i, int hh) {
    int kh = hh / b->gq, h = hh % b->gq, hd = b->hd;
    int64_t n = chunks_of(tokens_of(b, i));
    float *restrict out = b->out + i * b->out_stride + (int64_t)hh * hd, mx = -INFINITY, total = 0.0f, a = 0.0f;
    const float *own_k = NULL, *own_v = NULL;
    if (b->own) {
        own_k = b->own + ((int64_t)2 * i * b->n_kv + kh) * hd;
        own_v = own_k + (int64_t)b->n_kv * hd;
        const float *q = b->query[(size_t)i * b->n_kv + kh].q + (int64_t)h * hd;   // scaled by 1/√d
        for (int c = 0; c < hd; c++) a += q[c] * own_k[c];
        mx = a;
    }
    for (int64_t ch = 0; ch < n; ch++) mx = fmaxf(mx, stat(b, i, kh, ch)[2 * h]);
    memset(out, 0, sizeof(float) * (size_t)hd);
    for (int64_t ch = 0; ch < n; ch++) {
        float w = expf(stat(b, i, kh, ch)[2 * h] - mx);
        const float *restrict o = part(b, i, kh, ch) + (int64_t)h * hd;
        total += w * stat(b, i, kh, ch)[2 * h + 1];
        #pragma omp simd
        for (int c = 0; c < hd; c++) out[c] += w * o[c];
    }
    if (own_v) {
        float w = expf(a - mx);
        total += w;
        for (int c = 0; c < hd; c++) out[c] += w * own_v[c];
    }
    for (int c = 0; c < hd; c++) out[c] /= total;
}

// ---- a block ------------------------------------------------------------------------------

static void append_row(KVCache *c, int layer, const AttnRows *x, int j) {
    size_t kvd = (size_t)kvcache_spec(c)->n_kv_heads * kvcache_spec(c)->head_dim;
    kvcache_append(c, layer, x->k + (size_t)j * kvd, x->v + (size_t)j * kvd);
}

// The block's queries in position order (with x: positions j0.. of x, each appended after it
// attends). One parallel region per block. The fixed chunks for all queries and query 0's
// other chunks share one loop; each later query is one append of the previous position (after
// a barrier: the append may rewrite the window the previous query read) and one loop. A decode
// step (one query) is thus one fork and join per layer with no barrier inside; its merge and
// its append run after the join.
static void attend_block(Block *b, KVCache *c, const AttnRows *x, int j0) {
    int64_t n_fixed = count_fixed(b);
    int heads = b->n_kv * b->gq;
    // Threads pay off only with enough to read: below ~1k (token, KV head) rows per query the
    // fork and join cost more than the work. (Results do not depend on it.)
    int par = tokens_of(b, b->nq - 1) * b->n_kv >= 1024;
    (void)par;                                     // (unused without OpenMP)
    #pragma omp parallel if (par)
    {
        for (int i = 0; i < b->nq; i++) {
            if (i > 0) {
                #pragma omp single
                { append_row(c, b->layer, x, j0 + i - 1); refresh_views(b); }
            }
            int64_t shared = i == 0 ? n_fixed : 0, upto = chunks_of(tokens_of(b, i)), own = 0;
            for (int kh = 0; kh < b->n_kv; kh++) own += upto - b->fixed[kh];
            #pragma omp for schedule(static) nowait
            for (int64_t it = 0; it < shared + own; it++) {
                int kh;
                if (it < shared) {
                    int64_t ch = nth_item(b, 1, 0, it, &kh);
                    attend_chunk(b, kh, ch, 0, b->nq);
                } else {
                    int64_t ch = nth_item(b, 0, upto, it - shared, &kh);
                    attend_chunk(b, kh, ch, i, i + 1);
                }
            }
            if (b->nq > 1) {
                #pragma omp barrier
            }
        }
        if (b->nq > 1) {
            #pragma omp for schedule(static) nowait
            for (int64_t ih = 0; ih < (int64_t)b->nq * heads; ih++) merge(b, (int)(ih / heads), (int)(ih % heads));
        }
    }
    if (b->nq == 1)
        for (int hh = 0; hh < heads; hh++) merge(b, 0, hh);
    if (x) append_row(c, b->layer, x, j0 + b->nq - 1);
}

static int query_groups(const KVCache *c, int n_heads) {
    int n_kv = kvcache_spec(c)->n_kv_heads;
    if (n_heads % n_kv != 0) fatal("attention: %d query heads do not share %d kv heads evenly", n_heads, n_kv);
    return n_heads / n_kv;
}

void attention_query(const KVCache *c, int layer, const AttnRows *x, AttnImpl impl) {
    int gq = query_groups(c, x->n_heads), hd = kvcache_spec(c)->head_dim;
    if (x->n != 1) fatal("attention_query: %d positions, takes one", x->n);
    if (kvcache_len(c, layer) == 0 && !x->k) { memset(x->out, 0, sizeof(float) * (size_t)x->n_heads * hd); return; }
    if (impl == ATTN_REFERENCE) {
        size_t kvd = (size_t)kvcache_spec(c)->n_kv_heads * hd;
        float *own = x->k ? xmalloc(sizeof(float) * 2 * kvd) : NULL;   // as the cache would store them
        for (size_t e = 0; own && e < kvd; e++) { own[e] = fp16_round(x->k[e]); own[kvd + e] = fp16_round(x->v[e]); }
        #pragma omp parallel for schedule(static)
        for (int h = 0; h < x->n_heads; h++) {
            KVStreamView k = kvcache_view(c, layer, h / gq, 0), v = kvcache_view(c, layer, h / gq, 1);
            size_t o = (size_t)(h / gq) * hd;
            attention_ref_head(&k, &v, own ? own + o : NULL, own ? own + kvd + o : NULL, x->q + (size_t)h * hd,
                               x->out + (size_t)h * hd);
        }
        free(own);
        return;
    }
    Block b = { .kern = kernels_for(impl), .gq = gq, .out = x->out };
    if (!b.kern) fatal("attention: %s does not run on this CPU", attention_name(impl));
    build_block(&b, c, layer, x, 0, 0);
    attend_block(&b, NULL, NULL, 0);
    free_block(&b);
}

// The cache's coordinates (seed channel order, rotated heads: quant/kvrotate.h): a copy of the
// rows' q, k and v, transformed, into *y. Returns the copy's buffer, for free().
static float *to_cache_coordinates(const KVSpec *sp, int layer, const AttnRows *x, AttnRows *y) {
    size_t qn = (size_t)x->n * x->n_heads * sp->head_dim, kvn = (size_t)x->n * sp->n_kv_heads * sp->head_dim;
    float *buf = xmalloc((qn + 2 * kvn) * sizeof(float)), *q = buf, *k = q + qn, *v = k + kvn;
    memcpy(q, x->q, qn * sizeof(float));
    memcpy(k, x->k, kvn * sizeof(float));
    memcpy(v, x->v, kvn * sizeof(float));
    kv_transform_qkv(sp, layer, q, k, v, x->n, x->n_heads);
    *y = (AttnRows){ q, k, v, x->out, x->n, x->n_heads };
    return buf;
}

void attention_layer(KVCache *c, int layer, const AttnRows *rows, AttnImpl impl) {
    const KVSpec *sp = kvcache_spec(c);
    int gq = query_groups(c, rows->n_heads);
    size_t qd = (size_t)rows->n_heads * sp->head_dim;
    AttnRows y = *rows;
    float *buf = kv_layer_transforms(sp, layer) ? to_cache_coordinates(sp, layer, rows, &y) : NULL;
    const AttnRows *x = &y;
    if (impl == ATTN_REFERENCE) {
        size_t kvd = (size_t)sp->n_kv_heads * sp->head_dim;
        for (int j = 0; j < x->n; j++) {
            AttnRows one = { x->q + j * qd, x->k + j * kvd, x->v + j * kvd, x->out + j * qd, 1, x->n_heads };
            attention_query(c, layer, &one, ATTN_REFERENCE);
            append_row(c, layer, x, j);
        }
    } else {
        for (int j0 = 0; j0 < x->n;) {
            Block b = { .kern = kernels_for(impl), .gq = gq, .out = x->out + j0 * qd, .out_stride = (int64_t)qd };
            if (!b.kern) fatal("attention: %s does not run on this CPU", attention_name(impl));
            int nq = build_block(&b, c, layer, x, j0, 1);
            attend_block(&b, c, x, j0);
            free_block(&b);
            j0 += nq;
        }
    }
    if (buf) { kv_transform_out(sp, layer, rows->out, rows->n, rows->n_heads); free(buf); }
}

// ---- the inner loops, in plain C (kernels/attention_avx2.c has them for AVX2) ----------------

// s[h][j] = q_h · row_j for n fp16 rows.
static void key_rows_portable(const Query *q, const uint16_t *rows, int64_t n, float *s) {
    int hd = q->hd;
    float x[hd];
    for (int64_t j = 0; j < n; j++) {
        for (int c = 0; c < hd; c++) x[c] = fp16_to_fp32(rows[j * hd + c]);
        for (int h = 0; h < q->gq; h++) {
            float acc = 0.0f;
            for (int c = 0; c < hd; c++) acc += q->q[h * hd + c] * x[c];
            s[h * ATTN_CHUNK + j] = acc;
        }
    }
}

// Per-channel (KIVI) keys, tokens [t, t + n): per block of G tokens and per head, the block's
// channel scales folded into the query, q'_c = q_c·s_c, rounded to int16 (alpha'), and
// score_j = alpha'·Σ_c q'16_c u_cj + Σ_c q_c m_c.
static void key_blocks_portable(const Query *q, const KVStreamView *k, int64_t t, int64_t n, float *s) {
    int hd = q->hd, G = k->group;
    float qs[hd];
    int16_t q16[hd];
    for (int64_t b = (t - k->sink) / G; k->sink + b * G < t + n; b++) {
        int64_t b0 = k->sink + b * G, j0 = b0 > t ? b0 : t, j1 = b0 + G < t + n ? b0 + G : t + n;
        const uint16_t *sm = k->sm + 2 * b * hd;
        for (int h = 0; h < q->gq; h++) {
            const float *qh = q->q + h * hd;
            float off = 0.0f, amax = 0.0f;
            for (int c = 0; c < hd; c++) {
                qs[c] = qh[c] * fp16_to_fp32(sm[2 * c]);
                off += qh[c] * fp16_to_fp32(sm[2 * c + 1]);
                amax = fabsf(qs[c]) > amax ? fabsf(qs[c]) : amax;
            }
            float inv = amax > 0.0f ? 32767.0f / amax : 0.0f, alpha = amax / 32767.0f;
            for (int c = 0; c < hd; c++) q16[c] = (int16_t)lrintf(qs[c] * inv);
            for (int64_t j = j0; j < j1; j++) {
                int32_t dot = 0;
                for (int c = 0; c < hd; c++) dot += q16[c] * (int32_t)kv_code(k->codes + (b * hd + c) * k->group_bytes, (int)(j - b0), k->bits);
                s[h * ATTN_CHUNK + (j - t)] = alpha * (float)dot + off;
            }
        }
    }
}

// Per-token keys, tokens [t, t + n): score = Σ_g s_g·alpha·(q16_g·u_g) + m_g·Σq_g.
static void key_codes_portable(const Query *q, const KVStreamView *k, int64_t t, int64_t n, float *s) {
    if (k->per_channel) { key_blocks_portable(q, k, t, n, s); return; }
    int hd = q->hd, G = k->group, gpt = k->groups_per_token;
    int32_t u[hd];
    for (int64_t j = 0; j < n; j++) {
        int64_t g0 = (t + j - k->sink) * gpt;
        for (int c = 0; c < hd; c++) u[c] = (int32_t)kv_code(k->codes + (g0 + c / G) * k->group_bytes, c % G, k->bits);
        for (int h = 0; h < q->gq; h++) {
            float acc = 0.0f;
            for (int g = 0; g < gpt; g++) {
                int32_t dot = 0;
                for (int c = g * G; c < (g + 1) * G; c++) dot += q->q16[h * hd + c] * u[c];
                float sc = fp16_to_fp32(k->sm[2 * (g0 + g)]), m = fp16_to_fp32(k->sm[2 * (g0 + g) + 1]);
                acc += sc * q->alpha[h] * (float)dot + m * q->gsum[h * hd + g];
            }
            s[h * ATTN_CHUNK + j] = acc;
        }
    }
}

static void softmax_portable(float *s, int gq, int64_t n, float *st) {
    for (int h = 0; h < gq; h++) {
        float *x = s + h * ATTN_CHUNK, mx = -INFINITY, sum = 0.0f;
        for (int64_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
        for (int64_t j = 0; j < n; j++) {
            x[j] = attn_exp(x[j] - mx);
            sum += x[j];
        }
        st[2 * h] = mx;
        st[2 * h + 1] = sum;
    }
}

static void value_rows_portable(const float *p, int gq, const uint16_t *rows, int64_t n, int hd, float *o) {
    float x[hd];
    for (int64_t j = 0; j < n; j++) {
        for (int c = 0; c < hd; c++) x[c] = fp16_to_fp32(rows[j * hd + c]);
        for (int h = 0; h < gq; h++)
            for (int c = 0; c < hd; c++) o[h * hd + c] += p[h * ATTN_CHUNK + j] * x[c];
    }
}

// o[h] += Σ_j (p_j s_g) u_j + p_j m_g over the groups g of each token.
static void value_codes_portable(const float *p, int gq, const KVStreamView *v, int64_t t, int64_t n, float *o) {
    int hd = v->head_dim, G = v->group, gpt = v->groups_per_token;
    for (int64_t j = 0; j < n; j++) {
        int64_t g0 = (t + j - v->sink) * gpt;
        for (int g = 0; g < gpt; g++) {
            const uint8_t *u = v->codes + (g0 + g) * v->group_bytes;
            float sc = fp16_to_fp32(v->sm[2 * (g0 + g)]), m = fp16_to_fp32(v->sm[2 * (g0 + g) + 1]);
            for (int h = 0; h < gq; h++) {
                float w = p[h * ATTN_CHUNK + j] * sc, off = p[h * ATTN_CHUNK + j] * m, *oh = o + h * hd + g * G;
                for (int i = 0; i < G; i++) oh[i] += w * (float)kv_code(u, i, v->bits) + off;
            }
        }
    }
}

const AttnKernels attn_portable = { "fast (portable)", NULL, key_rows_portable, key_codes_portable, softmax_portable,
                                    value_rows_portable, value_codes_portable };
