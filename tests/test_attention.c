// test_attention.c: the attention over the packed cache (kernels/attention.h).
//  - The reference (kernels/attention_ref.c) against softmax(q·Kᵀ/√d)·V in double over an
//    explicitly dequantized copy of the cache (kvcache_read), with and without the position's
//    own key and value (the seed's timing: they join as one more token, rounded to fp16).
//  - Every fast variant this CPU runs against the reference, within ATTN_TOLERANCE of each
//    head's largest value, over every cache kind: fp16, per-token (quantize on append), groups
//    with a residual window that wraps, attention sinks, KIVI per-channel keys, per-head mixed
//    bits, GQA ratios, shapes the SIMD loops take (head_dim 64, 128) and odd ones they leave
//    to plain C, contexts of several 128-token chunks.
//  - The avx512vnni variant gives bit for bit the avx2 variant's outputs (exact integer sums).
//  - A block of positions (attention_layer with n > 1) gives bit for bit the cache and the
//    outputs of one call per position, in every variant.
#include "testutil.h"
#include "../kernels/attention.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static float randf(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// softmax(q·Kᵀ/√d)·V in double, over kvcache_read's dequantized rows and then, if x has
// them, the position's own key and value rounded to fp16.
static void textbook(const KVCache *c, int layer, const AttnRows *x) {
    const KVSpec *s = kvcache_spec(c);
    int hd = s->head_dim, gq = x->n_heads / s->n_kv_heads;
    const float *q = x->q;
    float *out = x->out;
    int64_t T = kvcache_len(c, layer) + (x->k ? 1 : 0);
    float *K = xmalloc(sizeof(float) * (size_t)(T * hd)), *V = xmalloc(sizeof(float) * (size_t)(T * hd));
    double *p = xmalloc(sizeof(double) * (size_t)T);
    for (int kh = 0; kh < s->n_kv_heads; kh++) {
        for (int64_t t = 0; t < kvcache_len(c, layer); t++) {
            kvcache_read(c, layer, kh, 0, t, K + t * hd);
            kvcache_read(c, layer, kh, 1, t, V + t * hd);
        }
        for (int i = 0; x->k && i < hd; i++) {
            K[(T - 1) * hd + i] = fp16_round(x->k[kh * hd + i]);
            V[(T - 1) * hd + i] = fp16_round(x->v[kh * hd + i]);
        }
        for (int h = kh * gq; h < (kh + 1) * gq; h++) {
            double mx = -INFINITY, total = 0.0;
            for (int64_t t = 0; t < T; t++) {
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * K[t * hd + i];
                p[t] = d / sqrt((double)hd);
                mx = fmax(mx, p[t]);
            }
            for (int64_t t = 0; t < T; t++) { p[t] = exp(p[t] - mx); total += p[t]; }
            for (int i = 0; i < hd; i++) {
                double o = 0.0;
                for (int64_t t = 0; t < T; t++) o += p[t] / total * V[t * hd + i];
                out[h * hd + i] = (float)o;
            }
        }
    }
    free(K); free(V); free(p);
}

// The largest |v̂| KV head kh holds in `layer`, or has as its own value v (if not NULL): the
// scale ATTN_TOLERANCE is relative to.
static float value_scale(const KVCache *c, int layer, int kh, const float *v) {
    int hd = kvcache_spec(c)->head_dim;
    float x[hd], m = 0.0f;
    for (int i = 0; v && i < hd; i++) m = fmaxf(m, fabsf(v[kh * hd + i]));
    for (int64_t t = 0; t < kvcache_len(c, layer); t++) {
        kvcache_read(c, layer, kh, 1, t, x);
        for (int i = 0; i < hd; i++) m = fmaxf(m, fabsf(x[i]));
    }
    return m;
}

static const AttnImpl fast_variants[] = { ATTN_FAST_PORTABLE, ATTN_FAST_AVX2, ATTN_FAST_VNNI };

typedef struct { int k_bits, v_bits, group, residual, axis, sink, n_kv, gq, hd; } Case;

static const char *case_name(const Case *k) {
    static char buf[160];
    snprintf(buf, sizeof buf, "k%dv%d G%d R%d axis %d sink %d kv %d gq %d hd %d", k->k_bits, k->v_bits, k->group,
             k->residual, k->axis, k->sink, k->n_kv, k->gq, k->hd);
    return buf;
}

// A 2-layer spec from a case; layer 1 mixes precisions per head.
static void case_spec(KVSpec *spec, const Case *k) {
    build_kvspec_uniform(spec, 2, k->n_kv, k->hd, k->k_bits, k->v_bits);
    spec->bits[k->n_kv + 0].k_bits = 16;
    if (k->n_kv > 1) spec->bits[k->n_kv + 1] = (KVBits){ 2, 8 };
    if (k->n_kv > 2) spec->bits[k->n_kv + 2] = (KVBits){ 8, 2 };
    spec->group = k->group; spec->residual = k->residual; spec->key_axis = k->axis; spec->sink = k->sink;
}

// Keys with a per-channel bias and a few large channels (as real keys have: what KIVI's axis
// is for), values of unit scale.
static void random_kv(float *kv, int kvd) {
    for (int i = 0; i < kvd; i++) kv[i] = randf() + (float)((i % 7) - 3) + (i % 16 == 5 ? 8.0f * randf() : 0.0f);
    for (int i = 0; i < kvd; i++) kv[kvd + i] = randf() * 2.0f;
}

// Grow a cache of the case to each length in turn; at each, compare for both layers: the
// reference with the textbook, and every fast variant with the reference; layer 0 attends to
// the cache alone, layer 1 also to a position's own key and value (as attention_layer does).
static void check_case(const Case *k, const int64_t *lengths, int n_lengths, double *worst) {
    KVSpec spec;
    case_spec(&spec, k);
    int64_t maxT = lengths[n_lengths - 1];
    KVCache *c = build_kvcache(&spec, maxT);
    int n_heads = k->n_kv * k->gq, kvd = k->n_kv * k->hd, qd = n_heads * k->hd;
    float *kv = xmalloc(sizeof(float) * (size_t)kvd * 2), *q = xmalloc(sizeof(float) * (size_t)qd);
    float *own = xmalloc(sizeof(float) * (size_t)kvd * 2);
    float *out = xmalloc(sizeof(float) * (size_t)qd), *ref = xmalloc(sizeof(float) * (size_t)qd);
    float *tb = xmalloc(sizeof(float) * (size_t)qd), *avx2 = xmalloc(sizeof(float) * (size_t)qd);
    int li = 0;
    for (int64_t T = 1; T <= maxT; T++) {
        for (int l = 0; l < 2; l++) {
            random_kv(kv, kvd);
            kvcache_append(c, l, kv, kv + kvd);
        }
        if (T != lengths[li]) continue;
        li++;
        for (int l = 0; l < 2; l++) {
            for (int i = 0; i < qd; i++) q[i] = randf() * 2.0f;
            random_kv(own, kvd);
            const float *ok = l == 1 ? own : NULL, *ov = l == 1 ? own + kvd : NULL;
            AttnRows xr = { q, ok, ov, ref, 1, n_heads }, xt = { q, ok, ov, tb, 1, n_heads }, xo = { q, ok, ov, out, 1, n_heads };
            attention_query(c, l, &xr, ATTN_REFERENCE);
            textbook(c, l, &xt);
            for (int i = 0; i < qd; i++)
                ck_assert_msg(fabsf(ref[i] - tb[i]) <= 1e-5f + 1e-5f * fabsf(tb[i]), "%s T %lld layer %d: reference %g, textbook %g",
                              case_name(k), (long long)T, l, (double)ref[i], (double)tb[i]);
            for (size_t vi = 0; vi < sizeof fast_variants / sizeof fast_variants[0]; vi++) {
                if (!attention_available(fast_variants[vi])) continue;
                attention_query(c, l, &xo, fast_variants[vi]);
                for (int h = 0; h < n_heads; h++) {
                    float scale = value_scale(c, l, h / k->gq, ov);
                    for (int i = h * k->hd; i < (h + 1) * k->hd; i++) {
                        double err = fabs((double)out[i] - ref[i]) / scale;
                        if (err > *worst) *worst = err;
                        ck_assert_msg(err <= ATTN_TOLERANCE, "%s, %s, T %lld layer %d head %d: out[%d] %g vs reference %g (%.2g of max |v|)",
                                      attention_name(fast_variants[vi]), case_name(k), (long long)T, l, h, i,
                                      (double)out[i], (double)ref[i], err);
                    }
                }
                // The VNNI loops are the AVX2 ones with fused integer steps: the same sums, exactly.
                if (fast_variants[vi] == ATTN_FAST_AVX2) memcpy(avx2, out, sizeof(float) * (size_t)qd);
                if (fast_variants[vi] == ATTN_FAST_VNNI && attention_available(ATTN_FAST_AVX2))
                    ck_assert_msg(memcmp(avx2, out, sizeof(float) * (size_t)qd) == 0, "%s, T %lld layer %d: avx512vnni and avx2 differ",
                                  case_name(k), (long long)T, l);
            }
        }
    }
    free(kv); free(own); free(q); free(out); free(ref); free(tb); free(avx2);
    free_kvcache(c);
    free_kvspec(&spec);
}

START_TEST(test_every_width_and_axis) {
    static const int bits[][2] = { { 16, 16 }, { 8, 8 }, { 8, 4 }, { 4, 4 }, { 4, 2 }, { 2, 2 }, { 2, 8 } };
    // Lengths around the window: before anything is quantized, mid-window, right at a flush,
    // one after, and long enough for several 128-token chunks.
    static const int64_t lens[] = { 1, 3, 8, 9, 16, 17, 32, 33, 40, 64, 65, 160, 300 };
    double worst = 0.0;
    for (int b = 0; b < 7; b++) {
        Case tok = { bits[b][0], bits[b][1], -1, 0, KEY_AXIS_TOKEN, 0, 3, 3, 64 };    // pertoken preset
        check_case(&tok, lens, 13, &worst);
        Case win = { bits[b][0], bits[b][1], 32, 5, KEY_AXIS_TOKEN, 2, 3, 3, 64 };     // groups, ring window, sink
        check_case(&win, lens, 13, &worst);
        Case kivi = { bits[b][0], bits[b][1], 32, 32, KEY_AXIS_CHANNEL, 0, 3, 3, 64 }; // kivi preset
        check_case(&kivi, lens, 13, &worst);
        Case kivis = { bits[b][0], bits[b][1], 32, 64, KEY_AXIS_CHANNEL, 3, 2, 4, 128 }; // + sink, Llama-3's shape
        check_case(&kivis, lens, 13, &worst);
        Case small = { bits[b][0], bits[b][1], 8, 16, KEY_AXIS_CHANNEL, 1, 2, 2, 16 };  // the plain C loops
        check_case(&small, lens, 13, &worst);
    }
    fprintf(stderr, "test_attention: largest fast-vs-reference error %.3g of max |v| (tolerance %.0e)\n", worst,
            (double)ATTN_TOLERANCE);
}
END_TEST

START_TEST(test_gqa_ratios) {
    static const int64_t lens[] = { 5, 64, 129 };
    double worst = 0.0;
    for (int gq = 1; gq <= 8; gq *= 2) {
        Case a = { 4, 2, 32, 32, KEY_AXIS_CHANNEL, 0, 2, gq, 64 };
        check_case(&a, lens, 3, &worst);
        Case b = { 8, 4, 32, 0, KEY_AXIS_TOKEN, 0, 3, gq, 128 };
        check_case(&b, lens, 3, &worst);
        Case c = { 2, 4, 64, 3, KEY_AXIS_TOKEN, 1, 1, gq + 1, 64 };      // 2, 3, 5, 9 heads: partial head sets
        check_case(&c, lens, 3, &worst);
    }
}
END_TEST

// Odd group sizes whose codes do not fill a byte (per-token G = 1, 3; per-channel G = 3).
START_TEST(test_groups_not_filling_bytes) {
    static const int64_t lens[] = { 2, 7, 12, 40 };
    double worst = 0.0;
    for (int b = 2; b <= 8; b *= 2) {
        Case a = { b, b, 3, 2, KEY_AXIS_TOKEN, 1, 2, 2, 6 };
        check_case(&a, lens, 4, &worst);
        Case c = { b, b, 1, 0, KEY_AXIS_TOKEN, 0, 1, 1, 5 };
        check_case(&c, lens, 4, &worst);
        Case d = { b, 2, 3, 6, KEY_AXIS_CHANNEL, 0, 1, 2, 6 };
        check_case(&d, lens, 4, &worst);
    }
}
END_TEST

// attention_layer over n positions at once against one position per call, from the same
// cache state: the caches end byte-identical and the outputs bit-identical. Lengths run past
// several chunks, so that a block finds complete fixed chunks to share among its queries.
static void check_block(const Case *k, AttnImpl impl, int64_t prefix, int n) {
    KVSpec spec;
    case_spec(&spec, k);
    KVCache *a = build_kvcache(&spec, prefix + n), *b = build_kvcache(&spec, prefix + n);
    int n_heads = k->n_kv * k->gq, kvd = k->n_kv * k->hd, qd = n_heads * k->hd;
    float *kv = xmalloc(sizeof(float) * (size_t)kvd * 2);
    for (int64_t t = 0; t < prefix; t++)
        for (int l = 0; l < 2; l++) {
            random_kv(kv, kvd);
            kvcache_append(a, l, kv, kv + kvd);
            kvcache_append(b, l, kv, kv + kvd);
        }
    float *q = xmalloc(sizeof(float) * (size_t)n * qd), *ks = xmalloc(sizeof(float) * (size_t)n * kvd);
    float *vs = xmalloc(sizeof(float) * (size_t)n * kvd);
    float *oa = xmalloc(sizeof(float) * (size_t)n * qd), *ob = xmalloc(sizeof(float) * (size_t)n * qd);
    for (int l = 0; l < 2; l++) {
        for (int j = 0; j < n; j++) {
            random_kv(kv, kvd);
            memcpy(ks + (size_t)j * kvd, kv, sizeof(float) * kvd);
            memcpy(vs + (size_t)j * kvd, kv + kvd, sizeof(float) * kvd);
        }
        for (int i = 0; i < n * qd; i++) q[i] = randf() * 2.0f;
        AttnRows all = { q, ks, vs, oa, n, n_heads };
        attention_layer(a, l, &all, impl);
        for (int j = 0; j < n; j++) {
            AttnRows one = { q + (size_t)j * qd, ks + (size_t)j * kvd, vs + (size_t)j * kvd, ob + (size_t)j * qd, 1, n_heads };
            attention_layer(b, l, &one, impl);
        }
        ck_assert_msg(memcmp(oa, ob, sizeof(float) * (size_t)n * qd) == 0, "%s, %s, layer %d: block and one-by-one outputs differ",
                      attention_name(impl), case_name(k), l);
    }
    ck_assert_msg(kvcache_equal(a, b), "%s, %s: block and one-by-one caches differ", attention_name(impl), case_name(k));
    free(kv); free(q); free(ks); free(vs); free(oa); free(ob);
    free_kvcache(a); free_kvcache(b);
    free_kvspec(&spec);
}

START_TEST(test_block_equals_one_by_one) {
    static const Case cases[] = {
        { 16, 16, -1, 0, KEY_AXIS_TOKEN, 0, 3, 3, 64 },
        { 4, 4, -1, 0, KEY_AXIS_TOKEN, 0, 3, 3, 64 },
        { 2, 8, 32, 5, KEY_AXIS_TOKEN, 3, 3, 3, 64 },
        { 4, 2, 32, 32, KEY_AXIS_CHANNEL, 0, 3, 3, 64 },
        { 8, 4, 32, 64, KEY_AXIS_CHANNEL, 5, 2, 4, 128 },
        { 4, 8, 4, 8, KEY_AXIS_CHANNEL, 2, 2, 2, 16 },
    };
    static const AttnImpl impls[] = { ATTN_FAST, ATTN_FAST_PORTABLE, ATTN_FAST_AVX2, ATTN_FAST_VNNI, ATTN_REFERENCE };
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++) {
        if (!attention_available(impls[i]) && impls[i] != ATTN_REFERENCE) continue;
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            check_block(&cases[ci], impls[i], 0, 40);                  // a prompt from empty
            check_block(&cases[ci], impls[i], 290, 100);               // fixed chunks before the block
        }
    }
}
END_TEST

// The names, and which variants this CPU leaves out of the comparisons above (said, not hidden).
START_TEST(test_names) {
    ck_assert_str_eq(attention_name(ATTN_REFERENCE), "reference");
    ck_assert(attention_available(ATTN_FAST) && attention_available(ATTN_FAST_PORTABLE));
    ck_assert(strncmp(attention_name(ATTN_FAST), "fast (", 6) == 0);
    static const char *needs[] = { "AVX2, FMA and F16C", "AVX-512 F, VL and VNNI" };
    for (int i = 0; i < 2; i++) {
        AttnImpl impl = i ? ATTN_FAST_VNNI : ATTN_FAST_AVX2;
        if (attention_available(impl)) ck_assert_str_eq(attention_name(impl), i ? "fast (avx512vnni)" : "fast (avx2)");
        else {
            ck_assert_str_eq(attention_name(impl), "unavailable");
            fprintf(stderr, "test_attention: skipped %s variant: this CPU lacks %s\n", i ? "avx512vnni" : "avx2", needs[i]);
        }
    }
    // The default is the widest variant this CPU runs.
    AttnImpl best = attention_available(ATTN_FAST_VNNI) ? ATTN_FAST_VNNI : attention_available(ATTN_FAST_AVX2) ? ATTN_FAST_AVX2 : ATTN_FAST_PORTABLE;
    ck_assert_str_eq(attention_name(ATTN_FAST), attention_name(best));
}
END_TEST

static Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_every_width_and_axis);
    tcase_add_test(tc, test_gqa_ratios);
    tcase_add_test(tc, test_groups_not_filling_bytes);
    tcase_add_test(tc, test_block_equals_one_by_one);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(attention_suite)
