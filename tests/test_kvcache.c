// test_kvcache.c: which tokens the cache holds in fp16 and which quantized, what it reads
// back, exact memory accounting against the closed form, batched vs token-by-token filling
// through the model, and refused inputs.
#include "testutil.h"
#include "../quant/kvcache.h"
#include "../quant/quantize.h"
#include "../model/model.h"
#include "../util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int k_bits, v_bits, group, residual, axis, sink; } Case;

// Every grouping the cache supports, at each width, with and without window and sink.
static const Case cases[] = {
    { 16, 16, -1, 0, KEY_AXIS_TOKEN, 0 },
    { 8, 8, -1, 0, KEY_AXIS_TOKEN, 0 },     // the pertoken preset
    { 4, 4, 8, 5, KEY_AXIS_TOKEN, 0 },
    { 2, 4, 16, 3, KEY_AXIS_TOKEN, 4 },
    { 8, 4, 4, 8, KEY_AXIS_CHANNEL, 0 },    // KIVI-style, small
    { 4, 2, 8, 8, KEY_AXIS_CHANNEL, 3 },
    { 2, 2, 4, 12, KEY_AXIS_CHANNEL, 1 },
    { 16, 2, 4, 8, KEY_AXIS_CHANNEL, 0 },   // fp16 keys, quantized values
    { 4, 16, 8, 16, KEY_AXIS_CHANNEL, 2 },  // quantized per-channel keys, fp16 values
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])
enum { L = 3, H = 2, HD = 16, MAXT = 70 };

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float randf(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 4.0 - 2.0);
}

// A spec from a case; layer 1 gets different bits so mixed per-layer precision is covered.
static void case_spec(KVSpec *s, const Case *k) {
    build_kvspec_uniform(s, L, H, HD, k->k_bits, k->v_bits);
    s->bits[1 * H + 0] = (KVBits){ 8, 2 };
    s->bits[1 * H + 1] = (KVBits){ 16, 8 };
    s->group = k->group; s->residual = k->residual; s->key_axis = k->axis; s->sink = k->sink;
}

// The rule of docs/DESIGN.md §3, written out: is token t quantized after T appends?
static int expect_quantized(const KVSpec *s, int bits, int per_channel, int64_t t, int64_t T) {
    if (bits == 16 || t < s->sink) return 0;
    int64_t n = T - s->sink;                        // tokens past the sink
    if (per_channel) return t - s->sink < n - n % s->residual;
    return t < T - s->residual;
}

// The closed form for the bytes of one stream after T appends.
static void expect_stream_bytes(const KVSpec *s, int bits, int per_channel, int64_t T, uint64_t b[3]) {
    int64_t S = s->sink, R = s->residual, n = T > S ? T - S : 0, nq;
    if (bits == 16) { b[2] += (uint64_t)T * HD * 2; return; }
    nq = per_channel ? n - n % R : (n > R ? n - R : 0);
    int G = per_channel || s->group != -1 ? s->group : HD;
    int64_t groups = per_channel ? nq / G * HD : nq * (HD / G);
    b[0] += (uint64_t)(groups * ((G * bits + 7) / 8));
    b[1] += (uint64_t)groups * 4;
    b[2] += (uint64_t)(T - nq) * HD * 2;
}

// Fill a cache token by token with random K/V (rows kept in `hist`, fp16-rounded), checking
// after every append which tokens are quantized, what reads back, and the memory.
START_TEST(test_semantics_and_memory) {
    static float hist[L][2][MAXT][H][HD];
    for (int ci = 0; ci < N_CASES; ci++) {
        const Case *k = &cases[ci];
        KVSpec spec;
        case_spec(&spec, k);
        KVCache *c = build_kvcache(&spec, MAXT);
        for (int64_t T = 1; T <= MAXT; T++) {
            for (int l = 0; l < L; l++) {
                float kv[2][H * HD];
                for (int w = 0; w < 2; w++)
                    for (int i = 0; i < H * HD; i++) {
                        kv[w][i] = randf() * (1.0f + (float)l);
                        hist[l][w][T - 1][i / HD][i % HD] = fp16_to_fp32(fp32_to_fp16(kv[w][i]));
                    }
                kvcache_append(c, l, kv[0], kv[1]);
                ck_assert_int_eq(kvcache_len(c, l), T);
            }
            uint64_t total[3] = {0};
            for (int l = 0; l < L; l++) {
                uint64_t b[3] = {0};
                for (int h = 0; h < H; h++)
                    for (int w = 0; w < 2; w++) {
                        KVBits kb = spec.bits[l * H + h];
                        int bits = w ? kb.v_bits : kb.k_bits, pc = !w && k->axis == KEY_AXIS_CHANNEL;
                        expect_stream_bytes(&spec, bits, pc, T, b);
                        for (int64_t t = 0; t < T; t++) {
                            int want = expect_quantized(&spec, bits, pc, t, T);
                            ck_assert_msg(kvcache_is_quantized(c, l, h, w, t) == want,
                                          "case %d layer %d head %d %s: token %lld of %lld quantized=%d, want %d",
                                          ci, l, h, w ? "V" : "K", (long long)t, (long long)T, !want, want);
                            float got[HD];
                            kvcache_read(c, l, h, w, t, got);
                            if (!want) {                          // fp16: exactly the stored value
                                ck_assert(memcmp(got, hist[l][w][t][h], sizeof got) == 0);
                                continue;
                            }
                            // Quantized: the dequantized group the quantizer makes of the fp16 values.
                            float x[HD], xh[HD];
                            uint8_t u[HD];
                            uint16_t sc, of;
                            if (pc) {
                                int64_t b0 = spec.sink + (t - spec.sink) / spec.group * spec.group;
                                for (int ch = 0; ch < HD; ch++) {
                                    for (int i = 0; i < spec.group; i++) x[i] = hist[l][w][b0 + i][h][ch];
                                    ck_assert_int_eq(quantize_group(x, spec.group, bits, 0, u, &sc, &of), 0);
                                    dequantize_group(u, spec.group, sc, of, xh);
                                    ck_assert(got[ch] == xh[t - b0]);
                                }
                            } else {
                                int G = spec.group == -1 ? HD : spec.group;
                                for (int g = 0; g < HD / G; g++) {
                                    ck_assert_int_eq(quantize_group(hist[l][w][t][h] + g * G, G, bits, 0, u, &sc, &of), 0);
                                    dequantize_group(u, G, sc, of, xh);
                                    ck_assert(memcmp(got + g * G, xh, sizeof(float) * G) == 0);
                                }
                            }
                        }
                    }
                KVMemory m = kvcache_memory(c, l);
                ck_assert_uint_eq(m.code_bytes, b[0]);
                ck_assert_uint_eq(m.scale_bytes, b[1]);
                ck_assert_uint_eq(m.fp16_bytes, b[2]);
                ck_assert_uint_eq(m.total, b[0] + b[1] + b[2]);
                for (int i = 0; i < 3; i++) total[i] += b[i];
            }
            KVMemory m = kvcache_memory(c, -1);
            ck_assert_uint_eq(m.code_bytes, total[0]);
            ck_assert_uint_eq(m.scale_bytes, total[1]);
            ck_assert_uint_eq(m.fp16_bytes, total[2]);
            double elems = (double)T * L * H * HD * 2;
            ck_assert(fabs(m.bits_per_elem - 8.0 * (double)(total[0] + total[1] + total[2]) / elems) < 1e-12);
        }
        kvcache_reset(c);
        for (int l = 0; l < L; l++) ck_assert_int_eq(kvcache_len(c, l), 0);
        ck_assert_uint_eq(kvcache_memory(c, -1).total, 0);
        free_kvcache(c);
        free_kvspec(&spec);
    }
}
END_TEST

// Uniform KV4 per token, G = 32 of 64, the default model's shape: bits per element is the
// closed form 4 + 2·16/32 = 5 (codes + fp16 scale and offset per 32 elements).
START_TEST(test_bits_per_elem_default_shape) {
    KVSpec spec;
    build_kvspec_uniform(&spec, 30, 3, 64, 4, 4);
    spec.group = 32;
    KVCache *c = build_kvcache(&spec, 100);
    float kv[3 * 64];
    for (int t = 0; t < 100; t++)
        for (int l = 0; l < 30; l++) {
            for (int i = 0; i < 3 * 64; i++) kv[i] = randf();
            kvcache_append(c, l, kv, kv);
        }
    KVMemory m = kvcache_memory(c, -1);
    ck_assert(fabs(m.bits_per_elem - 5.0) < 1e-12);
    ck_assert_uint_eq(m.total, 100ull * 30 * 3 * 2 * (2 * (16 + 4)));   // 2 groups of (16 code + 4 scale) bytes
    free_kvcache(c);
    free_kvspec(&spec);
}
END_TEST

// A batched prefill through the model leaves the cache byte for byte as token-by-token
// decoding does, and produces the same last logits (docs/DESIGN.md §3).
START_TEST(test_batched_equals_token_by_token) {
    ck_assert_msg(file_exists(TINY_MODEL), "%s missing: run make test (it builds it)", TINY_MODEL);
    Model m;
    load_model(&m, TINY_MODEL);
    const Config *cf = &m.config;
    int n = 40, tokens[40];
    for (int i = 0; i < n; i++) tokens[i] = (i * 37 + 11) % cf->vocab_size;
    const int kv[][2] = { { 16, 16 }, { 8, 4 }, { 4, 2 }, { 2, 2 } };
    for (int axis = 0; axis < 2; axis++)
        for (int ki = 0; ki < 4; ki++) {
            KVSpec spec;
            build_kvspec_uniform(&spec, cf->n_layers, cf->n_kv_heads, cf->head_dim, kv[ki][0], kv[ki][1]);
            spec.group = axis ? 4 : -1; spec.residual = axis ? 8 : 3; spec.key_axis = axis; spec.sink = 2;
            KVCache *a = build_kvcache(&spec, 64), *b = build_kvcache(&spec, 64);
            RunState sa, sb;
            build_runstate(&sa, cf, n, 64);
            build_runstate(&sb, cf, 1, 64);
            float *la = forward(&m, &sa, a, tokens, n, 0, 0), *lb = NULL;
            for (int i = 0; i < n; i++) lb = forward(&m, &sb, b, tokens + i, 1, i, 0);
            ck_assert_msg(kvcache_equal(a, b), "axis %d k%dv%d: caches differ", axis, kv[ki][0], kv[ki][1]);
            ck_assert(memcmp(la, lb, sizeof(float) * (size_t)cf->vocab_size) == 0);
            if (kv[ki][0] != 16) ck_assert(kvcache_is_quantized(a, 0, 0, 0, 2));   // something was quantized
            free_runstate(&sa); free_runstate(&sb);
            free_kvcache(a); free_kvcache(b);
            free_kvspec(&spec);
        }
    free_model(&m);
}
END_TEST

// A NaN key is a fatal error naming layer and position (exit code 1), never stored.
START_TEST(test_nan_rejected) {
    KVSpec spec;
    build_kvspec_uniform(&spec, 2, 1, 8, 4, 4);
    KVCache *c = build_kvcache(&spec, 4);
    float k[8] = { 0 }, v[8] = { 0 };
    kvcache_append(c, 1, k, v);
    k[5] = NAN;
    kvcache_append(c, 1, k, v);          // exits 1
}
END_TEST

START_TEST(test_overflow_rejected) {
    KVSpec spec;
    build_kvspec_uniform(&spec, 1, 1, 8, 16, 16);
    KVCache *c = build_kvcache(&spec, 4);
    float k[8] = { 0 }, v[8] = { 0 };
    v[0] = 1e6f;                          // beyond fp16 even for the fp16 cache
    kvcache_append(c, 0, k, v);
}
END_TEST

START_TEST(test_context_full) {
    KVSpec spec;
    build_kvspec_uniform(&spec, 1, 1, 8, 8, 8);
    KVCache *c = build_kvcache(&spec, 2);
    float k[8] = { 0 };
    for (int i = 0; i < 3; i++) kvcache_append(c, 0, k, k);
}
END_TEST

static Suite *kvcache_suite(void) {
    Suite *s = suite_create("kvcache");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_semantics_and_memory);
    tcase_add_test(tc, test_bits_per_elem_default_shape);
    tcase_add_test(tc, test_batched_equals_token_by_token);
    tcase_add_exit_test(tc, test_nan_rejected, 1);
    tcase_add_exit_test(tc, test_overflow_rejected, 1);
    tcase_add_exit_test(tc, test_context_full, 1);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kvcache_suite)
