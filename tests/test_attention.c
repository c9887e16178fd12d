// test_attention.c: attention over the packed cache (kernels/attention.c) against plain
// attention over an explicitly dequantized copy of the same cache, for every bit width,
// both key axes, GQA ratios and window states (empty, partial, just flushed, with sink).
#include "testutil.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static float randf(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// Reference: softmax(q·K^T / sqrt(hd)) V in double, over kvcache_read's dequantized rows.
static void reference(const KVCache *c, int layer, const float *q, int n_heads, float *out) {
    const KVSpec *s = kvcache_spec(c);
    int hd = s->head_dim, gq = n_heads / s->n_kv_heads;
    int64_t T = kvcache_len(c, layer);
    float *K = xmalloc(sizeof(float) * (size_t)(T * hd)), *V = xmalloc(sizeof(float) * (size_t)(T * hd));
    double *p = xmalloc(sizeof(double) * (size_t)T);
    for (int kh = 0; kh < s->n_kv_heads; kh++) {
        for (int64_t t = 0; t < T; t++) {                      // the explicit dequantized copy
            kvcache_read(c, layer, kh, 0, t, K + t * hd);
            kvcache_read(c, layer, kh, 1, t, V + t * hd);
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

typedef struct { int k_bits, v_bits, group, residual, axis, sink, n_kv, gq, hd; } Case;

static void check_case(const Case *k, const int64_t *lengths, int n_lengths) {
    KVSpec spec;
    build_kvspec_uniform(&spec, 2, k->n_kv, k->hd, k->k_bits, k->v_bits);
    spec.bits[k->n_kv + 0].k_bits = 16;                 // layer 1 mixes precisions per head
    if (k->n_kv > 1) spec.bits[k->n_kv + 1] = (KVBits){ 2, 8 };
    spec.group = k->group; spec.residual = k->residual; spec.key_axis = k->axis; spec.sink = k->sink;
    int64_t maxT = lengths[n_lengths - 1];
    KVCache *c = build_kvcache(&spec, maxT);
    int n_heads = k->n_kv * k->gq, kvd = k->n_kv * k->hd, qd = n_heads * k->hd;
    float *kv = xmalloc(sizeof(float) * (size_t)kvd * 2), *q = xmalloc(sizeof(float) * (size_t)qd);
    float *out = xmalloc(sizeof(float) * (size_t)qd), *ref = xmalloc(sizeof(float) * (size_t)qd);
    float *att = xmalloc(sizeof(float) * (size_t)(n_heads * maxT));
    int li = 0;
    for (int64_t T = 1; T <= maxT; T++) {
        for (int l = 0; l < 2; l++) {
            // Keys with a per-channel bias (as real keys have: the case KIVI's axis is for).
            for (int i = 0; i < kvd; i++) kv[i] = randf() + (float)((i % 7) - 3);
            for (int i = 0; i < kvd; i++) kv[kvd + i] = randf() * 2.0f;
            kvcache_append(c, l, kv, kv + kvd);
        }
        if (T != lengths[li]) continue;
        li++;
        for (int l = 0; l < 2; l++) {
            for (int i = 0; i < qd; i++) q[i] = randf() * 2.0f;
            kvcache_attention(c, l, q, n_heads, out, att);
            reference(c, l, q, n_heads, ref);
            for (int i = 0; i < qd; i++)
                ck_assert_msg(fabsf(out[i] - ref[i]) <= 2e-5f + 2e-5f * fabsf(ref[i]),
                              "k%dv%d G%d R%d axis %d sink %d kv %d gq %d hd %d T %lld layer %d: out[%d] %g vs %g",
                              k->k_bits, k->v_bits, k->group, k->residual, k->axis, k->sink, k->n_kv, k->gq, k->hd,
                              (long long)T, l, i, (double)out[i], (double)ref[i]);
        }
    }
    free(kv); free(q); free(out); free(ref); free(att);
    free_kvcache(c);
    free_kvspec(&spec);
}

START_TEST(test_every_width_and_axis) {
    static const int bits[][2] = { { 16, 16 }, { 8, 8 }, { 8, 4 }, { 4, 4 }, { 4, 2 }, { 2, 2 }, { 2, 8 } };
    // Lengths around the window: before anything is quantized, mid-window, right at a flush,
    // one after, and long enough for several attention chunks (> 128 tokens).
    static const int64_t lens[] = { 1, 3, 8, 9, 16, 17, 32, 33, 40, 160 };
    for (int b = 0; b < 7; b++) {
        Case tok = { bits[b][0], bits[b][1], -1, 0, KEY_AXIS_TOKEN, 0, 3, 3, 64 };    // pertoken
        check_case(&tok, lens, 10);
        Case win = { bits[b][0], bits[b][1], 16, 5, KEY_AXIS_TOKEN, 2, 2, 2, 32 };     // window + sink
        check_case(&win, lens, 10);
        Case kivi = { bits[b][0], bits[b][1], 8, 16, KEY_AXIS_CHANNEL, 0, 3, 3, 64 };  // KIVI-style
        check_case(&kivi, lens, 10);
        Case kivis = { bits[b][0], bits[b][1], 8, 8, KEY_AXIS_CHANNEL, 3, 1, 4, 16 };  // + sink, MHA->MQA
        check_case(&kivis, lens, 10);
    }
}
END_TEST

START_TEST(test_gqa_ratios) {
    static const int64_t lens[] = { 5, 64, 129 };
    for (int gq = 1; gq <= 8; gq *= 2) {
        Case a = { 4, 2, 32, 32, KEY_AXIS_CHANNEL, 0, 2, gq, 64 };
        check_case(&a, lens, 3);
        Case b = { 8, 4, 32, 0, KEY_AXIS_TOKEN, 0, 3, gq, 128 };
        check_case(&b, lens, 3);
    }
}
END_TEST

// Odd group sizes whose codes do not fill a byte (per-token G = 1, 3; per-channel G = 3).
START_TEST(test_groups_not_filling_bytes) {
    static const int64_t lens[] = { 2, 7, 12, 40 };
    for (int b = 2; b <= 8; b *= 2) {
        Case a = { b, b, 3, 2, KEY_AXIS_TOKEN, 1, 2, 2, 6 };
        check_case(&a, lens, 4);
        Case c = { b, b, 1, 0, KEY_AXIS_TOKEN, 0, 1, 1, 5 };
        check_case(&c, lens, 4);
        Case d = { b, 2, 3, 6, KEY_AXIS_CHANNEL, 0, 1, 2, 6 };
        check_case(&d, lens, 4);
    }
}
END_TEST

static Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_every_width_and_axis);
    tcase_add_test(tc, test_gqa_ratios);
    tcase_add_test(tc, test_groups_not_filling_bytes);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(attention_suite)
