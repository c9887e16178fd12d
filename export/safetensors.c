// safetensors.c: safetensors reader (format in safetensors.h). Files are mmapped; the
// JSON header is parsed with util/json.h and every offset checked against the file size.
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/json.h"
#include "../util/util.h"

static int dtype_from_name(const char *s) {
    if (strcmp(s, "F32") == 0) return ST_F32;
    if (strcmp(s, "F16") == 0) return ST_F16;
    if (strcmp(s, "BF16") == 0) return ST_BF16;
    return -1;
}

static uint64_t dtype_bytes(int dt) { return dt == ST_F32 ? 4 : 2; }

static uint64_t json_u64(const char *path, const char *name, const char *field, const JsonValue *v) {
    if (!v || v->type != JSON_NUMBER || !v->number_is_int || v->integer < 0)
        fatal("%s: tensor %s: %s must hold non-negative integers", path, printable(name), field);
    return (uint64_t)v->integer;
}

// One entry of the header: {"dtype", "shape", "data_offsets"} -> STTensor.
static void parse_entry(STTensor *t, const char *path, const char *name, const JsonValue *v,
                        const uint8_t *data, uint64_t data_size) {
    if (v->type != JSON_OBJECT) fatal("%s: tensor %s: header entry is not an object", path, printable(name));
    const JsonValue *dt = json_get(v, "dtype"), *shape = json_get(v, "shape"), *off = json_get(v, "data_offsets");
    if (!dt || dt->type != JSON_STRING) fatal("%s: tensor %s: missing dtype", path, printable(name));
    t->dtype = dtype_from_name(dt->string);
    if (t->dtype < 0)
        fatal("%s: tensor %s has unsupported dtype %s (supported: F32, F16, BF16)", path, printable(name),
              printable(dt->string));
    if (!shape || shape->type != JSON_ARRAY || shape->n > 8)
        fatal("%s: tensor %s: shape must be an array of at most 8 dims", path, printable(name));
    t->n_dims = (int)shape->n;
    t->n_elements = 1;
    for (size_t d = 0; d < shape->n; d++) {
        t->shape[d] = json_u64(path, name, "shape", &shape->items[d]);
        if (mul_overflow_u64(t->n_elements, t->shape[d], &t->n_elements))
            fatal("%s: tensor %s: shape overflows", path, printable(name));
    }
    if (!off || off->type != JSON_ARRAY || off->n != 2)
        fatal("%s: tensor %s: data_offsets must be [begin, end]", path, printable(name));
    uint64_t begin = json_u64(path, name, "data_offsets", &off->items[0]);
    uint64_t end = json_u64(path, name, "data_offsets", &off->items[1]), bytes;
    if (end < begin || end > data_size)
        fatal("%s: tensor %s: data_offsets [%llu, %llu] lie outside the data (%llu bytes)", path, printable(name),
              (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
    if (mul_overflow_u64(t->n_elements, dtype_bytes(t->dtype), &bytes) || bytes != end - begin)
        fatal("%s: tensor %s: %llu bytes of data for %llu %s elements", path, printable(name),
              (unsigned long long)(end - begin), (unsigned long long)t->n_elements, dt->string);
    t->name = xstrdup(name);
    t->data = data + begin;
    t->path = path;
}

static STFile map_file(const char *path) {
    STFile f = {xstrdup(path), NULL, 0, 1};
    int fd = open(path, O_RDONLY);
    if (fd < 0) fatal("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) fatal("%s: not a regular file", path);
    if (st.st_size < 8) fatal("%s: not a safetensors file (%lld bytes)", path, (long long)st.st_size);
    f.size = (size_t)st.st_size;
    void *m = mmap(NULL, f.size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) fatal("%s: cannot mmap: %s", path, strerror(errno));
    f.map = m;
    return f;
}

// The header of file f (just added to s): its tensors.
static void parse_file(SafeTensors *s, STFile f) {
    s->files = xrealloc(s->files, (size_t)(s->n_files + 1) * sizeof(STFile));
    s->files[s->n_files++] = f;
    const char *path = s->files[s->n_files - 1].path;
    if (f.size < 8) fatal("%s: not a safetensors file (%zu bytes)", path, f.size);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)f.map[i] << (8 * i);
    if (n == 0 || n > f.size - 8)
        fatal("%s: bad header length %llu (the file has %zu bytes)", path, (unsigned long long)n, f.size);
    char err[200];
    JsonValue *h = json_parse((const char *)f.map + 8, (size_t)n, err, sizeof err);
    if (!h) fatal("%s: malformed JSON header: %s", path, err);
    if (h->type != JSON_OBJECT) fatal("%s: the JSON header is not an object", path);
    const uint8_t *data = f.map + 8 + n;
    uint64_t data_size = f.size - 8 - n;
    s->tensors = xrealloc(s->tensors, (size_t)(s->n_tensors + h->n) * sizeof(STTensor));
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->keys[i], "__metadata__") == 0) continue;
        if (st_find(s, h->keys[i])) fatal("%s: tensor %s appears twice", path, printable(h->keys[i]));
        STTensor *t = &s->tensors[s->n_tensors];
        memset(t, 0, sizeof *t);
        parse_entry(t, path, h->keys[i], &h->items[i], data, data_size);
        s->n_tensors++;
    }
    json_free(h);
}

void st_open_file(SafeTensors *s, const char *path) { parse_file(s, map_file(path)); }

void st_open_memory(SafeTensors *s, const char *name, const uint8_t *data, size_t size) {
    parse_file(s, (STFile){xstrdup(name), data, size, 0});
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

// Sharded: open every file named in weight_map once, then check each listed tensor is there.
static void open_index(SafeTensors *s, const char *dir, const char *index_path) {
    size_t len;
    char *text = read_file(index_path, &len), err[200];
    JsonValue *idx = json_parse(text, len, err, sizeof err);
    if (!idx) fatal("%s: malformed JSON: %s", index_path, err);
    const JsonValue *wm = json_get(idx, "weight_map");
    if (!wm || wm->type != JSON_OBJECT || wm->n == 0) fatal("%s: missing weight_map", index_path);
    for (size_t i = 0; i < wm->n; i++) {
        const JsonValue *f = &wm->items[i];
        if (f->type != JSON_STRING || !f->string[0] || strchr(f->string, '/') || strlen(f->string) != f->string_len)
            fatal("%s: weight_map[%s] is not a file name in the folder", index_path, printable(wm->keys[i]));
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++) seen = strcmp(wm->items[j].string, f->string) == 0;
        if (seen) continue;
        char *p = join(dir, f->string);
        st_open_file(s, p);
        free(p);
    }
    for (size_t i = 0; i < wm->n; i++)
        if (!st_find(s, wm->keys[i]))
            fatal("%s: tensor %s is listed for %s but not in it", index_path, printable(wm->keys[i]),
                  printable(wm->items[i].string));
    json_free(idx);
    free(text);
}

void st_open_dir(SafeTensors *s, const char *dir) {
    memset(s, 0, sizeof *s);
    char *index = join(dir, "model.safetensors.index.json");
    struct stat st;
    if (stat(index, &st) == 0) {
        open_index(s, dir, index);
        free(index);
        return;
    }
    free(index);
    DIR *d = opendir(dir);
    if (!d) fatal("%s: cannot open folder: %s", dir, strerror(errno));
    char *found = NULL;
    int count = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n > 12 && strcmp(e->d_name + n - 12, ".safetensors") == 0) {
            count++;
            free(found);
            found = xstrdup(e->d_name);
        }
    }
    closedir(d);
    if (count == 0) fatal("%s: no *.safetensors file in the folder", dir);
    if (count > 1) fatal("%s: %d *.safetensors files but no model.safetensors.index.json", dir, count);
    char *p = join(dir, found);
    st_open_file(s, p);
    free(p);
    free(found);
}

void st_close(SafeTensors *s) {
    for (int i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    for (int i = 0; i < s->n_files; i++) {
        if (s->files[i].mapped) munmap((void *)s->files[i].map, s->files[i].size);
        free(s->files[i].path);
    }
    free(s->tensors);
    free(s->files);
    memset(s, 0, sizeof *s);
}

const STTensor *st_find(const SafeTensors *s, const char *name) {
    for (int i = 0; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0) return &s->tensors[i];
    return NULL;
}

void st_rows(const STTensor *t, uint64_t row0, uint64_t nrows, uint64_t ncols, float *out) {
    uint64_t es = dtype_bytes(t->dtype), n = nrows * ncols;
    const uint8_t *p = t->data + row0 * ncols * es;
    for (uint64_t i = 0; i < n; i++, p += es) {
        uint16_t lo = (uint16_t)(p[0] | p[1] << 8);
        if (t->dtype == ST_F32) {
            union { uint32_t u; float f; } v = {(uint32_t)lo | (uint32_t)(p[2] | p[3] << 8) << 16};
            out[i] = v.f;
        } else {
            out[i] = t->dtype == ST_F16 ? fp16_to_fp32(lo) : bf16_to_fp32(lo);
        }
    }
}
