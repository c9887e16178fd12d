// test_tune.c: the tuner on a real (tiny, random) model: the layer-by-layer pieces agree
// with the runtime's forward pass and per-layer KL, `run -m tune` writes configs that
// `run --kv-config` loads, and bad input is rejected with one clear line.
#include "testutil.h"
#include "../model/eval.h"
#include "../quant/tune.h"
#include "../util/util.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT DATA_DIR "/tinyshakespeare.txt"

static int *text_ids(const Model *m, int n) {
    size_t len;
    char *text = read_file(TEXT, &len);
    int *ids;
    int got = tokenizer_encode(&m->tokenizer, text, 4096, 0, &ids);
    ck_assert_int_ge(got, n);
    free(text);
    return ids;
}

// The recorded pass reproduces the runtime's fp16 log-probs; an unquantized layer run from
// the recorded states gives KL 0; a quantized one gives eval_layer_kl's number.
START_TEST(test_pieces_match_runtime) {
    ck_assert_msg(file_exists(TINY_MODEL), "missing " TINY_MODEL " (make models/tiny.bin)");
    Model m;
    load_model(&m, TINY_MODEL);
    const Config *c = &m.config;
    const int n = 48;
    int *ids = text_ids(&m, n);
    RunState s;
    build_runstate(&s, c, n, n);
    TuneRecord r;
    tune_record(&m, &s, ids, n, &r);
    size_t V = (size_t)c->vocab_size;
    float *base = xmalloc((size_t)(n - 1) * V * sizeof(float));
    eval_base_logprobs(&m, ids, n, 16, base);
    double md = 0;
    for (size_t i = 0; i < (size_t)(n - 1) * V; i++) md = fmax(md, fabs((double)base[i] - r.logp[i]));
    ck_assert_msg(md <= 1e-5, "recorded log-probs differ from eval_base_logprobs by %g", md);

    KVSpec g, sp16;
    build_kvspec_uniform(&g, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);   // pertoken grouping
    build_kvspec_uniform(&sp16, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
    KVCache *c16 = build_kvcache(&sp16, n);
    float *o = xmalloc((size_t)n * c->n_heads * c->head_dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        tune_layer_attention(&m, &g, (KVBits){16, 16}, &r, l, o);
        double kl16 = tune_tail_kl(&m, &s, c16, &r, l, o, 1);
        ck_assert_msg(kl16 < 1e-7, "layer %d unquantized: KL %g", l, kl16);
    }
    KVSpec q2;
    build_kvspec_uniform(&q2, c->n_layers, c->n_kv_heads, c->head_dim, 2, 4);
    double *want = xmalloc((size_t)c->n_layers * sizeof(double));
    eval_layer_kl(&m, &q2, ids, n, 16, 0, want);
    for (int l = 0; l < c->n_layers; l++) {
        tune_layer_attention(&m, &g, (KVBits){2, 4}, &r, l, o);
        double kl = tune_tail_kl(&m, &s, c16, &r, l, o, 1);
        double kl3 = tune_tail_kl(&m, &s, c16, &r, l, o, 3);         // positions 0, 3, ..., 45
        ck_assert(kl3 > 0 && fabs(kl3 - kl) < 0.5 * kl);             // same order as the full mean
        ck_assert_msg(kl > 1e-6, "layer %d K2V4: KL %g, expected a visible error", l, kl);
        ck_assert_msg(fabs(kl - want[l]) <= 1e-4 * want[l] + 1e-9, "layer %d K2V4: tuner KL %.9g, eval_layer_kl %.9g",
                      l, kl, want[l]);
    }
    free(want); free(o); free(base); free(ids);
    free_kvcache(c16);
    free_kvspec(&q2); free_kvspec(&g); free_kvspec(&sp16);
    free_tunerecord(&r);
    free_runstate(&s);
    free_model(&m);
}
END_TEST

static int run_cmd(const char *cmd, char **out, char **err) {
    return run_capture(cmd, out, err);
}

START_TEST(test_tune_end_to_end) {
    ck_assert_msg(file_exists(TINY_MODEL), "missing " TINY_MODEL);
    char dir[512], cmd[2048];
    snprintf(dir, sizeof dir, "%s/tune-out", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s -m tune -f %s --tokens 32 --kv-preset pertoken --max-bits 4 --out %s",
             run_bin(), TINY_MODEL, TEXT, dir);
    char *out, *err;
    int rc = run_cmd(cmd, &out, &err);
    ck_assert_msg(rc == 0, "tune failed (%d): %s", rc, err);
    ck_assert_msg(strstr(out, "tune preset pertoken front ") != NULL, "no result line: %s", out);
    ck_assert_msg(strstr(err, "tune: sensitivity layer 2/2") != NULL, "no progress: %s", err);
    free(out); free(err);
    const char *need[] = {"results.md", "heatmap.svg", "front.svg"};
    for (int i = 0; i < 3; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, need[i]);
        ck_assert_msg(file_exists(p), "missing %s", p);
    }
    char md[700];
    snprintf(md, sizeof md, "%s/results.md", dir);
    char *text = read_file(md, NULL);
    ck_assert(strstr(text, "| KV4 | 4.000 |") != NULL);      // uniform configs under the cap...
    ck_assert(strstr(text, "| K8V4 | 6.000 |") == NULL);     // ...and none above it
    // The joint search measures the uniform configurations as candidates too, so on the
    // calibration text every uniform one above 2 bits is matched or beaten by a tuned point
    // with no more bits (columns: label, avg bits, bits/elem, predicted, calibration KL, ...).
    double tb[32], tk[32], ub[8], uk[8];
    int nt = 0, nu = 0;
    for (char *ln = text; (ln = strstr(ln, "\n| ")) != NULL; ln++) {
        char label[64];
        double bits, bpe, pred, cal;
        if (sscanf(ln, "\n| %63s | %lf | %lf | %lf | %lf |", label, &bits, &bpe, &pred, &cal) != 5) continue;
        if (!strncmp(label, "tuned-", 6) && nt < 32) { tb[nt] = bits; tk[nt++] = cal; }
        else if (label[0] == 'K' && nu < 8) { ub[nu] = bits; uk[nu++] = cal; }
    }
    ck_assert_int_ge(nt, 2);
    ck_assert_int_eq(nu, 3);                                   // KV2, K4V2, KV4 under the cap
    for (int u = 0; u < nu; u++) {
        if (ub[u] <= 2.0) continue;
        int matched = 0;
        for (int t = 0; t < nt; t++) matched |= tb[t] <= ub[u] + 1e-9 && tk[t] <= uk[u];
        ck_assert_msg(matched, "no tuned point at <= %.2f bits matches the uniform calibration KL %g", ub[u], uk[u]);
    }
    free(text);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n_yaml = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t L = strlen(e->d_name);
        if (L < 6 || strcmp(e->d_name + L - 5, ".yaml")) continue;
        n_yaml++;
        double bits = 0;
        ck_assert_msg(sscanf(e->d_name, "pertoken-%lf.yaml", &bits) == 1, "odd name %s", e->d_name);
        ck_assert(bits >= 2.0 && bits <= 4.0);
        // every written config loads and runs
        snprintf(cmd, sizeof cmd, "%s %s -m compare -f %s --tokens 24 --kv-preset pertoken --kv-config %s/%s",
                 run_bin(), TINY_MODEL, TEXT, dir, e->d_name);
        rc = run_cmd(cmd, &out, &err);
        ck_assert_msg(rc == 0, "--kv-config %s failed: %s", e->d_name, err);
        ck_assert_msg(strstr(out, "kl ") != NULL, "no compare line: %s", out);
        free(out); free(err);
    }
    closedir(d);
    ck_assert_int_ge(n_yaml, 2);

    // the saved sensitivity table is reused as is by a second search (one group: every
    // layer at one pair, so the front is the uniform configurations under the cap)
    char dir2[600], t1[700], t2[700];
    snprintf(dir2, sizeof dir2, "%s/tune-out2", test_tmpdir());
    snprintf(t1, sizeof t1, "%s/sensitivity.tsv", dir);
    snprintf(t2, sizeof t2, "%s/sensitivity.tsv", dir2);
    snprintf(cmd, sizeof cmd, "%s %s -m tune -f %s --tokens 32 --kv-preset pertoken --groups 1 --sensitivity %s --out %s",
             run_bin(), TINY_MODEL, TEXT, t1, dir2);
    rc = run_cmd(cmd, &out, &err);
    ck_assert_msg(rc == 0, "tune --sensitivity failed: %s", err);
    ck_assert(strstr(err, "sensitivity table read from") != NULL && strstr(err, "sensitivity layer") == NULL);
    ck_assert(strstr(out, " groups 1 ") != NULL);
    free(out); free(err);
    char *a = read_file(t1, NULL), *b = read_file(t2, NULL);
    ck_assert_str_eq(a, b);
    free(a); free(b);
}
END_TEST

static void expect_fail(const char *args, const char *needle) {
    char cmd[2048], *err;
    snprintf(cmd, sizeof cmd, "%s %s -m tune %s", run_bin(), TINY_MODEL, args);
    int rc = run_cmd(cmd, NULL, &err);
    ck_assert_msg(rc == 1, "'%s' exited %d, expected 1", args, rc);
    ck_assert_msg(strstr(err, needle) != NULL, "'%s': stderr lacks '%s': %s", args, needle, err);
    ck_assert_msg(strncmp(err, "error: ", 7) == 0 && strchr(err, '\n') == err + strlen(err) - 1,
                  "'%s': not one error line: %s", args, err);
    free(err);
}

START_TEST(test_tune_bad_input) {
    char args[1024], p[600], sub[700];
    const char *tmp = test_tmpdir();
    snprintf(args, sizeof args, "-f %s --max-bits 1.5 --out %s/x", TEXT, tmp);
    expect_fail(args, "--max-bits");
    snprintf(args, sizeof args, "-f %s --max-bits 17 --out %s/x", TEXT, tmp);
    expect_fail(args, "--max-bits");
    snprintf(args, sizeof args, "-f %s --max-bits two --out %s/x", TEXT, tmp);
    expect_fail(args, "--max-bits");
    snprintf(args, sizeof args, "-f %s --groups 0", TEXT);
    expect_fail(args, "--groups");
    snprintf(args, sizeof args, "-f %s --groups 3 --tokens 32 --out %s/x", TEXT, tmp);
    expect_fail(args, "--groups");                              // tiny has 2 layers
    snprintf(p, sizeof p, "%s/a-file", tmp);
    write_bytes(p, "x", 1);
    snprintf(sub, sizeof sub, "%s/out", p);                     // a directory under a file
    snprintf(args, sizeof args, "-f %s --tokens 32 --out %s", TEXT, sub);
    expect_fail(args, "--out");
    snprintf(p, sizeof p, "%s/short.txt", tmp);
    write_bytes(p, "To be, or not to be: that is the question.\n", 43);
    snprintf(args, sizeof args, "-f %s --tokens 32 --out %s/x", p, tmp);
    expect_fail(args, "too short");
    snprintf(p, sizeof p, "%s/empty.txt", tmp);
    write_bytes(p, "", 0);
    snprintf(args, sizeof args, "-f %s --tokens 32 --out %s/x", p, tmp);
    expect_fail(args, "empty");
    snprintf(args, sizeof args, "-i hello --tokens 32 --out %s/x", tmp);
    expect_fail(args, "-f");
    snprintf(p, sizeof p, "%s/bad.tsv", tmp);
    write_bytes(p, "0 1 2 3\n", 8);
    snprintf(args, sizeof args, "-f %s --tokens 32 --sensitivity %s --out %s/x", TEXT, p, tmp);
    expect_fail(args, "bad.tsv");
    snprintf(args, sizeof args, "-f %s --kv kv4 --kv-preset pertoken --tokens 32 --out %s/x", TEXT, tmp);
    expect_fail(args, "--kv");
}
END_TEST

static Suite *tune_suite(void) {
    Suite *s = suite_create("tune");
    TCase *tc = tcase_create("tiny");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_pieces_match_runtime);
    tcase_add_test(tc, test_tune_end_to_end);
    tcase_add_test(tc, test_tune_bad_input);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(tune_suite)
