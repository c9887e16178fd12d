// util.c: fatal errors, checked allocation, whole-file reads, overflow checks.
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FatalHandler fatal_handler;

void set_fatal_handler(FatalHandler handler) { fatal_handler = handler; }

void fatal(const char *fmt, ...) {
    if (fatal_handler) {
        static char message[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(message, sizeof message, fmt, ap);
        va_end(ap);
        fatal_handler(message);
    }
    fflush(stdout);
    fputs("error: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

const char *printable(const char *s) {
    static char buf[4][96];
    static unsigned k;
    char *o = buf[k++ % 4];
    size_t n = 0;
    for (; *s && n + 5 < 84; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) n += (size_t)snprintf(o + n, 5, "\\x%02x", c);
        else o[n++] = (char)c;
    }
    if (*s) { memcpy(o + n, "...", 3); n += 3; }
    o[n] = 0;
    return o;
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fatal("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fatal("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) fatal("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fatal("%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {                       // read in chunks: works for pipes and /proc files too
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536 * 2;
            buf = xrealloc(buf, cap + 1);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) fatal("%s: read error", path);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a) return -1;
    *out = a + b;
    return 0;
}
