// test_forward.c: the forward pass on the tiny random model (models/tiny.bin):
// a batched prefill gives the same logits as token-by-token decoding (docs/DESIGN.md §3) with the
// fp16 and with a quantized cache (and leaves the same cache contents), batches of any split
// agree, and the logits are finite, causal and depend on the context; the same for its q8_0
// export.
#include "testutil.h"
#include "../model/model.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>

#define NTOK 24

static Model model;
static int ids[NTOK];

static void setup(void) {
#ifdef _OPENMP
    omp_set_dynamic(1);   // teams sized to the free cores: make test shares the machine
#endif
    ck_assert_msg(file_exists(TINY_MODEL), "%s missing: run `make test` (it builds it)", TINY_MODEL);
    load_model(&model, TINY_MODEL);
    for (int i = 0; i < NTOK; i++) ids[i] = (i * 7919 + 13) % model.config.vocab_size;
}
static void teardown(void) { free_model(&model); }

// quantized = 0: the fp16 cache; 1: a KIVI-style 2/4-bit cache (keys per channel in groups
// of 4 tokens behind a residual window of 8, values per token in groups of 8 channels).
static KVCache *make_cache(int64_t max_tokens, int quantized) {
    KVSpec spec;
    const Config *c = &model.config;
    build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, quantized ? 2 : 16, quantized ? 4 : 16);
    if (quantized) { spec.key_axis = KEY_AXIS_CHANNEL; spec.group = 4; spec.residual = 8; }
    KVCache *kv = build_kvcache(&spec, max_tokens);
    free_kvspec(&spec);
    return kv;
}
static KVCache *fp16_cache(int64_t max_tokens) { return make_cache(max_tokens, 0); }

// Logits of every position, running the tokens in batches of `batch` (cache kept in *keep if non-NULL).
static float *all_logits_cache(int batch, int quantized, KVCache **keep) {
    const Config *c = &model.config;
    size_t V = (size_t)c->vocab_size;
    float *out = xmalloc(NTOK * V * sizeof(float));
    KVCache *kv = make_cache(NTOK, quantized);
    RunState s;
    build_runstate(&s, c, batch, NTOK);
    for (int i = 0; i < NTOK; i += batch) {
        int nb = NTOK - i < batch ? NTOK - i : batch;
        float *lg = forward(&model, &s, kv, ids + i, nb, i, 1);
        memcpy(out + (size_t)i * V, lg, (size_t)nb * V * sizeof(float));
        ck_assert_int_eq(kvcache_len(kv, 0), i + nb);
    }
    free_runstate(&s);
    if (keep) *keep = kv;
    else free_kvcache(kv);
    return out;
}
static float *all_logits(int batch) { return all_logits_cache(batch, 0, NULL); }

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;   // NaN propagates as a failure
    }
    return m;
}

START_TEST(test_prefill_equals_decode) {
    size_t n = NTOK * (size_t)model.config.vocab_size;
    float *one = all_logits(1);
    const int batches[] = {NTOK, 5, 16};
    for (int b = 0; b < 3; b++) {
        float *many = all_logits(batches[b]);
        double d = max_abs_diff(one, many, n);
        ck_assert_msg(d <= 1e-4, "batch %d vs token-by-token: max |logit diff| %g > 1e-4", batches[b], d);
        free(many);
    }
    for (size_t i = 0; i < n; i++) ck_assert_msg(isfinite(one[i]), "logit %zu is not finite", i);
    free(one);
}
END_TEST

START_TEST(test_prefill_equals_decode_quantized) {
    // docs/DESIGN.md §3: with a quantized cache, a batched prefill leaves the same cache contents and
    // every position attends to the quantized cache exactly as decoding would: same logits.
    size_t n = NTOK * (size_t)model.config.vocab_size;
    KVCache *c1, *cb;
    float *one = all_logits_cache(1, 1, &c1);
    float *many = all_logits_cache(NTOK, 1, &cb);
    ck_assert_msg(kvcache_equal(c1, cb), "prefill and decode left different cache contents");
    double d = max_abs_diff(one, many, n);
    ck_assert_msg(d <= 1e-4, "quantized cache: batched vs token-by-token max |logit diff| %g", d);
    ck_assert(kvcache_memory(cb, -1).bits_per_elem < 16.0);
    float *fp = all_logits(NTOK);
    ck_assert_msg(max_abs_diff(fp, many, n) > 1e-4, "the 2/4-bit cache changed nothing");
    free(one); free(many); free(fp);
    free_kvcache(c1);
    free_kvcache(cb);
}
END_TEST

// A long prompt, so that whole 128-token chunks are quantized before later batches arrive and
// block prefill (kernels/attention.c) reads them once for all of a batch's queries: logits and
// cache contents must still be bit-identical to token-by-token decoding, for fp16, KIVI,
// per-token (quantize on append) and per-head mixed caches, with a short sink, and with rotated
// layers (quant/kvrotate.h). Kinds 2 and 3 group keys in the seed's channel order (G < head_dim).
#define NLONG 420
static float *long_logits(int kind, int batch, KVCache **keep) {
    const Config *c = &model.config;
    size_t V = (size_t)c->vocab_size;
    KVSpec spec;
    build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, kind ? 4 : 16, kind ? 2 : 16);
    if (kind == 1) { spec.key_axis = KEY_AXIS_CHANNEL; spec.group = 4; spec.residual = 8; }
    if (kind == 2) { spec.group = 8; spec.residual = 0; spec.sink = 3; }
    if (kind == 3) {                                   // head 0 fp16 keys, the rest 2-bit keys
        spec.group = 8; spec.residual = 5;
        for (int l = 0; l < c->n_layers; l++)
            for (int h = 0; h < c->n_kv_heads; h++) spec.bits[(size_t)l * c->n_kv_heads + h] = (KVBits){h ? 2 : 16, 8};
    }
    if (kind == 4) memset(build_kvspec_rotate(&spec), 1, (size_t)c->n_layers);   // per token, every layer rotated
    if (kind == 5) {                                              // KIVI with every other layer rotated
        spec.key_axis = KEY_AXIS_CHANNEL; spec.group = 4; spec.residual = 8;
        for (int l = 0; l < c->n_layers; l += 2) build_kvspec_rotate(&spec)[l] = 1;
    }
    KVCache *kv = build_kvcache(&spec, NLONG);
    free_kvspec(&spec);
    int *tok = xmalloc(NLONG * sizeof(int));
    for (int i = 0; i < NLONG; i++) tok[i] = (i * 7919 + 13 + i * i) % c->vocab_size;
    float *out = xmalloc(NLONG * V * sizeof(float));
    RunState s;
    build_runstate(&s, c, batch, NLONG);
    for (int i = 0; i < NLONG; i += batch) {
        int nb = NLONG - i < batch ? NLONG - i : batch;
        memcpy(out + (size_t)i * V, forward(&model, &s, kv, tok + i, nb, i, 1), (size_t)nb * V * sizeof(float));
    }
    free_runstate(&s);
    free(tok);
    *keep = kv;
    return out;
}

START_TEST(test_block_prefill_long) {
    size_t n = NLONG * (size_t)model.config.vocab_size;
    for (int kind = 0; kind < 6; kind++) {
        KVCache *c1, *cb;
        float *one = long_logits(kind, 1, &c1), *many = long_logits(kind, 64, &cb);
        ck_assert_msg(kvcache_equal(c1, cb), "kind %d: prefill and decode left different caches", kind);
        ck_assert_msg(max_abs_diff(one, many, n) == 0.0, "kind %d: batched vs token-by-token logits differ by %g", kind,
                      max_abs_diff(one, many, n));
        if (kind) ck_assert(kvcache_memory(cb, -1).bits_per_elem < 16.0);
        free(one); free(many);
        free_kvcache(c1); free_kvcache(cb);
    }
}
END_TEST

// H is orthonormal, so rotating every layer of an fp16 cache changes the logits only by
// rounding (fp16 rounding of rotated instead of plain K/V, sums in another order), and the
// seed's channel order (keys permuted with their queries) likewise; in the fast attention and
// in the reference (kind 3), which sees the same rotated rows.
START_TEST(test_rotation_keeps_fp16_logits) {
    const Config *c = &model.config;
    size_t V = (size_t)c->vocab_size;
    int n = 48, tok[48];
    for (int i = 0; i < n; i++) tok[i] = (i * 31 + 7) % c->vocab_size;
    float *ref = NULL;
    for (int kind = 0; kind < 4; kind++) {
        KVSpec spec;
        build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
        if (kind == 1 || kind == 3) memset(build_kvspec_rotate(&spec), 1, (size_t)c->n_layers);
        if (kind == 2) spec.group = c->head_dim / 2;         // fp16 keys, but grouped order: permuted
        KVCache *kv = build_kvcache(&spec, n);
        free_kvspec(&spec);
        RunState s;
        build_runstate(&s, c, n, n);
        float *out = xmalloc((size_t)n * V * sizeof(float));
        AttnImpl fast = model.attention;
        if (kind == 3) model.attention = ATTN_REFERENCE;
        memcpy(out, forward(&model, &s, kv, tok, n, 0, 1), (size_t)n * V * sizeof(float));
        model.attention = fast;
        if (!ref) ref = out;
        else {
            double d = max_abs_diff(ref, out, (size_t)n * V);
            ck_assert_msg(d > 0 || kind == 2, "kind %d: rotation changed nothing at all (is it applied?)", kind);
            ck_assert_msg(d < 2e-2, "kind %d: logits moved by %g, more than rounding", kind, d);
            free(out);
        }
        free_runstate(&s);
        free_kvcache(kv);
    }
    free(ref);
}
END_TEST

START_TEST(test_last_row_only) {
    // all_logits = 0 returns the last position's logits, identical to that row of the full output
    const Config *c = &model.config;
    size_t V = (size_t)c->vocab_size;
    float *full = all_logits(NTOK);
    KVCache *kv = fp16_cache(NTOK);
    RunState s;
    build_runstate(&s, c, NTOK, NTOK);
    float *last = forward(&model, &s, kv, ids, NTOK, 0, 0);
    ck_assert(max_abs_diff(last, full + (NTOK - 1) * V, V) <= 1e-5);
    free_runstate(&s);
    free_kvcache(kv);
    free(full);
}
END_TEST

START_TEST(test_context_matters) {
    // The same token after different contexts gives different logits (attention is wired in),
    // and position 0 does not depend on what follows (causality).
    const Config *c = &model.config;
    size_t V = (size_t)c->vocab_size;
    float *a = all_logits(NTOK);
    ids[0] = (ids[0] + 1) % c->vocab_size;
    float *b = all_logits(NTOK);
    ck_assert_msg(max_abs_diff(a + (NTOK - 1) * V, b + (NTOK - 1) * V, V) > 1e-4, "the first token has no effect on the last");
    ids[0] = (ids[0] + c->vocab_size - 1) % c->vocab_size;
    ids[NTOK - 1] = (ids[NTOK - 1] + 1) % c->vocab_size;
    float *d = all_logits(NTOK);
    ck_assert(max_abs_diff(a, d, (NTOK - 1) * V) == 0.0);
    free(a); free(b); free(d);
}
END_TEST

// The tiny model's q8_0 export (same seed as models/tiny.bin): a batched prefill gives exactly
// the logits of token-by-token decoding (the Q8_0 matmul's per-token result does not depend on
// the batch, kernels/matmul_q8.c), with the fp16 and a KIVI cache and on the long prompt; and
// the logits stay near the f32 model's (8-bit weights and activations: a wrong scale or block
// order would move them by whole units).
START_TEST(test_q8_0_prefill_equals_decode) {
    const Config *c = &model.config;
    size_t V = (size_t)c->vocab_size, n = NTOK * V;
    float *f32 = all_logits(NTOK);
    char path[512], cmd[1200], *err;
    snprintf(path, sizeof path, "%s/tiny-q8_0.bin", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s --random tiny --tokenizer %s %s --dtype q8_0", export_bin(), DEFAULT_GGUF, path);
    ck_assert_msg(run_capture(cmd, NULL, &err) == 0, "export --dtype q8_0 failed: %s", err);
    free(err);
    free_model(&model);
    load_model(&model, path);           // the fixture's teardown frees it
    ck_assert_int_eq(model.config.wdtype, DTYPE_Q8_0);
    float *one = all_logits(1);
    for (int quantized = 0; quantized <= 1; quantized++) {
        float *many = all_logits_cache(NTOK, quantized, NULL), *five = all_logits_cache(5, quantized, NULL);
        float *single = quantized ? all_logits_cache(1, 1, NULL) : one;
        ck_assert_msg(max_abs_diff(single, many, n) == 0.0, "q8_0, cache %d: batched vs token-by-token differ by %g", quantized,
                      max_abs_diff(single, many, n));
        ck_assert_msg(max_abs_diff(single, five, n) == 0.0, "q8_0, cache %d: batches of 5 differ by %g", quantized,
                      max_abs_diff(single, five, n));
        free(many); free(five);
        if (quantized) free(single);
    }
    double d = max_abs_diff(one, f32, n);
    printf("tiny model, q8_0 vs f32 weights: max |dlogit| %.3g over %d positions\n", d, NTOK);
    ck_assert_msg(d > 0 && d < 0.5, "q8_0 vs f32 logits: max |diff| %g (expected (0, 0.5))", d);
    KVCache *c1, *cb;
    float *l1 = long_logits(1, 1, &c1), *lb = long_logits(1, 64, &cb);
    ck_assert_msg(kvcache_equal(c1, cb), "q8_0: prefill and decode left different caches");
    ck_assert_msg(max_abs_diff(l1, lb, NLONG * V) == 0.0, "q8_0 long prompt: batched vs token-by-token differ");
    free(l1); free(lb); free_kvcache(c1); free_kvcache(cb);
    free(one); free(f32);
}
END_TEST

static Suite *forward_suite(void) {
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create("forward");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_prefill_equals_decode);
    tcase_add_test(tc, test_prefill_equals_decode_quantized);
    tcase_add_test(tc, test_block_prefill_long);
    tcase_add_test(tc, test_rotation_keeps_fp16_logits);
    tcase_add_test(tc, test_last_row_only);
    tcase_add_test(tc, test_context_matters);
    tcase_add_test(tc, test_q8_0_prefill_equals_decode);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(forward_suite)
