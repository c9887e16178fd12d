// test_tune.c: the tuner on a real (tiny, random) model: the layer-by-layer pieces agree
// with the runtime's forward pass and per-layer KL, `run -m tune` on two kinds of text and a
// --verify kind writes configs that `run --kv-config` loads, its sensitivity tables are
// reused per kind, and bad input is rejected with one clear line.
#include "testutil.h"
#include "../model/eval.h"
#include "../quant/kvconfig.h"
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

#define MATH DATA_DIR "/kinds/gsm8k_worked.txt"
#define CODE DATA_DIR "/kinds/c_source.txt"
#define DOCS DATA_DIR "/kinds/design_doc.txt"

// The KL cells of a results.md row: "| label | bits | bits/elem | worst | k1 | ... |".
static int row_cells(const char *text, const char *label, double *v, int max) {
    char key[80];
    snprintf(key, sizeof key, "\n| %s | ", label);
    const char *p = strstr(text, key);
    if (!p) return 0;
    p += strlen(key) - 2;
    int n = 0;
    while (n < max && *p == '|' && p[1] == ' ') {
        char *end;
        while (*p == '|' || *p == ' ' || *p == '*') p++;
        v[n] = strtod(p, &end);
        if (end == p) v[n] = NAN;           // "-" (no score)
        while (*end && *end != '|' && *end != '\n') end++;
        p = end;
        n++;
    }
    return n;
}

START_TEST(test_tune_end_to_end) {
    ck_assert_msg(file_exists(TINY_MODEL), "missing " TINY_MODEL);
    char dir[512], cmd[2048];
    snprintf(dir, sizeof dir, "%s/tune-out", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s -m tune -f %s,%s --verify %s --tokens 32 --kv-preset pertoken --max-bits 4 --out %s",
             run_bin(), TINY_MODEL, TEXT, MATH, DOCS, dir);
    char *out, *err;
    int rc = run_cmd(cmd, &out, &err);
    ck_assert_msg(rc == 0, "tune failed (%d): %s", rc, err);
    ck_assert_msg(strstr(out, "tune preset pertoken front 4 groups ") && strstr(out, " tokens 32 kinds 2 wall_s "),
                  "no result line: %s", out);
    ck_assert_msg(strstr(err, "tune: gsm8k_worked: sensitivity layer 2/2") != NULL, "no progress: %s", err);
    ck_assert_msg(strstr(err, "tune: verify design_doc ") != NULL, "no --verify run: %s", err);
    free(out); free(err);
    const char *need[] = {"results.md", "heatmap.svg", "front.svg", "sensitivity.tsv"};
    for (int i = 0; i < 4; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, need[i]);
        ck_assert_msg(file_exists(p), "missing %s", p);
    }
    char md[700];
    snprintf(md, sizeof md, "%s/results.md", dir);
    char *text = read_file(md, NULL);
    // columns: the two calibration kinds, the in-domain mean, the kind it did not calibrate on
    ck_assert(strstr(text, "| tinyshakespeare | gsm8k_worked | in-domain mean | **design_doc** (not calibrated on) |"));
    ck_assert(strstr(text, "| KV4 | 4.000 |") != NULL);          // uniform configs under the cap...
    ck_assert(strstr(text, "| KV2 | 2.000 |") != NULL);
    ck_assert(strstr(text, "| K8V4 | 6.000 |") == NULL);         // ...and none above it
    double v[16];
    for (int b = 0; b < 4; b++) {
        // The uniform configurations within a budget are candidates too, so every tuned point's
        // worst-kind calibration ratio is at most 1; its held-back numbers are all there.
        char label[32];
        snprintf(label, sizeof label, "tuned-%.1f", 2.5 + 0.5 * b);
        char *at = strstr(text, label);
        ck_assert_msg(at != NULL, "no %s row", label);
        const char *end = strchr(at, '|');
        snprintf(label, sizeof label, "%.*s", (int)(end - at - 1), at);   // "tuned-4.0=KV4" too
        ck_assert_int_eq(row_cells(text, label, v, 16), 8);
        ck_assert_msg(v[2] <= 1.0, "%s: worst ratio %g", label, v[2]);
        for (int k = 3; k < 7; k++) ck_assert_msg(v[k] > 0 && isfinite(v[k]), "%s: cell %d = %g", label, k, v[k]);
    }
    ck_assert(row_cells(text, "KV2", v, 16) == 8 && isnan(v[2]));
    ck_assert(strstr(text, "| best uniform on design_doc |") != NULL);
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
        ck_assert(bits >= 2.5 && bits <= 4.0);
        // every written config loads and runs
        snprintf(cmd, sizeof cmd, "%s %s -m compare -f %s --tokens 24 --kv-preset pertoken --kv-config %s/%s",
                 run_bin(), TINY_MODEL, TEXT, dir, e->d_name);
        rc = run_cmd(cmd, &out, &err);
        ck_assert_msg(rc == 0, "--kv-config %s failed: %s", e->d_name, err);
        ck_assert_msg(strstr(out, "kl ") != NULL, "no compare line: %s", out);
        free(out); free(err);
    }
    closedir(d);
    ck_assert_int_eq(n_yaml, 4);                                 // one per budget: 2.5 .. 4.0

    // The saved tables are reused as they are by a second search on one of the two kinds (one
    // group: every layer at one pair), which measures no sensitivity and writes that kind's rows.
    char dir2[600], t1[700], t2[700];
    snprintf(dir2, sizeof dir2, "%s/tune-out2", test_tmpdir());
    snprintf(t1, sizeof t1, "%s/sensitivity.tsv", dir);
    snprintf(t2, sizeof t2, "%s/sensitivity.tsv", dir2);
    snprintf(cmd, sizeof cmd, "%s %s -m tune -f %s --tokens 32 --kv-preset pertoken --groups 1 --sensitivity %s --out %s",
             run_bin(), TINY_MODEL, MATH, t1, dir2);
    rc = run_cmd(cmd, &out, &err);
    ck_assert_msg(rc == 0, "tune --sensitivity failed: %s", err);
    ck_assert(strstr(err, "sensitivity tables read from") != NULL && strstr(err, "sensitivity layer") == NULL);
    ck_assert(strstr(out, " groups 1 tokens 32 kinds 1 ") != NULL);
    free(out); free(err);
    char *a = read_file(t1, NULL), *b = read_file(t2, NULL);
    char *math_rows = strstr(a, "\ngsm8k_worked\t");
    ck_assert_ptr_nonnull(math_rows);
    ck_assert_ptr_nonnull(strstr(b, math_rows));                 // the same rows, byte for byte
    ck_assert_ptr_null(strstr(b, "tinyshakespeare"));
    free(a); free(b);
}
END_TEST

static void expect_fail(const char *args, const char *needle);

// The KV2 row's held-back KL in a results.md.
static double kv2_kl(const char *dir) {
    char md[700];
    snprintf(md, sizeof md, "%s/results.md", dir);
    char *text = read_file(md, NULL);
    double v[16];
    ck_assert_int_ge(row_cells(text, "KV2", v, 16), 4);
    free(text);
    return v[3];
}

// --kv-rotate (docs/DESIGN.md §3.10, §6): every measurement runs on the rotated cache (the
// uniform KV2's KL is not the plain run's), every config written says rotate: true on every
// layer and loads back so, the report and the summary say so, and a sensitivity table is reused
// only under the rotation it was measured with.
START_TEST(test_tune_rotated) {
    ck_assert_msg(file_exists(TINY_MODEL), "missing " TINY_MODEL);
    Model m;
    load_model(&m, TINY_MODEL);
    const Config *c = &m.config;
    char rot[512], plain[512], cmd[2048], *out, *err;
    snprintf(rot, sizeof rot, "%s/tune-rot", test_tmpdir());
    snprintf(plain, sizeof plain, "%s/tune-plain", test_tmpdir());
    const char *args = "--tokens 32 --kv-preset pertoken --max-bits 3";
    snprintf(cmd, sizeof cmd, "%s %s -m tune -f %s %s --kv-rotate --out %s", run_bin(), TINY_MODEL, TEXT, args, rot);
    int rc = run_cmd(cmd, &out, &err);
    ck_assert_msg(rc == 0, "tune --kv-rotate failed (%d): %s", rc, err);
    ck_assert_msg(strstr(out, "tuned configs for a rotated cache") != NULL, "summary: %s", out);
    ck_assert(strstr(out, "tune preset pertoken front 2 groups ") != NULL);
    ck_assert(strstr(err, "pertoken preset with a rotated cache") != NULL);
    free(out); free(err);
    snprintf(cmd, sizeof cmd, "%s %s -m tune -f %s %s --out %s", run_bin(), TINY_MODEL, TEXT, args, plain);
    rc = run_cmd(cmd, &out, &err);
    ck_assert_msg(rc == 0, "tune failed (%d): %s", rc, err);
    ck_assert(strstr(out, "rotated") == NULL);
    free(out); free(err);

    double kr = kv2_kl(rot), kp = kv2_kl(plain);
    ck_assert_msg(kr > 0 && kp > 0 && fabs(kr - kp) > 1e-3 * kp, "KV2 held-back KL rotated %g, plain %g", kr, kp);
    char p[700];
    snprintf(p, sizeof p, "%s/results.md", rot);
    char *text = read_file(p, NULL);
    ck_assert(strstr(text, "# KVTuner search: pertoken preset, rotated cache\n") != NULL);
    free(text);
    snprintf(p, sizeof p, "%s/results.md", plain);
    text = read_file(p, NULL);
    ck_assert(strstr(text, "rotated") == NULL);
    free(text);
    snprintf(p, sizeof p, "%s/sensitivity.tsv", rot);
    text = read_file(p, NULL);
    ck_assert(strstr(text, "\n# rotate: true\n") != NULL);
    free(text);

    int n_yaml = 0;
    for (int b = 0; b < 2; b++) {
        snprintf(p, sizeof p, "%s/pertoken-%.1f.yaml", rot, 2.5 + 0.5 * b);
        ck_assert_msg(file_exists(p), "missing %s", p);
        n_yaml++;
        text = read_file(p, NULL);
        int lines = 0;
        for (const char *q = text; (q = strstr(q, "\n  rotate: true\n")); q++) lines++;
        ck_assert_int_eq(lines, c->n_layers);
        free(text);
        KVSpec sp;
        build_kvspec_uniform(&sp, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
        load_kvconfig(&sp, p);
        ck_assert_ptr_nonnull(sp.rotate);
        for (int l = 0; l < c->n_layers; l++) ck_assert_int_eq(sp.rotate[l], 1);
        free_kvspec(&sp);
        snprintf(cmd, sizeof cmd, "%s %s -m compare -f %s --tokens 24 --kv-preset pertoken --kv-config %s", run_bin(),
                 TINY_MODEL, TEXT, p);
        rc = run_cmd(cmd, &out, &err);
        ck_assert_msg(rc == 0 && strstr(out, "kl ") != NULL, "--kv-config %s: %s", p, err);
        free(out); free(err);
        snprintf(p, sizeof p, "%s/pertoken-%.1f.yaml", plain, 2.5 + 0.5 * b);
        text = read_file(p, NULL);
        ck_assert(strstr(text, "rotate") == NULL);
        free(text);
    }
    ck_assert_int_eq(n_yaml, 2);

    // the same table, reused under the rotation it was measured with; refused under the other
    char args2[1400];
    snprintf(cmd, sizeof cmd, "%s %s -m tune -f %s %s --kv-rotate --sensitivity %s/sensitivity.tsv --out %s/again",
             run_bin(), TINY_MODEL, TEXT, args, rot, rot);
    rc = run_cmd(cmd, &out, &err);
    ck_assert_msg(rc == 0 && strstr(err, "sensitivity tables read from") != NULL, "reuse failed: %s", err);
    free(out); free(err);
    snprintf(args2, sizeof args2, "-f %s %s --sensitivity %s/sensitivity.tsv --out %s/x", TEXT, args, rot, rot);
    expect_fail(args2, "measured with a rotated cache (--kv-rotate) and this run does not rotate");
    snprintf(args2, sizeof args2, "-f %s %s --kv-rotate --sensitivity %s/sensitivity.tsv --out %s/x", TEXT, args, plain,
             rot);
    expect_fail(args2, "measured without rotation and this run rotates the cache");
    free_model(&m);
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
    // the list of calibration files and --verify
    snprintf(args, sizeof args, "-f %s,,%s --tokens 32 --out %s/x", TEXT, MATH, tmp);
    expect_fail(args, "empty file name");
    snprintf(args, sizeof args, "-f %s, --tokens 32 --out %s/x", TEXT, tmp);
    expect_fail(args, "empty file name");
    snprintf(args, sizeof args, "-f %s,%s --tokens 32 --out %s/x", TEXT, TEXT, tmp);
    expect_fail(args, "the same file twice");
    snprintf(sub, sizeof sub, "%s/tinyshakespeare.md", tmp);      // a second kind of the same name
    write_bytes(sub, "x\n", 2);
    snprintf(args, sizeof args, "-f %s,%s --tokens 32 --out %s/x", TEXT, sub, tmp);
    expect_fail(args, "a second kind named 'tinyshakespeare'");
    snprintf(args, sizeof args, "-f %s,%s,%s,%s,%s,%s,%s,%s --tokens 32 --out %s/x", TEXT, TEXT, TEXT, TEXT, TEXT, TEXT,
             TEXT, TEXT, tmp);
    expect_fail(args, "more than 7 calibration files");
    snprintf(args, sizeof args, "-f %s --verify %s --tokens 32 --out %s/x", TEXT, TEXT, tmp);
    expect_fail(args, "--verify");                              // not a kind it did not see
    snprintf(args, sizeof args, "-f %s --verify %s --verify %s --tokens 32 --out %s/x", TEXT, DOCS, MATH, tmp);
    expect_fail(args, "--verify: given twice");
    snprintf(args, sizeof args, "-f %s --verify %s/none.txt --tokens 32 --out %s/x", TEXT, tmp, tmp);
    expect_fail(args, "none.txt");
    snprintf(args, sizeof args, "-f %s --verify %s --tokens 32 --out %s/x", TEXT, p, tmp);   // 8 bytes: too short
    expect_fail(args, "too short");
    snprintf(args, sizeof args, "-f %s --tokens 32 --out %s/x --verify", TEXT, tmp);
    expect_fail(args, "--verify: missing value");
    snprintf(args, sizeof args, "-f %s --verify '' --tokens 32 --out %s/x", TEXT, tmp);
    expect_fail(args, "--verify: empty file name");
    // a sensitivity table without the kind, or measured on another token count (the KL runs use
    // the first half of --tokens)
    snprintf(p, sizeof p, "%s/one.tsv", tmp);
    const char *tsv = "# options: KV2 K2V4 K2V8 K4V2 KV4 K4V8 K8V2 K8V4 KV8\n"
                      "gsm8k_worked\t16\t0\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t1\t111111111\n";
    write_bytes(p, tsv, strlen(tsv));
    snprintf(args, sizeof args, "-f %s --tokens 32 --sensitivity %s --out %s/x", TEXT, p, tmp);
    expect_fail(args, "no line for kind 'tinyshakespeare' layer 0");
    snprintf(args, sizeof args, "-f %s --tokens 48 --sensitivity %s --out %s/x", MATH, p, tmp);
    expect_fail(args, "measured on 16 tokens, this run measures 24 (--tokens 32)");   // half of --tokens
    snprintf(args, sizeof args, "-f %s --tokens 32 --sensitivity %s --out %s/x", MATH, p, tmp);
    expect_fail(args, "no line for kind 'gsm8k_worked' layer 1");   // tiny has 2 layers
    // a table with no rotate line was measured without rotation
    snprintf(args, sizeof args, "-f %s --tokens 32 --kv-rotate --sensitivity %s --out %s/x", MATH, p, tmp);
    expect_fail(args, "line 2: measured without rotation and this run rotates the cache");
    const char *odd = "# options: KV2 K2V4 K2V8 K4V2 KV4 K4V8 K8V2 K8V4 KV8\n# rotate: yes\n";
    write_bytes(p, odd, strlen(odd));
    snprintf(args, sizeof args, "-f %s --tokens 32 --sensitivity %s --out %s/x", MATH, p, tmp);
    expect_fail(args, "'# rotate:' is followed by 'yes', not true or false");
    const char *old = "# options: KV2 K4V2 KV4\n";
    write_bytes(p, old, strlen(old));
    snprintf(args, sizeof args, "-f %s --tokens 32 --sensitivity %s --out %s/x", MATH, p, tmp);
    expect_fail(args, "the options are not this tuner's");
}
END_TEST

static Suite *tune_suite(void) {
    Suite *s = suite_create("tune");
    TCase *tc = tcase_create("tiny");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_pieces_match_runtime);
    tcase_add_test(tc, test_tune_end_to_end);
    tcase_add_test(tc, test_tune_rotated);
    tcase_add_test(tc, test_tune_bad_input);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(tune_suite)
