#include "testutil.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char bin_path[3][512];

static const char *bin(int which, const char *name) {
    if (!bin_path[which][0]) {
        const char *dir = getenv("KVT_BIN_DIR");
        snprintf(bin_path[which], sizeof bin_path[which], "%s/%s", dir && *dir ? dir : "build", name);
    }
    return bin_path[which];
}
const char *run_bin(void) { return bin(0, "run"); }
const char *export_bin(void) { return bin(1, "export"); }
const char *cuda_check_bin(void) { return bin(2, "cuda_check"); }

const char *test_tmpdir(void) {
    static char dir[200];
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");             // the system's temporary folder
        snprintf(dir, sizeof dir, "%s/kvt-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) fatal("cannot create a temporary directory in %s", tmp && *tmp ? tmp : "/tmp");
    }
    return dir;
}

static char *slurp_or_empty(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return xstrdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xmalloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    return buf;
}

int run_capture(const char *cmd, char **out, char **err) {
    static int counter;
    char o[256], e[256];
    snprintf(o, sizeof o, "%s/out.%d.%d", test_tmpdir(), (int)getpid(), counter);
    snprintf(e, sizeof e, "%s/err.%d.%d", test_tmpdir(), (int)getpid(), counter++);
    size_t n = strlen(cmd) + 2 * sizeof o + 32;
    char *full = xmalloc(n);
    snprintf(full, n, "%s >%s 2>%s </dev/null", cmd, o, e);
    int status = system(full);
    free(full);
    if (out) *out = slurp_or_empty(o);
    if (err) *err = slurp_or_empty(e);
    unlink(o);
    unlink(e);
    if (status == -1) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fatal("cannot write %s", path);
    if (n && fwrite(data, 1, n, f) != n) fatal("short write to %s", path);
    fclose(f);
}

uint8_t *export_and_read(const char *cmd, const char *out, ModelHeader *h, Config *c) {
    char *err;
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_msg(rc == 0, "export failed (%d): %s", rc, err);
    free(err);
    size_t size;
    uint8_t *bin = (uint8_t *)read_file(out, &size);
    memcpy(h, bin, sizeof *h);
    ck_assert_ptr_null(header_check(h, size));
    config_from_header(c, h);
    return bin;
}
