// test_fuzz.c: the fuzz harnesses (tests/fuzz/) as regression tests, built with the normal
// compiler and run by `make test`, under ASan and UBSan by `make test-asan`:
//   - every seed of tests/fuzz/corpus/NAME goes through its harness, so the properties the
//     harnesses check hold on the valid files (a broken one aborts the test);
//   - every input a fuzzing campaign turned up (tests/fuzz/regressions/, minimized) goes
//     through its harness and must now give exactly the loader's one error line (or load),
//     and, where the runner or export reads that format from a file, the shipped binary
//     prints that line and exits 1.
#include "testutil.h"
#include "fuzz/fuzz.h"
#include "../util/util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*Harness)(const uint8_t *data, size_t size);
void fuzz_gguf(const uint8_t *, size_t);
void fuzz_safetensors(const uint8_t *, size_t);
void fuzz_modelbin(const uint8_t *, size_t);
void fuzz_tokblob(const uint8_t *, size_t);
void fuzz_tokenizer_json(const uint8_t *, size_t);
void fuzz_tiktoken(const uint8_t *, size_t);
void fuzz_kvconfig(const uint8_t *, size_t);
void fuzz_prompt(const uint8_t *, size_t);
void fuzz_quantize(const uint8_t *, size_t);

static const struct { const char *name; Harness run; } harnesses[] = {
    { "gguf", fuzz_gguf }, { "safetensors", fuzz_safetensors }, { "modelbin", fuzz_modelbin },
    { "tokblob", fuzz_tokblob }, { "tokenizer_json", fuzz_tokenizer_json }, { "tiktoken", fuzz_tiktoken },
    { "kvconfig", fuzz_kvconfig }, { "prompt", fuzz_prompt }, { "quantize", fuzz_quantize },
};
#define N_HARNESSES (sizeof harnesses / sizeof harnesses[0])

static Harness harness(const char *name) {
    for (size_t i = 0; i < N_HARNESSES; i++)
        if (strcmp(harnesses[i].name, name) == 0) return harnesses[i].run;
    ck_abort_msg("no harness %s", name);
    return NULL;
}

static void run_file(Harness h, const char *path) {
    size_t n;
    char *data = read_file(path, &n);
    h((const uint8_t *)data, n);
    free(data);
}

START_TEST(every_seed) {
    const char *name = harnesses[_i].name;
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", name);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s is missing", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        run_file(harnesses[_i].run, path);
        n++;
    }
    closedir(d);
    ck_assert_msg(n >= 2, "%s: %d seeds, want at least 2", dir, n);
}
END_TEST

// What the campaigns found, minimized. error: the loader's verdict through the harness ("" =
// it loads); prog, args: a shipped program ("run" or "export") and its arguments, {} standing
// for the file, which must print "error: FILE: " + cli_error and exit 1 (prog NULL: no program
// reads this format from a file on its own).
static const struct {
    const char *harness, *file, *error, *prog, *args, *cli_error;
} findings[] = {
    // A tokenizer.json whose ids leave a hole (1): the model.bin writer passed the hole's NULL
    // bytes to memcpy (undefined behaviour). Holes are now empty tokens.
    { "tokenizer_json", "tokenizer_json-hole.json", "", NULL, NULL, NULL },
    // A 150-byte tokenizer.json naming id 237222222 made the loader allocate 3 GB of tables.
    { "tokenizer_json", "tokenizer_json-far-id.json",
      "fuzz.json: largest id 237222222 leaves more holes than the 2 ids named (at most one hole per id)",
      "export", "--random micro --tokenizer {} build/never-written.bin",
      "largest id 237222222 leaves more holes than the 2 ids named (at most one hole per id)" },
    // Control characters from the file went into the error line.
    { "kvconfig", "kvconfig-control-key.yaml",
      "fuzz.yaml: layer 0 (line 1): unknown key '\\x03' (expected nbits_key, nbits_value, rotate)",
      "run", TINY_MODEL " --kv-config {} -i x -n 1", "layer 0 (line 1): unknown key '\\x03' (expected nbits_key, nbits_value, rotate)" },
    { "kvconfig", "kvconfig-control-duplicate.yaml", "fuzz.yaml: line 3: duplicate key 'a\\x1b[2J'",
      "run", TINY_MODEL " --kv-config {} -i x -n 1", "line 3: duplicate key 'a\\x1b[2J'" },
};

START_TEST(each_finding) {
    char path[512];
    snprintf(path, sizeof path, "tests/fuzz/regressions/%s", findings[_i].file);
    run_file(harness(findings[_i].harness), path);
    ck_assert_msg(strcmp(fuzz_verdict(), findings[_i].error) == 0, "%s: verdict \"%s\", want \"%s\"", path,
                  fuzz_verdict(), findings[_i].error);
    if (!findings[_i].prog) return;
    const char *args = findings[_i].args, *at = strstr(args, "{}");
    ck_assert(at != NULL);
    char cmd[1024], want[1024];
    snprintf(cmd, sizeof cmd, "%s %.*s%s%s", strcmp(findings[_i].prog, "run") == 0 ? run_bin() : export_bin(),
             (int)(at - args), args, path, at + 2);
    snprintf(want, sizeof want, "error: %s: %s\n", path, findings[_i].cli_error);
    char *out, *err;
    ck_assert_int_eq(run_capture(cmd, &out, &err), 1);
    ck_assert_str_eq(err, want);
    free(out);
    free(err);
}
END_TEST

static Suite *fuzz_suite(void) {
    Suite *s = suite_create("fuzz");
    TCase *tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, every_seed, 0, (int)N_HARNESSES);
    tcase_add_loop_test(tc, each_finding, 0, (int)(sizeof findings / sizeof findings[0]));
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(fuzz_suite)
