// testutil.h: helpers shared by the check suites.
#ifndef KVT_TESTUTIL_H
#define KVT_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include "../model/modelbin.h"

// Paths of the binaries under test: $KVT_BIN_DIR/run and $KVT_BIN_DIR/export
// (KVT_BIN_DIR defaults to "build"; the sanitizer build sets "build-asan").
const char *run_bin(void);
const char *export_bin(void);
const char *cuda_check_bin(void);   // the CUDA kernel harness, $KVT_BIN_DIR/cuda_check

// Run a shell command; capture stdout and stderr (xmalloc'd, NUL-terminated; either
// pointer may be NULL to discard). Returns the exit status (128+signal if killed).
int run_capture(const char *cmd, char **out, char **err);

// 1 if the file exists (tests that need the downloaded model check it and fail loudly
// when `make model` has not run: the model is a prerequisite of `make test`, not optional).
int file_exists(const char *path);

// A temporary directory for this test binary (created once, under /tmp).
const char *test_tmpdir(void);

// Write bytes to path (fatal on failure).
void write_bytes(const char *path, const void *data, size_t n);

// Run an export command that must succeed and writes the model.bin `out`; read that file and
// check its header. Returns the file (xmalloc'd) with its header in *h and config in *c.
uint8_t *export_and_read(const char *cmd, const char *out, ModelHeader *h, Config *c);

#define DEFAULT_MODEL "models/smollm2-135m-instruct.bin"
#define DEFAULT_GGUF  "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define TINY_MODEL    "models/tiny.bin"
#define DATA_DIR      "data"   // the repository's data/ (data/README.md); tests run from the root

// Every test file ends with TEST_MAIN(its_suite_function).
#define TEST_MAIN(suite_fn)                                               \
    int main(void) {                                                      \
        SRunner *sr = srunner_create(suite_fn());                         \
        srunner_run_all(sr, CK_NORMAL);                                   \
        int failed = srunner_ntests_failed(sr);                           \
        srunner_free(sr);                                                 \
        return failed == 0 ? 0 : 1;                                       \
    }

#endif
