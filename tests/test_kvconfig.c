// test_kvconfig.c: --kv* options, presets, and KVTuner YAML/JSON config files: the published
// presets load against an 8B-shaped model and are refused, naming the mismatch, against the
// 30-layer default model; every malformed or mismatched file is one clear error line.
#include "testutil.h"
#include "../quant/kvconfig.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PRESETS DATA_DIR "/kvtuner_presets/"
static const char *presets[] = {
    "Meta-Llama-3.1-8B-Instruct_kivi_KVTuner4_1.yaml",
    "Meta-Llama-3.1-8B-Instruct_kivi_KVTuner6_1.yaml",
    "Meta-Llama-3.1-8B-Instruct_pertoken_KVTuner4_0.yaml",
    "meta-llama_Meta-Llama-3-8B-Instruct_k8_v4._per_head.yaml",
    "meta-llama_Meta-Llama-3-8B-Instruct_k8_v4._per_layer.yaml",
};

// Run fn(arg) in a child; it must exit 1 with exactly one stderr line containing `want`.
static void expect_fatal(void (*fn)(const void *), const void *arg, const char *want) {
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn(arg);
        _exit(0);                                 // returned: not refused
    }
    close(fd[1]);
    char buf[1024] = {0};
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "not refused (want '%s'), stderr: %s", want, buf);
    ck_assert_msg(strstr(buf, want) != NULL, "error '%s' does not mention '%s'", buf, want);
    ck_assert_msg(strncmp(buf, "error: ", 7) == 0 && strchr(buf, '\n') == buf + n - 1, "not one error line: %s", buf);
}

// ---- config files against a shape -------------------------------------------------------------

typedef struct { const char *path; int layers, heads; } FileCase;

static void load_into_shape(const void *arg) {
    const FileCase *fc = arg;
    KVSpec s;
    build_kvspec_uniform(&s, fc->layers, fc->heads, 64, 16, 16);
    load_kvconfig(&s, fc->path);
    free_kvspec(&s);
}

START_TEST(test_presets_load_8b) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, PRESETS "%s", presets[i]);
        KVSpec s;
        build_kvspec_uniform(&s, 32, 8, 128, 16, 16);
        load_kvconfig(&s, path);
        // Independently: the nbits_key / nbits_value lines in file order are the spec's bits
        // in layer (then head) order; per-layer files give every head the layer's bits.
        char *text = read_file(path, NULL);
        int per_head = strstr(presets[i], "per_head") != NULL, idx = 0, nk = 0;
        for (char *p = text; (p = strstr(p, "nbits_")); p++) {
            int is_v = strncmp(p, "nbits_value:", 12) == 0;
            int bits = atoi(strchr(p, ':') + 1);
            int l = per_head ? idx / 8 : idx, h0 = per_head ? idx % 8 : 0, h1 = per_head ? h0 + 1 : 8;
            for (int h = h0; h < h1; h++)
                ck_assert_int_eq(is_v ? s.bits[l * 8 + h].v_bits : s.bits[l * 8 + h].k_bits, bits);
            if (is_v) idx++; else nk++;
        }
        ck_assert_int_eq(idx, per_head ? 32 * 8 : 32);
        ck_assert_int_eq(nk, idx);
        free(text);
        free_kvspec(&s);
    }
}
END_TEST

START_TEST(test_presets_refused_default_model) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, PRESETS "%s", presets[i]);
        FileCase fc = { path, 30, 3 };
        // Per-head files hit the 4th kv head of layer 0 first; per-layer files the 31st layer.
        expect_fatal(load_into_shape, &fc, strstr(path, "per_head") ? "layer 0 (line 11): kv head 3 present but the model has 3 kv heads"
                                                                    : "layer 30 present but the model has 30 layers");
        ck_assert_ptr_nonnull(strstr(path, presets[i]));
    }
}
END_TEST

// The same refusal through the runner, against the real default model: one line, exit 1.
START_TEST(test_run_refuses_8b_preset) {
    ck_assert_msg(file_exists(DEFAULT_MODEL), "%s missing: run make model", DEFAULT_MODEL);
    char cmd[1024], *err = NULL;
    snprintf(cmd, sizeof cmd, "%s %s -i hi -n 1 --kv-config " PRESETS "%s", run_bin(), DEFAULT_MODEL, presets[2]);
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "layer 30 present but the model has 30 layers") != NULL, "stderr: %s", err);
    ck_assert_msg(strstr(err, presets[2]) != NULL, "stderr does not name the file: %s", err);
    free(err);
}
END_TEST

static char *write_tmp(const char *name, const char *text) {
    static char path[8][256];
    static int k = 0;
    char *p = path[k++ % 8];
    snprintf(p, 256, "%s/%s", test_tmpdir(), name);
    write_bytes(p, text, strlen(text));
    return p;
}

// Two layers, two heads: what each malformed file must be refused with.
START_TEST(test_bad_files) {
    static const char *cases[][3] = {
        { "ok.yaml", "0:\n  nbits_key: 8\n  nbits_value: 4\n1:\n  nbits_key: 2\n  nbits_value: 16\n", NULL },
        { "ok_crlf.yaml", "---\r\n# c\r\n0:\r\n  nbits_key: 8 # x\r\n  nbits_value: 4\r\n\r\n1:\r\n  0:\r\n    nbits_key: '4'\r\n    nbits_value: 2\r\n  1:\r\n    nbits_key: 2\r\n    nbits_value: 2", NULL },
        { "ok.json", "{\"0\": {\"nbits_key\": 8, \"nbits_value\": 4}, \"1\": {\"0\": {\"nbits_key\": 4, \"nbits_value\": 2}, \"1\": {\"nbits_key\": 2, \"nbits_value\": 2}}}", NULL },
        { "missing_layer.yaml", "0:\n  nbits_key: 8\n  nbits_value: 4\n", "missing layer 1" },
        { "extra_layer.yaml", "0:\n  nbits_key: 8\n  nbits_value: 4\n1:\n  nbits_key: 8\n  nbits_value: 4\n2:\n  nbits_key: 8\n  nbits_value: 4\n", "layer 2 present but the model has 2 layers" },
        { "missing_head.yaml", "0:\n  0:\n    nbits_key: 8\n    nbits_value: 4\n1:\n  nbits_key: 8\n  nbits_value: 4\n", "layer 0: missing kv head 1" },
        { "extra_head.json", "{\"0\": {\"0\": {\"nbits_key\": 8, \"nbits_value\": 4}, \"1\": {\"nbits_key\": 8, \"nbits_value\": 4}, \"2\": {\"nbits_key\": 8, \"nbits_value\": 4}}, \"1\": {\"nbits_key\": 8, \"nbits_value\": 4}}", "kv head 2 present but the model has 2 kv heads" },
        { "bad_bits.yaml", "0:\n  nbits_key: 3\n  nbits_value: 4\n1:\n  nbits_key: 8\n  nbits_value: 4\n", "layer 0 (line 1): nbits_key is '3', not one of 2, 4, 8, 16" },
        { "bad_bits_head.yaml", "0:\n  nbits_key: 8\n  nbits_value: 4\n1:\n  0:\n    nbits_key: 8\n    nbits_value: 4\n  1:\n    nbits_key: 8\n    nbits_value: 32\n", "layer 1 kv head 1 (line 8): nbits_value is '32'" },
        { "float_bits.json", "{\"0\": {\"nbits_key\": 8.5, \"nbits_value\": 4}, \"1\": {\"nbits_key\": 8, \"nbits_value\": 4}}", "nbits_key is '8.5'" },
        { "string_bits.json", "{\"0\": {\"nbits_key\": \"8\", \"nbits_value\": 4}, \"1\": {\"nbits_key\": 8, \"nbits_value\": 4}}", "nbits_key is '(a JSON string)'" },
        { "unknown_key.yaml", "0:\n  nbits_key: 8\n  nbits_value: 4\n  group: 32\n1:\n  nbits_key: 8\n  nbits_value: 4\n", "layer 0 (line 1): unknown key 'group'" },
        { "unknown_top.yaml", "model: llama\n0:\n  nbits_key: 8\n  nbits_value: 4\n", "unknown key 'model' at the top level" },
        { "missing_value.yaml", "0:\n  nbits_key: 8\n1:\n  nbits_key: 8\n  nbits_value: 4\n", "layer 0 (line 1): missing nbits_value" },
        { "no_colon.yaml", "0:\n  nbits_key 8\n", "line 2: malformed YAML" },
        { "bad_indent.yaml", "0:\n    nbits_key: 8\n  nbits_value: 4\n", "line 3: malformed YAML: inconsistent indentation" },
        { "tab.yaml", "0:\n\tnbits_key: 8\n", "line 2: tab in indentation" },
        { "dup.yaml", "0:\n  nbits_key: 8\n  nbits_key: 4\n", "line 3: duplicate key 'nbits_key'" },
        { "seq.yaml", "- 0\n- 1\n", "line 1: YAML sequences" },
        { "flow.yaml", "0: {nbits_key: 8, nbits_value: 4}\n", "line 1: YAML flow" },
        { "empty.yaml", "# nothing\n", "empty config" },
        { "bad.json", "{\"0\": {\"nbits_key\": 8,}}", "malformed JSON" },
        { "dup.json", "{\"0\": {\"nbits_key\": 8, \"nbits_key\": 4}}", "duplicate key 'nbits_key'" },
        { "bad_rotate.yaml", "0:\n  nbits_key: 8\n  nbits_value: 4\n  rotate: yes\n1:\n  nbits_key: 8\n  nbits_value: 4\n", "layer 0 (line 4): rotate is 'yes', not true or false" },
        { "head_rotate.yaml", "0:\n  0:\n    nbits_key: 8\n    nbits_value: 4\n    rotate: true\n  1:\n    nbits_key: 8\n    nbits_value: 4\n1:\n  nbits_key: 8\n  nbits_value: 4\n", "layer 0 kv head 0 (line 2): unknown key 'rotate'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FileCase fc = { write_tmp(cases[i][0], cases[i][1]), 2, 2 };
        if (!cases[i][2]) {                          // valid: loads with the expected bits
            KVSpec s;
            build_kvspec_uniform(&s, 2, 2, 64, 16, 16);
            load_kvconfig(&s, fc.path);
            ck_assert_int_eq(s.bits[0].k_bits, 8);
            ck_assert_int_eq(s.bits[1].v_bits, 4);
            ck_assert_int_eq(s.bits[3].k_bits, 2);
            ck_assert_int_eq(s.bits[2].k_bits, strstr(fc.path, "ok.yaml") ? 2 : 4);
            free_kvspec(&s);
            continue;
        }
        expect_fatal(load_into_shape, &fc, cases[i][2]);
        ck_assert_ptr_nonnull(strstr(fc.path, cases[i][0]));
    }
    FileCase missing = { "/nonexistent/kv.yaml", 2, 2 };
    expect_fatal(load_into_shape, &missing, "/nonexistent/kv.yaml");
    // 5,000 distinct keys in one mapping: refused at the 4,097th, before the search for repeats
    // grows quadratic (a file of a few hundred kB would otherwise take minutes)
    char *big = xmalloc(5000 * 32 + 1), *p = big;
    for (int i = 0; i < 5000; i++) p += sprintf(p, "%d:\n  nbits_key: 8\n", i);
    FileCase many = { write_tmp("many.yaml", big), 2, 2 };
    expect_fatal(load_into_shape, &many, "line 8193: more than 4096 keys in one mapping");
    free(big);
}
END_TEST

// `rotate: true` per layer, beside a pair or beside the heads, in YAML and JSON: only the layers
// that say so are rotated, and a file that says it nowhere leaves the spec without a rotate array.
START_TEST(test_rotate_in_files) {
    static const char *files[][2] = {
        { "rot.yaml", "0:\n  nbits_key: 4\n  nbits_value: 4\n  rotate: false\n1:\n  rotate: true\n  0:\n    nbits_key: 4\n    nbits_value: 2\n  1:\n    nbits_key: 8\n    nbits_value: 4\n" },
        { "rot.json", "{\"0\": {\"nbits_key\": 4, \"nbits_value\": 4}, \"1\": {\"nbits_key\": 4, \"nbits_value\": 2, \"rotate\": true}}" },
    };
    for (int i = 0; i < 2; i++) {
        KVSpec s;
        build_kvspec_uniform(&s, 2, 2, 64, 16, 16);
        load_kvconfig(&s, write_tmp(files[i][0], files[i][1]));
        ck_assert_ptr_nonnull(s.rotate);
        ck_assert_int_eq(s.rotate[0], 0);
        ck_assert_int_eq(s.rotate[1], 1);
        ck_assert_int_eq(s.bits[2].v_bits, 2);
        kvspec_validate(&s, "test");
        free_kvspec(&s);
    }
    KVSpec s;
    build_kvspec_uniform(&s, 2, 2, 64, 16, 16);
    load_kvconfig(&s, write_tmp("norot.yaml", "0:\n  nbits_key: 8\n  nbits_value: 4\n1:\n  nbits_key: 8\n  nbits_value: 4\n"));
    ck_assert_ptr_null(s.rotate);
    free_kvspec(&s);
}
END_TEST

// ---- command-line options -----------------------------------------------------------------------

static Config default_shape(void) {
    Config c;
    memset(&c, 0, sizeof c);
    c.n_layers = 30; c.n_heads = 9; c.n_kv_heads = 3; c.head_dim = 64;
    return c;
}

// Parse a NULL-terminated argument list the way run.c does and build the spec.
static void spec_from_args(KVSpec *s, const char **args) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "run";
    while (*args) argv[argc++] = (char *)*args++;
    KVOptions o;
    kvoptions_init(&o);
    for (int i = 1; i < argc; i++)
        if (!kvoptions_parse_arg(&o, argc, argv, &i)) fatal("test: unexpected argument %s", argv[i]);
    Config c = default_shape();
    build_kvspec_from_options(s, &o, &c);
}

static void spec_from_args_void(const void *args) {
    KVSpec s;
    spec_from_args(&s, (const char **)args);
}

START_TEST(test_options) {
    KVSpec s;
    const char *none[] = { NULL };
    spec_from_args(&s, none);                                      // default: fp16
    ck_assert(s.bits[0].k_bits == 16 && s.bits[89].v_bits == 16);
    free_kvspec(&s);
    const char *kv4[] = { "--kv", "kv4", NULL };                     // --kv alone: kivi
    spec_from_args(&s, kv4);
    ck_assert(s.bits[0].k_bits == 4 && s.bits[89].v_bits == 4);
    ck_assert(s.group == 32 && s.residual == 32 && s.key_axis == KEY_AXIS_CHANNEL && !s.symmetric && s.sink == 0);
    free_kvspec(&s);
    const char *pt[] = { "--kv=k8v4", "--kv-preset", "pertoken", NULL };
    spec_from_args(&s, pt);
    ck_assert(s.bits[5].k_bits == 8 && s.bits[5].v_bits == 4);
    ck_assert(s.group == -1 && s.residual == 0 && s.key_axis == KEY_AXIS_TOKEN);
    free_kvspec(&s);
    const char *over[] = { "--kv", "k4v2", "--kv-group", "16", "--kv-residual", "64", "--kv-sym", "--kv-sink", "4", NULL };
    spec_from_args(&s, over);                                     // single fields over kivi
    ck_assert(s.group == 16 && s.residual == 64 && s.key_axis == KEY_AXIS_CHANNEL && s.symmetric && s.sink == 4);
    free_kvspec(&s);
    const char *axis[] = { "--kv", "k2v8", "--kv-key-axis", "token", NULL };
    spec_from_args(&s, axis);
    ck_assert(s.bits[0].k_bits == 2 && s.bits[0].v_bits == 8 && s.key_axis == KEY_AXIS_TOKEN && s.group == 32);
    free_kvspec(&s);
    ck_assert_ptr_null(s.rotate);                                 // no rotation unless asked
    const char *rot[] = { "--kv", "kv4", "--kv-rotate", NULL };
    spec_from_args(&s, rot);
    ck_assert_ptr_nonnull(s.rotate);
    ck_assert(s.rotate[0] == 1 && s.rotate[29] == 1);
    free_kvspec(&s);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s", write_tmp("shape30.json", "{}"));
    {   // a 30-layer, 3-head per-layer config written here
        char text[4096];
        int n = snprintf(text, sizeof text, "{");
        for (int l = 0; l < 30; l++) n += snprintf(text + n, sizeof text - (size_t)n, "%s\"%d\": {\"nbits_key\": %d, \"nbits_value\": 2}", l ? ", " : "", l, l < 15 ? 8 : 4);
        snprintf(text + n, sizeof text - (size_t)n, "}");
        write_bytes(cfg, text, strlen(text));
    }
    const char *file[] = { "--kv-config", cfg, "--kv-preset", "pertoken", NULL };
    spec_from_args(&s, file);
    ck_assert(s.bits[14 * 3 + 2].k_bits == 8 && s.bits[15 * 3].k_bits == 4 && s.bits[29 * 3 + 2].v_bits == 2 && s.group == -1);
    char label[16];
    ck_assert_str_eq(kvspec_label(&s, label, sizeof label), "mixed");
    free_kvspec(&s);
    spec_from_args(&s, kv4);
    ck_assert_str_eq(kvspec_label(&s, label, sizeof label), "kv4");
    free_kvspec(&s);
}
END_TEST

START_TEST(test_bad_options) {
    static const struct { const char *args[8]; const char *want; } bad[] = {
        { { "--kv", "kv3", NULL }, "'kv3' is not fp16" },
        { { "--kv", "k8v", NULL }, "'k8v' is not" },
        { { "--kv", "kv", NULL }, "'kv' is not" },
        { { "--kv", "k8v4x", NULL }, "'k8v4x'" },
        { { "--kv", NULL }, "--kv: missing value" },
        { { "--kv-preset", "kivi2", NULL }, "--kv-preset: 'kivi2'" },
        { { "--kv-group", "0", NULL }, "--kv-group: group size must be positive" },
        { { "--kv-group", "12x", NULL }, "--kv-group: '12x' is not an integer" },
        { { "--kv-residual", "-1", NULL }, "--kv-residual: '-1'" },
        { { "--kv-key-axis", "row", NULL }, "--kv-key-axis: 'row'" },
        { { "--kv", "kv4", "--kv-residual", "20", NULL }, "residual length R (20) to be a positive multiple of the group size G (32)" },
        { { "--kv", "kv4", "--kv-residual", "0", NULL }, "residual length R (0)" },
        { { "--kv", "kv4", "--kv-group", "-1", NULL }, "per-channel keys need a group size" },
        { { "--kv", "kv4", "--kv-preset", "pertoken", "--kv-group", "48", NULL }, "group size 48 does not divide head_dim 64" },
        { { "--kv", "kv4", "--kv-config", "x.yaml", NULL }, "give one or the other" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_fatal(spec_from_args_void, bad[i].args, bad[i].want);
}
END_TEST

static Suite *kvconfig_suite(void) {
    Suite *s = suite_create("kvconfig");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_presets_load_8b);
    tcase_add_test(tc, test_presets_refused_default_model);
    tcase_add_test(tc, test_run_refuses_8b_preset);
    tcase_add_test(tc, test_bad_files);
    tcase_add_test(tc, test_rotate_in_files);
    tcase_add_test(tc, test_options);
    tcase_add_test(tc, test_bad_options);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kvconfig_suite)
