// test_kvquality.c: what quantizing the KV cache does to the default model (docs/DESIGN.md §5).
// Teacher-forced over 512 tokens of Tiny Shakespeare, the mean KL(p_fp16 || p_kv) in the
// pertoken preset must grow as bits shrink — KV8 < K8V4 < KV4 < KV2 — and KV8 must be
// nearly lossless (mean KL < 0.01 nats). The fp16 baseline runs once (eval_base_logprobs);
// each configuration is scored against it (eval_against), as `run -m compare` does.
#include "testutil.h"
#include "../model/eval.h"
#include "../model/model.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_TOKENS = 512 };

START_TEST(test_kl_ordered_by_bits) {
    ck_assert_msg(file_exists(DEFAULT_MODEL), "%s missing: run make model", DEFAULT_MODEL);
    Model m;
    load_model(&m, DEFAULT_MODEL);
    const Config *c = &m.config;
    size_t len;
    char *text = read_file(DATA_DIR "/tinyshakespeare.txt", &len);
    text[len < 8000 ? len : 8000] = 0;                      // plenty for 512 tokens
    int *ids = NULL;
    int n = tokenizer_encode(&m.tokenizer, text, strlen(text), 0, &ids);
    ck_assert_int_ge(n, N_TOKENS);
    n = N_TOKENS;
    float *base = xmalloc(sizeof(float) * (size_t)(n - 1) * (size_t)c->vocab_size);
    eval_base_logprobs(&m, ids, n, 64, base);
    static const int cfg[][2] = { { 8, 8 }, { 8, 4 }, { 4, 4 }, { 2, 2 } };
    double kl[4];
    for (int i = 0; i < 4; i++) {
        KVSpec spec;                                        // pertoken: G = -1, R = 0, asymmetric
        build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, cfg[i][0], cfg[i][1]);
        EvalStats st;
        eval_against(&m, &spec, ids, n, 64, base, &st);
        ck_assert_int_eq(st.n, n - 1);
        kl[i] = st.kl / (double)st.n;
        // Every token quantized (R = 0): bits per element is b + 2·16/head_dim per stream.
        double want = (cfg[i][0] + cfg[i][1]) / 2.0 + 32.0 / c->head_dim;
        ck_assert_msg(st.kv_bits_per_elem > want - 1e-9 && st.kv_bits_per_elem < want + 1e-9,
                      "k%dv%d: %.6f bits/elem, closed form %.6f", cfg[i][0], cfg[i][1], st.kv_bits_per_elem, want);
        fprintf(stderr, "pertoken k%dv%d: mean KL %.6f top1 %.4f ppl %.3f (fp16 %.3f)\n", cfg[i][0], cfg[i][1],
                kl[i], (double)st.top1 / (double)st.n, eval_ppl_kv(&st), eval_ppl_base(&st));
        free(st.kl_at);
        free_kvspec(&spec);
    }
    ck_assert_msg(kl[0] < 0.01, "KV8 mean KL %.6f is not below 0.01", kl[0]);
    for (int i = 0; i + 1 < 4; i++)
        ck_assert_msg(kl[i] < kl[i + 1], "mean KL not ordered by bits: k%dv%d %.6f >= k%dv%d %.6f",
                      cfg[i][0], cfg[i][1], kl[i], cfg[i + 1][0], cfg[i + 1][1], kl[i + 1]);
    free(base);
    free(ids);
    free(text);
    free_model(&m);
}
END_TEST

static Suite *kvquality_suite(void) {
    Suite *s = suite_create("kvquality");
    TCase *tc = tcase_create("default model");
    tcase_set_timeout(tc, 1800);   // five passes over 512 tokens of the 135M model: ~1 min on 2 idle cores, far more when shared
    tcase_add_test(tc, test_kl_ordered_by_bits);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kvquality_suite)
