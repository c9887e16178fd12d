// test_cli.c: the `run` command line (docs/DESIGN.md §4): every bad input
// gives exit code 1 and exactly one clear line on stderr; good runs end with the
// machine-readable line. Uses models/tiny.bin (export --random tiny) and corrupt copies of it.
#include "testutil.h"
#include "../model/modelbin.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Run `run <args>`; expect exit 1, one stderr line, containing `want`.
static void expect_error(const char *args, const char *want) {
    char cmd[4096], *out, *err;
    snprintf(cmd, sizeof cmd, "%s %s", run_bin(), args);
    int rc = run_capture(cmd, &out, &err);
    ck_assert_msg(rc == 1, "`%s`: exit %d, want 1 (stderr: %s)", args, rc, err);
    ck_assert_msg(strstr(err, want) != NULL, "`%s`: stderr '%s' lacks '%s'", args, err, want);
    ck_assert_msg(strncmp(err, "error: ", 7) == 0, "`%s`: stderr must start with 'error: ': %s", args, err);
    size_t lines = 0;
    for (char *p = err; *p; p++) lines += *p == '\n';
    ck_assert_msg(lines == 1, "`%s`: %zu lines on stderr, want 1: %s", args, lines, err);
    free(out);
    free(err);
}

static void need_tiny(void) {
    ck_assert_msg(file_exists(TINY_MODEL), "%s missing: run `make test` (it builds it)", TINY_MODEL);
}

// ---- flags ---------------------------------------------------------------------------

START_TEST(test_bad_flags) {
    need_tiny();
    expect_error(TINY_MODEL " --frobnicate", "unknown option '--frobnicate'");
    expect_error(TINY_MODEL " -x 3", "unknown option '-x'");
    expect_error(TINY_MODEL " -i hi -n", "-n: missing value");
    expect_error(TINY_MODEL " -i", "-i: missing value");
    expect_error(TINY_MODEL " -i hi -n abc", "-n: not an integer: 'abc'");
    expect_error(TINY_MODEL " -i hi -n 12x", "-n: not an integer: '12x'");
    expect_error(TINY_MODEL " -i hi -n -5", "-n: -5 is out of range");
    expect_error(TINY_MODEL " -i hi -t warm", "-t: not a number: 'warm'");
    expect_error(TINY_MODEL " -i hi -t -0.5", "-t: temperature -0.5 is negative");
    expect_error(TINY_MODEL " -i hi -t nan", "-t: not a number");
    expect_error(TINY_MODEL " -i hi -p 1.5", "-p: top-p 1.5 is outside [0, 1]");
    expect_error(TINY_MODEL " -i hi -p -0.1", "-p: top-p -0.1 is outside [0, 1]");
    expect_error(TINY_MODEL " -i hi -s x", "-s: not an integer");
    expect_error(TINY_MODEL " -i hi --threads 0", "--threads: 0 is out of range");
    expect_error(TINY_MODEL " -i hi --ctx 0", "--ctx: 0 is out of range");
    expect_error(TINY_MODEL " -i hi -m dance", "-m: unknown mode 'dance'");
    expect_error(TINY_MODEL " -i hi --device tpu", "--device: unknown device 'tpu'");
    expect_error(TINY_MODEL " -i hi --attention slow", "--attention: unknown attention 'slow'");
    expect_error(TINY_MODEL " -i hi --attention", "--attention: missing value");
    expect_error(TINY_MODEL " -i hi --kv kv3", "--kv: 'kv3'");
    expect_error(TINY_MODEL " -i hi --kv", "--kv: missing value");
    expect_error(TINY_MODEL " -i hi --device cuda", "--device cuda");
    expect_error(TINY_MODEL " -i hi -f x.txt", "-i and -f");
    expect_error(TINY_MODEL " " TINY_MODEL, "unexpected argument");
    expect_error("", "no model given");
}
END_TEST

START_TEST(test_bad_inputs) {
    need_tiny();
    char args[1024], path[512];
    // invalid UTF-8 is refused (never replaced or dropped), with the byte offset
    expect_error(TINY_MODEL " -i \"$(printf 'ab\\377')\"", "-i: invalid UTF-8 at byte 2");
    expect_error(TINY_MODEL " -i \"$(printf '\\303(')\"", "-i: invalid UTF-8 at byte 0");
    expect_error(TINY_MODEL " -i \"$(printf '\\300\\257')\"", "invalid UTF-8");               // overlong
    expect_error(TINY_MODEL " -i \"$(printf '\\355\\240\\200')\"", "invalid UTF-8");           // surrogate
    snprintf(path, sizeof path, "%s/bad_utf8.txt", test_tmpdir());
    write_bytes(path, "hello \xe2\x82", 8);                                      // cut mid-character
    snprintf(args, sizeof args, "%s -f %s", TINY_MODEL, path);
    expect_error(args, "bad_utf8.txt: invalid UTF-8 at byte 6");
    expect_error(TINY_MODEL " -f /nonexistent/prompt.txt", "/nonexistent/prompt.txt: cannot open");
    // a prompt longer than the context is an error, never truncated
    expect_error(TINY_MODEL " --ctx 4 -i 'one two three four five six seven'", "the context holds 4");
    expect_error(TINY_MODEL " -m tokenize", "-m tokenize: give the text");
    expect_error(TINY_MODEL " -i ''", "-i: the prompt is empty");
}
END_TEST

// ---- model files ---------------------------------------------------------------------

// A copy of tiny.bin with the header changed by `edit`, or cut to `keep` bytes.
static const char *corrupt_copy(const char *name, void (*edit)(ModelHeader *), size_t keep) {
    static char path[512];
    size_t n;
    char *data = read_file(TINY_MODEL, &n);
    if (edit) edit((ModelHeader *)data);
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    write_bytes(path, data, keep && keep < n ? keep : n);
    free(data);
    return path;
}

static void magic(ModelHeader *h) { h->magic = 0x46554747; }
static void newer(ModelHeader *h) { h->version = 7; }
static void zero_dim(ModelHeader *h) { h->dim = 0; }
static void neg_layers(ModelHeader *h) { h->n_layers = -3; }
static void huge_vocab(ModelHeader *h) { h->vocab_size = 2000000000; }
static void more_layers(ModelHeader *h) { h->n_layers += 1; }      // needs more weight bytes
static void bad_heads(ModelHeader *h) { h->n_kv_heads = h->n_heads + 1; }
static void tok_outside(ModelHeader *h) { h->tok_offset = UINT64_MAX - 8; }

static void expect_model_error(const char *path, const char *want) {
    char args[1024];
    snprintf(args, sizeof args, "%s -i hi -n 1", path);
    expect_error(args, want);
    expect_error(args, path);   // the message names the file
}

START_TEST(test_bad_model_files) {
    need_tiny();
    expect_model_error("/nonexistent/model.bin", "cannot open");
    expect_model_error(corrupt_copy("magic.bin", magic, 0), "not a model.bin file (bad magic)");
    expect_model_error(corrupt_copy("newer.bin", newer, 0), "newer format version 7, this runner reads 1");
    expect_model_error(corrupt_copy("trunc.bin", NULL, 100000), "truncated");
    expect_model_error(corrupt_copy("tiny_head.bin", NULL, 100), "shorter than the 256-byte header");
    expect_model_error(corrupt_copy("zero_dim.bin", zero_dim, 0), "dim is 0, must be positive");
    expect_model_error(corrupt_copy("neg_layers.bin", neg_layers, 0), "n_layers is -3");
    expect_model_error(corrupt_copy("huge_vocab.bin", huge_vocab, 0), "vocab_size");
    expect_model_error(corrupt_copy("more_layers.bin", more_layers, 0), "bytes of weights");
    expect_model_error(corrupt_copy("bad_heads.bin", bad_heads, 0), "n_kv_heads");
    expect_model_error(corrupt_copy("tok_outside.bin", tok_outside, 0), "tokenizer section");
    char dir[600];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    expect_model_error(dir, "not a regular file");
}
END_TEST

// ---- good runs -------------------------------------------------------------------------

// Parse the last line of s as "key value" pairs; return the value of key (or NAN).
static double last_line_value(const char *s, const char *key) {
    size_t n = strlen(s);
    while (n && s[n - 1] == '\n') n--;
    size_t start = n;
    while (start && s[start - 1] != '\n') start--;
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)(n - start), s + start);
    char *save, *tok = strtok_r(line, " ", &save);
    while (tok) {
        char *val = strtok_r(NULL, " ", &save);
        if (!val) break;
        if (!strcmp(tok, key)) return atof(val);
        tok = strtok_r(NULL, " ", &save);
    }
    return NAN;
}

START_TEST(test_generate_greedy) {
    need_tiny();
    char cmd[1024], *out1, *err1, *out2, *err2;
    snprintf(cmd, sizeof cmd, "%s %s -i 'Once upon a time' -n 12 -t 0", run_bin(), TINY_MODEL);
    ck_assert_int_eq(run_capture(cmd, &out1, &err1), 0);
    ck_assert_int_eq(run_capture(cmd, &out2, &err2), 0);
    ck_assert_str_eq(out1, out2);                          // greedy is deterministic
    double tokens = last_line_value(err1, "tokens");
    ck_assert_msg(tokens >= 1 && tokens <= 12, "tokens %g (stderr %s)", tokens, err1);
    ck_assert(last_line_value(err1, "tok_per_s") >= 0);
    ck_assert(last_line_value(err1, "kv_bytes") > 0);
    ck_assert(last_line_value(err1, "kv_bits_per_elem") == 16.0);   // fp16 cache
    free(out1); free(err1); free(out2); free(err2);
}
END_TEST

START_TEST(test_generate_seeded) {
    need_tiny();
    char a[1024], b[1024], *o1, *o2, *o3, *e;
    snprintf(a, sizeof a, "%s %s -i 'The' -n 16 -t 1.5 -p 0.95 -s 42", run_bin(), TINY_MODEL);
    snprintf(b, sizeof b, "%s %s -i 'The' -n 16 -t 1.5 -p 0.95 -s 43", run_bin(), TINY_MODEL);
    ck_assert_int_eq(run_capture(a, &o1, NULL), 0);
    ck_assert_int_eq(run_capture(a, &o2, NULL), 0);
    ck_assert_int_eq(run_capture(b, &o3, &e), 0);
    ck_assert_str_eq(o1, o2);                              // the same seed gives the same text
    ck_assert_msg(strcmp(o1, o3) != 0, "seeds 42 and 43 gave the same 16 sampled tokens");
    free(o1); free(o2); free(o3); free(e);
}
END_TEST

START_TEST(test_tokenize_mode) {
    need_tiny();
    char cmd[1024], *out, *err;
    snprintf(cmd, sizeof cmd, "%s %s -m tokenize -i 'Hello world 123'", run_bin(), TINY_MODEL);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 0);
    int n = 0;
    for (char *p = strtok(out, " \n"); p; p = strtok(NULL, " \n")) {
        char *end;
        long id = strtol(p, &end, 10);
        ck_assert_msg(*end == 0 && id >= 0 && id < 49152, "not a token id: '%s'", p);
        n++;
    }
    ck_assert_msg(n >= 5, "'Hello world 123' gave %d ids (digits are split one by one)", n);
    free(out); free(err);
}
END_TEST

// --attention reference runs the plain reference (kernels/attention_ref.c) in every mode: the
// perplexity through it matches the fast path's to the attention tolerance, generation runs.
static double ppl_with(const char *attention) {
    char cmd[1024], *out, *err;
    snprintf(cmd, sizeof cmd, "%s %s -m ppl --kv kv4 --kv-preset pertoken --attention %s -i 'It was the best of times, "
             "it was the worst of times, it was the age of wisdom, it was the age of foolishness'", run_bin(), TINY_MODEL,
             attention);
    ck_assert_msg(run_capture(cmd, &out, &err) == 0, "%s: %s", cmd, err);
    double ppl = NAN;
    const char *line = strstr(out, "\nppl ");
    ck_assert_msg(line && sscanf(line + 1, "ppl %lf", &ppl) == 1, "no ppl line in %s", out);
    free(out); free(err);
    return ppl;
}

START_TEST(test_attention_flag) {
    need_tiny();
    double fast = ppl_with("fast"), ref = ppl_with("reference");
    ck_assert_msg(fast > 1 && fabs(fast - ref) <= 1e-3 * ref, "ppl fast %g, reference %g", fast, ref);
    char cmd[1024], *out, *err;
    snprintf(cmd, sizeof cmd, "%s %s -i 'Once upon a time' -n 8 -t 0 --kv k4v2 --kv-preset pertoken --attention reference", run_bin(), TINY_MODEL);
    ck_assert_msg(run_capture(cmd, &out, &err) == 0, "%s", err);
    ck_assert(last_line_value(err, "tokens") >= 1);
    free(out); free(err);
}
END_TEST

static Suite *cli_suite(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bad_flags);
    tcase_add_test(tc, test_bad_inputs);
    tcase_add_test(tc, test_bad_model_files);
    tcase_add_test(tc, test_generate_greedy);
    tcase_add_test(tc, test_generate_seeded);
    tcase_add_test(tc, test_tokenize_mode);
    tcase_add_test(tc, test_attention_flag);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(cli_suite)
