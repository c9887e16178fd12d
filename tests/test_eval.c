// test_eval.c: teacher-forced evaluation (model/eval.c; docs/DESIGN.md §5):
// KL and log-softmax on hand-made distributions, perplexity of the tiny model against a
// direct token-by-token computation, compare of a configuration against itself (KL 0,
// 100% top-1), and the machine-readable lines of `run -m ppl` / `-m compare`.
#include "testutil.h"
#include "../model/eval.h"
#include "../util/util.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- the math ----------------------------------------------------------------------

START_TEST(test_kl_hand_made) {
    // p = (0.5, 0.25, 0.25), q = (0.25, 0.25, 0.5): KL(p||q) = 0.5 ln 2 + 0 + 0.25 ln(1/2) = 0.25 ln 2.
    // Logits are log-probabilities plus any constant.
    float xp[3] = {logf(0.5f) - 3.0f, logf(0.25f) - 3.0f, logf(0.25f) - 3.0f}, lp[3];
    float xq[3] = {logf(0.25f) + 7.0f, logf(0.25f) + 7.0f, logf(0.5f) + 7.0f}, lq[3];
    eval_log_softmax(lp, xp, 3);
    eval_log_softmax(lq, xq, 3);
    ck_assert(fabsf(lp[0] - logf(0.5f)) < 1e-6f && fabsf(lq[2] - logf(0.5f)) < 1e-6f);
    ck_assert_msg(fabs(eval_kl(lp, xq, 3) - 0.25 * log(2.0)) < 1e-7, "KL %g", eval_kl(lp, xq, 3));
    ck_assert_msg(fabs(eval_kl(lq, xp, 3) - 0.25 * log(2.0)) < 1e-7, "KL %g", eval_kl(lq, xp, 3));
    ck_assert(eval_kl(lp, xp, 3) == 0.0);   // a distribution against itself: exactly 0
    // a random pair against a direct double computation
    float a[50], b[50], la[50];
    double pa[50], pb[50], za = 0, zb = 0, kl = 0;
    for (int i = 0; i < 50; i++) { a[i] = sinf(i * 1.3f) * 4; b[i] = cosf(i * 0.7f) * 3; }
    for (int i = 0; i < 50; i++) { pa[i] = exp(a[i]); pb[i] = exp(b[i]); za += pa[i]; zb += pb[i]; }
    for (int i = 0; i < 50; i++) kl += pa[i] / za * log((pa[i] / za) / (pb[i] / zb));
    eval_log_softmax(la, a, 50);
    ck_assert_msg(fabs(eval_kl(la, b, 50) - kl) < 1e-6, "KL %g vs %g", eval_kl(la, b, 50), kl);
    ck_assert(kl > 0.1);
}
END_TEST

START_TEST(test_logsumexp_stable) {
    float x[3] = {1000.0f, 1000.0f, -1e30f};
    ck_assert(fabs(eval_logsumexp(x, 3) - (1000.0 + log(2.0))) < 1e-4);
    float y[3] = {1000.0f, 1000.0f, 999.0f}, lx[3];
    eval_log_softmax(lx, x, 3);
    ck_assert(fabs(lx[0] - log(0.5)) < 1e-6 && lx[2] < -1e29f);
    ck_assert(isfinite(eval_kl(lx, y, 3)) && eval_kl(lx, y, 3) > 0);
    ck_assert_int_eq(eval_argmax((float[]){1, 5, 5, 2}, 4), 1);   // first of equal maxima
}
END_TEST

START_TEST(test_score_position) {
    EvalStats st;
    memset(&st, 0, sizeof st);
    float base[3] = {logf(0.7f), logf(0.2f), logf(0.1f)};   // normalised: logits = log-probs
    float kv[3] = {0.0f, 2.0f, 0.0f};                      // argmax 1: disagrees with base (0)
    eval_score_position(&st, base, kv, 3, 1);
    ck_assert_int_eq(st.n, 1);
    ck_assert_int_eq(st.top1, 0);
    ck_assert(fabs(st.nll_base + log(0.2)) < 1e-6);
    double z = 2 + exp(2.0);
    ck_assert(fabs(st.nll_kv - (log(z) - 2.0)) < 1e-6);
    ck_assert(st.kl > 0 && st.kl == st.kl_max);
}
END_TEST

// ---- whole texts on the tiny model ----------------------------------------------------

#define NTOK 40
static Model model;
static int ids[NTOK];

static void setup(void) {
#ifdef _OPENMP
    omp_set_dynamic(1);   // teams sized to the free cores: make test shares the machine
#endif
    ck_assert_msg(file_exists(TINY_MODEL), "%s missing: run `make test` (it builds it)", TINY_MODEL);
    load_model(&model, TINY_MODEL);
    for (int i = 0; i < NTOK; i++) ids[i] = (i * 104729 + 5) % model.config.vocab_size;
}
static void teardown(void) { free_model(&model); }

static void fp16_spec(KVSpec *s) {
    const Config *c = &model.config;
    build_kvspec_uniform(s, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
}

START_TEST(test_ppl_matches_direct) {
    // Direct: token by token, -ln softmax(logits)[next] in double.
    const Config *c = &model.config;
    KVSpec spec;
    fp16_spec(&spec);
    KVCache *kv = build_kvcache(&spec, NTOK);
    RunState s;
    build_runstate(&s, c, 1, NTOK);
    double nll = 0;
    for (int t = 0; t + 1 < NTOK; t++) {
        float *lg = forward(&model, &s, kv, &ids[t], 1, t, 0);
        double mx = lg[0], z = 0;
        for (int i = 1; i < c->vocab_size; i++) if (lg[i] > mx) mx = lg[i];
        for (int i = 0; i < c->vocab_size; i++) z += exp(lg[i] - mx);
        nll += -(lg[ids[t + 1]] - mx - log(z));
    }
    double direct = exp(nll / (NTOK - 1));
    free_runstate(&s);
    free_kvcache(kv);
    EvalStats st;
    eval_ppl(&model, &spec, ids, NTOK, 16, 0, &st);
    ck_assert_int_eq(st.n, NTOK - 1);
    ck_assert_msg(fabs(eval_ppl_kv(&st) - direct) <= 1e-4 * direct, "ppl %g vs direct %g", eval_ppl_kv(&st), direct);
    ck_assert(direct > 1.0);
    free_kvspec(&spec);
}
END_TEST

START_TEST(test_compare_self) {
    KVSpec spec;
    fp16_spec(&spec);
    EvalStats st;
    eval_compare(&model, &spec, ids, NTOK, 16, 0, &st);
    ck_assert_int_eq(st.n, NTOK - 1);
    ck_assert_msg(st.kl == 0.0, "KL of fp16 against itself: %g", st.kl);
    ck_assert_int_eq(st.top1, NTOK - 1);
    ck_assert(st.nll_base == st.nll_kv);
    ck_assert(st.kv_bits_per_elem == 16.0);
    // eval_against on stored baseline log-probs gives the same numbers
    float *base = xmalloc((size_t)(NTOK - 1) * model.config.vocab_size * sizeof(float));
    eval_base_logprobs(&model, ids, NTOK, 5, base);   // other batches: the same logits
    EvalStats st2;
    eval_against(&model, &spec, ids, NTOK, 16, base, &st2);
    ck_assert(st2.kl == 0.0 && st2.top1 == NTOK - 1);
    ck_assert(fabs(st2.nll_kv - st.nll_kv) < 1e-6 * st.nll_kv);
    free(base);
    free_evalstats(&st);
    free_kvspec(&spec);
}
END_TEST

// ---- the CLI's machine-readable lines ---------------------------------------------------

static char *last_line(char *s) {
    size_t n = strlen(s);
    while (n && s[n - 1] == '\n') s[--n] = 0;
    char *p = strrchr(s, '\n');
    return p ? p + 1 : s;
}

START_TEST(test_cli_lines) {
    char cmd[1024], *out, *err;
    const char *text = "To be, or not to be, that is the question: whether tis nobler in the mind to suffer";
    snprintf(cmd, sizeof cmd, "%s %s -m ppl -i '%s'", run_bin(), TINY_MODEL, text);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 0);
    double ppl;
    int tokens;
    char kv[32];
    ck_assert_msg(sscanf(last_line(out), "ppl %lf tokens %d kv %31s", &ppl, &tokens, kv) == 3, "ppl line: %s", out);
    ck_assert(ppl > 1 && tokens > 10);
    ck_assert_str_eq(kv, "fp16");
    free(out); free(err);

    snprintf(cmd, sizeof cmd, "%s %s -m compare --tokens 12 -i '%s'", run_bin(), TINY_MODEL, text);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 0);
    double kl, top1, pb, pk, bits;
    ck_assert_msg(sscanf(last_line(out), "kl %lf top1 %lf ppl_base %lf ppl_kv %lf tokens %d kv %31s kv_bits_per_elem %lf",
                         &kl, &top1, &pb, &pk, &tokens, kv, &bits) == 7, "compare line: %s", out);
    ck_assert(kl == 0 && top1 == 1.0 && pb == pk && tokens == 12 && bits == 16.0);
    free(out); free(err);
}
END_TEST

START_TEST(test_cli_quantized) {
    // A 2-bit cache differs from fp16: KL > 0, the bits are right, and --per-layer lists every
    // layer, each KL >= 0 (the tiny model has head_dim 16, so per-token groups: pertoken preset).
    char cmd[1024], *out, *err;
    const char *text = "To be, or not to be, that is the question: whether tis nobler in the mind to suffer";
    snprintf(cmd, sizeof cmd, "%s %s -m compare --kv kv2 --kv-preset pertoken --per-layer -i '%s'", run_bin(),
             TINY_MODEL, text);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 0);
    int layers = 0;
    for (char *p = strstr(out, "\nlayer "); p; p = strstr(p + 1, "\nlayer ")) {
        int l;
        double kl;
        ck_assert(sscanf(p + 1, "layer %d kl %lf", &l, &kl) == 2 && l == layers && kl >= 0);
        layers++;
    }
    ck_assert_int_eq(layers, model.config.n_layers);
    double kl, top1, pb, pk, bits;
    int tokens;
    char kv[32];
    ck_assert(sscanf(last_line(out), "kl %lf top1 %lf ppl_base %lf ppl_kv %lf tokens %d kv %31s kv_bits_per_elem %lf",
                     &kl, &top1, &pb, &pk, &tokens, kv, &bits) == 7);
    ck_assert_msg(kl > 1e-4 && pk != pb, "kv2 KL %g", kl);
    ck_assert_str_eq(kv, "kv2");
    ck_assert(bits > 2.0 && bits < 16.0);
    free(out); free(err);
    // generation divergence: fp16 against itself never parts
    snprintf(cmd, sizeof cmd, "%s %s -m compare --kv fp16 -n 6 -i 'Once upon a time'", run_bin(), TINY_MODEL);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 0);
    int first;
    ck_assert_msg(sscanf(last_line(out), "first_diff %d tokens %d", &first, &tokens) == 2, "%s", out);
    ck_assert_int_eq(first, -1);
    free(out); free(err);
}
END_TEST

START_TEST(test_layer_kl_fp16) {
    KVSpec spec;
    fp16_spec(&spec);
    double kl[64];
    eval_layer_kl(&model, &spec, ids, NTOK, 16, 0, kl);
    for (int l = 0; l < model.config.n_layers; l++) ck_assert_msg(kl[l] == 0.0, "layer %d: %g", l, kl[l]);
    free_kvspec(&spec);
}
END_TEST

static void expect_error(const char *args, const char *want) {
    char cmd[2048], *err;
    snprintf(cmd, sizeof cmd, "%s %s %s", run_bin(), TINY_MODEL, args);
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_msg(rc == 1 && strstr(err, want), "`%s`: exit %d, stderr '%s', want '%s'", args, rc, err, want);
    free(err);
}

START_TEST(test_cli_bad_text) {
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/empty.txt", test_tmpdir());
    write_bytes(path, "", 0);
    snprintf(args, sizeof args, "-m ppl -f %s", path);
    expect_error(args, "empty.txt: the text is empty");
    expect_error("-m compare -i 'a'", "at least 2 are needed");
    expect_error("-m ppl -i 'one two three four five' --ctx 4", "more than the context of 4");
    expect_error("-m ppl -i 'one two three four five' --ctx 4 --tokens 5", "--tokens: 5 is beyond the context of 4");
    expect_error("-m ppl -i 'one two' --tokens 50", "--tokens: 50, but the text has only");
    expect_error("-m ppl", "-m ppl: give the text");
    expect_error("-m compare -f /nonexistent.txt", "/nonexistent.txt: cannot open");
}
END_TEST

static Suite *eval_suite(void) {
    Suite *s = suite_create("eval");
    TCase *math = tcase_create("math");
    tcase_add_test(math, test_kl_hand_made);
    tcase_add_test(math, test_logsumexp_stable);
    tcase_add_test(math, test_score_position);
    suite_add_tcase(s, math);
    TCase *tc = tcase_create("tiny");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_ppl_matches_direct);
    tcase_add_test(tc, test_compare_self);
    tcase_add_test(tc, test_cli_lines);
    tcase_add_test(tc, test_cli_bad_text);
    tcase_add_test(tc, test_cli_quantized);
    tcase_add_test(tc, test_layer_kl_fp16);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(eval_suite)
