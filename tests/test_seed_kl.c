// test_seed_kl.c: the runner's KL against the seed's quantizer run inside transformers
// (tests/golden/seed_kl/, made by tests/reference/make_seed_kl.py; tests/golden/README.md).
//
// For each preset (pertoken, kivi) and spec (kv8, k8v4, kv4), `run -m compare` over the first
// 512 tokens of tests/golden/seed_kl/text.txt must give a mean KL(p_fp16 || p_kv) within 5%
// (relative), or two of the reference's own standard deviations where that is more, of the
// reference's rows "runner": the seed's quantizer and the seed's timing (a token attends to its
// own K/V unquantized, then it is stored; docs/DESIGN.md §3.3) over kvtuner.c's regions, the
// same fp16 baseline, the same token ids. What is left is float summation order, and a
// quantized run amplifies it (a value that rounds the other way changes the next layers' K/V,
// so more codes): the reference's row is the mean of a few realizations, and the spread of
// those realizations (printed, kl_sd) is what a correct runner is expected to scatter by. The
// rows "seed" (the seed's FlexibleQuantizedCache line for line, with the quirks of
// docs/DESIGN.md §3.9: pertoken flushes every second step, KIVI requantizes in straddling
// groups and flushes values with keys) are printed beside ours as information.
// First the token ids: the reference scored ids.txt, which must be what the runner encodes.
#include "testutil.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_DIR "tests/golden/seed_kl"
#define TEXT GOLDEN_DIR "/text.txt"
enum { N_TOKENS = 512, MAX_ROWS = 32 };
static const double REL_BOUND = 0.05;

static const char *const PRESET[] = { "pertoken", "kivi" };
static const char *const SPEC[] = { "kv8", "k8v4", "kv4" };

typedef struct { char preset[16], spec[16], timing[16]; double kl, top1; int tokens; double sd, lo, hi; int runs; } Row;

// kl.tsv: '#' comment lines, a header line, then preset spec timing kl top1 tokens kl_sd kl_min
// kl_max runs: kl and top1 are the means over `runs` realizations of the reference (the same
// computation with the attention scores scaled by 1 + i * 2^-22), kl_sd/min/max their spread.
static int read_rows(Row *rows) {
    size_t len;
    char *text = read_file(GOLDEN_DIR "/kl.tsv", &len), *save = NULL;
    int n = 0, header = 0;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        if (!header) { header = 1; ck_assert_msg(strncmp(line, "preset\tspec\ttiming\tkl", 21) == 0, "kl.tsv header: %s", line); continue; }
        ck_assert_msg(n < MAX_ROWS, "kl.tsv: too many rows");
        Row *r = &rows[n];
        ck_assert_msg(sscanf(line, "%15s %15s %15s %lf %lf %d %lf %lf %lf %d", r->preset, r->spec, r->timing, &r->kl,
                             &r->top1, &r->tokens, &r->sd, &r->lo, &r->hi, &r->runs) == 10, "kl.tsv row: %s", line);
        n++;
    }
    free(text);
    return n;
}

static const Row *find_row(const Row *rows, int n, const char *preset, const char *spec, const char *timing) {
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].preset, preset) && !strcmp(rows[i].spec, spec) && !strcmp(rows[i].timing, timing)) return &rows[i];
    return NULL;
}

static char *last_line(char *s) {
    size_t n = strlen(s);
    while (n && s[n - 1] == '\n') s[--n] = 0;
    char *p = strrchr(s, '\n');
    return p ? p + 1 : s;
}

START_TEST(test_golden_complete) {
    Row rows[MAX_ROWS];
    int n = read_rows(rows);
    ck_assert_int_eq(n, 12);
    for (int p = 0; p < 2; p++)
        for (int s = 0; s < 3; s++)
            for (int t = 0; t < 2; t++) {
                const Row *r = find_row(rows, n, PRESET[p], SPEC[s], t ? "runner" : "seed");
                ck_assert_msg(r, "kl.tsv has no row %s %s %s", PRESET[p], SPEC[s], t ? "runner" : "seed");
                ck_assert_int_eq(r->tokens, N_TOKENS);
                ck_assert_msg(r->kl > 0 && r->kl < 10 && r->top1 > 0 && r->top1 <= 1 && r->runs >= 1 &&
                              r->lo <= r->kl && r->kl <= r->hi && r->sd >= 0, "implausible row %s %s", PRESET[p], SPEC[s]);
            }
}
END_TEST

// The reference scored ids.txt; the runner must encode text.txt to the same ids.
START_TEST(test_token_ids) {
    ck_assert_msg(file_exists(DEFAULT_MODEL), "%s missing: run make model", DEFAULT_MODEL);
    size_t len;
    char *want = read_file(GOLDEN_DIR "/ids.txt", &len), *save = NULL;
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s %s -m tokenize -f %s", run_bin(), DEFAULT_MODEL, TEXT);
    ck_assert_int_eq(run_capture(cmd, &out, NULL), 0);
    char *tok = strtok_r(want, " \n", &save);
    ck_assert_str_eq(tok, "ids");
    int n = atoi(strtok_r(NULL, " \n", &save));
    ck_assert_int_eq(n, N_TOKENS);
    char *got = last_line(out), *gsave = NULL, *g = strtok_r(got, " ", &gsave);
    for (int i = 0; i < n; i++) {
        char *w = strtok_r(NULL, " \n", &save);
        ck_assert_msg(w && g, "ids end early at %d", i);
        ck_assert_msg(atoi(w) == atoi(g), "token %d: runner %s, reference %s", i, g, w);
        g = strtok_r(NULL, " ", &gsave);
    }
    free(out);
    free(want);
}
END_TEST

// _i = preset * 3 + spec
START_TEST(test_kl_matches_reference) {
    ck_assert_msg(file_exists(DEFAULT_MODEL), "%s missing: run make model", DEFAULT_MODEL);
    const char *preset = PRESET[_i / 3], *spec = SPEC[_i % 3];
    Row rows[MAX_ROWS];
    int n = read_rows(rows);
    const Row *ref = find_row(rows, n, preset, spec, "runner"), *seed = find_row(rows, n, preset, spec, "seed");
    ck_assert_msg(ref && seed, "kl.tsv lacks %s %s", preset, spec);
    char cmd[1024], *out = NULL, kv[32];
    snprintf(cmd, sizeof cmd, "%s %s -m compare -f %s --tokens %d --kv %s --kv-preset %s", run_bin(), DEFAULT_MODEL, TEXT,
             N_TOKENS, spec, preset);
    ck_assert_msg(run_capture(cmd, &out, NULL) == 0, "`%s` failed", cmd);
    double kl, top1, pb, pk, bits;
    int tokens;
    ck_assert_msg(sscanf(last_line(out), "kl %lf top1 %lf ppl_base %lf ppl_kv %lf tokens %d kv %31s kv_bits_per_elem %lf",
                         &kl, &top1, &pb, &pk, &tokens, kv, &bits) == 7, "compare line: %s", out);
    ck_assert_int_eq(tokens, N_TOKENS);
    ck_assert_str_eq(kv, spec);
    double rel = fabs(kl - ref->kl) / ref->kl, bound = fmax(REL_BOUND, 2.0 * ref->sd / ref->kl);
    fprintf(stderr, "seed_kl %-8s %-4s: run kl %.6g top1 %.4f | reference, kvtuner.c's cache: kl %.6g (rel %+.4f; %d runs "
            "%.6g..%.6g, sd %.2f%%) top1 %.4f | the seed line for line: kl %.6g top1 %.4f (run/seed %.3f)\n", preset, spec, kl, top1,
            ref->kl, (kl - ref->kl) / ref->kl, ref->runs, ref->lo, ref->hi, 100 * ref->sd / ref->kl, ref->top1, seed->kl,
            seed->top1, kl / seed->kl);
    ck_assert_msg(rel <= bound, "%s %s: run's KL %.6g vs the reference's %.6g (kvtuner.c's cache): relative error %.4f > %.4f "
                  "(the reference's own runs span %.6g..%.6g, sd %.2f%%)", preset, spec, kl, ref->kl, rel, bound,
                  ref->lo, ref->hi, 100 * ref->sd / ref->kl);
    free(out);
}
END_TEST

static Suite *seed_kl_suite(void) {
    Suite *s = suite_create("seed_kl");
    TCase *files = tcase_create("golden files");
    tcase_add_test(files, test_golden_complete);
    suite_add_tcase(s, files);
    TCase *tc = tcase_create("default model");
    tcase_set_timeout(tc, 600);   // one compare run over 512 tokens: ~3-5 s on 2 idle cores, far more when shared
    tcase_add_test(tc, test_token_ids);
    tcase_add_loop_test(tc, test_kl_matches_reference, 0, 6);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(seed_kl_suite)
