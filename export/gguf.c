// gguf.c: GGUF v3 reader. The file is mmapped; a bounds-checked cursor walks the header,
// metadata and tensor infos, so that a malformed file ends in one fatal line naming the
// file and what is wrong, never in a read past the end.
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/util.h"

#define GGUF_MAGIC 0x46554747u      // "GGUF" little-endian
#define GGUF_MAX_DEPTH 8            // nesting of arrays in metadata

typedef struct {
    const GGUFFile *g;
    uint64_t pos;
} Cursor;

static void need(Cursor *c, uint64_t n, const char *what) {
    if (n > c->g->size - c->pos)
        fatal("%s: truncated GGUF: %s at byte %llu runs past the end of the file (%zu bytes)",
              c->g->path, what, (unsigned long long)c->pos, c->g->size);
}

static uint64_t rd(Cursor *c, int nbytes, const char *what) {
    need(c, (uint64_t)nbytes, what);
    uint64_t v = 0;
    for (int i = 0; i < nbytes; i++) v |= (uint64_t)c->g->map[c->pos + i] << (8 * i);
    c->pos += (uint64_t)nbytes;
    return v;
}

static char *rd_string(Cursor *c, uint64_t *len_out, const char *what) {
    uint64_t len = rd(c, 8, what);
    need(c, len, what);
    char *s = xmalloc((size_t)len + 1);
    memcpy(s, c->g->map + c->pos, (size_t)len);
    s[len] = 0;
    c->pos += len;
    if (len_out) *len_out = len;
    return s;
}

// Keys and tensor names are identifiers: control characters (NUL included, which would cut the
// name short) mean a corrupt file.
static void check_name(const Cursor *c, const char *s, uint64_t len, const char *what) {
    for (uint64_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            fatal("%s: %s \"%s\" contains control characters (corrupt file?)", c->g->path, what, printable(s));
}

// A string value as a C string: one with a NUL byte inside would be cut there in silence.
// index: the element's index + 1 in an array of strings, 0 for a string value.
static const char *text_of(const GGUFFile *g, const GGUFValue *v, const char *key, uint64_t index) {
    if (memchr(v->str, 0, (size_t)v->str_len)) {
        char at[32] = "";
        if (index) snprintf(at, sizeof at, "[%llu]", (unsigned long long)(index - 1));
        fatal("%s: metadata %s%s holds a NUL byte inside a string (corrupt file?)", g->path, key, at);
    }
    return v->str;
}

static int fixed_size(int type) {   // bytes of a scalar value type, 0 for string/array
    switch (type) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(int type) {
    static const char *names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                  "bool", "string", "array", "uint64", "int64", "float64"};
    return type >= 0 && type <= GGUF_FLOAT64 ? names[type] : "unknown";
}

static void read_value(Cursor *c, GGUFValue *v, int type, int depth, const char *key) {
    memset(v, 0, sizeof *v);
    v->type = type;
    union { uint32_t u; float f; } f32;
    union { uint64_t u; double f; } f64;
    switch (type) {
    case GGUF_UINT8: v->i = (int64_t)rd(c, 1, key); break;
    case GGUF_INT8: v->i = (int8_t)rd(c, 1, key); break;
    case GGUF_UINT16: v->i = (int64_t)rd(c, 2, key); break;
    case GGUF_INT16: v->i = (int16_t)rd(c, 2, key); break;
    case GGUF_UINT32: v->i = (int64_t)rd(c, 4, key); break;
    case GGUF_INT32: v->i = (int32_t)rd(c, 4, key); break;
    case GGUF_UINT64: { uint64_t u = rd(c, 8, key); v->i = u > INT64_MAX ? INT64_MAX : (int64_t)u; break; }
    case GGUF_INT64: v->i = (int64_t)rd(c, 8, key); break;
    case GGUF_BOOL: {
        uint64_t b = rd(c, 1, key);
        if (b > 1) fatal("%s: metadata %s: bool value %llu is not 0 or 1", c->g->path, key, (unsigned long long)b);
        v->i = (int64_t)b;
        break;
    }
    case GGUF_FLOAT32: f32.u = (uint32_t)rd(c, 4, key); v->f = f32.f; return;
    case GGUF_FLOAT64: f64.u = rd(c, 8, key); v->f = f64.f; return;
    case GGUF_STRING: v->str = rd_string(c, &v->str_len, key); return;
    case GGUF_ARRAY: {
        if (depth >= GGUF_MAX_DEPTH)
            fatal("%s: metadata %s: arrays nested deeper than %d", c->g->path, key, GGUF_MAX_DEPTH);
        v->elem_type = (int)rd(c, 4, key);
        if (v->elem_type < 0 || v->elem_type > GGUF_FLOAT64)
            fatal("%s: metadata %s: unknown array element type %d", c->g->path, key, v->elem_type);
        v->n = rd(c, 8, key);
        // Every element takes at least this many bytes: reject absurd counts before allocating.
        uint64_t min = fixed_size(v->elem_type) ? (uint64_t)fixed_size(v->elem_type)
                       : v->elem_type == GGUF_STRING ? 8 : 12;
        if (v->n > (c->g->size - c->pos) / min)
            fatal("%s: truncated GGUF: metadata %s: array of %llu %s runs past the end of the file",
                  c->g->path, key, (unsigned long long)v->n, gguf_type_name(v->elem_type));
        v->arr = xcalloc((size_t)v->n, sizeof(GGUFValue));
        for (uint64_t k = 0; k < v->n; k++) read_value(c, &v->arr[k], v->elem_type, depth + 1, key);
        return;
    }
    default:
        fatal("%s: metadata %s: unknown value type %d", c->g->path, key, type);
    }
    v->f = (double)v->i;
}

static void free_value(GGUFValue *v) {
    free(v->str);
    for (uint64_t k = 0; k < v->n; k++) free_value(&v->arr[k]);
    free(v->arr);
}

const char *ggml_type_name(int type) {
    // Index = ggml_type id (ggml.h); gaps are ids that were removed from ggml.
    static const char *names[] = {
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2 (removed)", "Q4_3 (removed)", "Q5_0", "Q5_1", "Q8_0",
        "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
        "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
        "BF16", "Q4_0_4_4 (removed)", "Q4_0_4_8 (removed)", "Q4_0_8_8 (removed)", "TQ1_0", "TQ2_0",
        "IQ4_NL_4_4 (removed)", "IQ4_NL_4_8 (removed)", "IQ4_NL_8_8 (removed)", "MXFP4"};
    return type >= 0 && type < (int)(sizeof names / sizeof names[0]) ? names[type] : "unknown";
}

int ggml_block_info(int type, int *block_elems, int *block_bytes) {
    int e, b;
    switch (type) {
    case GGML_F32: e = 1; b = 4; break;
    case GGML_F16: case GGML_BF16: e = 1; b = 2; break;
    case GGML_Q8_0: e = 32; b = 2 + 32; break;       // fp16 d, int8 q[32]
    case GGML_Q4_0: e = 32; b = 2 + 16; break;       // fp16 d, 32 nibbles
    case GGML_Q4_1: e = 32; b = 2 + 2 + 16; break;   // fp16 d, fp16 m, 32 nibbles
    default: return 0;
    }
    if (block_elems) *block_elems = e;
    if (block_bytes) *block_bytes = b;
    return 1;
}

static void read_tensor_info(Cursor *c, GGUFTensor *t, uint64_t idx) {
    char what[64];
    snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)idx);
    uint64_t len;
    t->name = rd_string(c, &len, what);
    check_name(c, t->name, len, "tensor name");
    uint64_t nd = rd(c, 4, what);
    if (nd < 1 || nd > 4)
        fatal("%s: tensor %s has %llu dimensions (GGUF allows 1 to 4)", c->g->path, t->name,
              (unsigned long long)nd);
    t->n_dims = (int)nd;
    t->n_elements = 1;
    for (int d = 0; d < 4; d++) {
        t->ne[d] = d < t->n_dims ? rd(c, 8, what) : 1;
        if (t->ne[d] == 0 || t->ne[d] > INT64_MAX ||
            mul_overflow_u64(t->n_elements, t->ne[d], &t->n_elements) || t->n_elements > INT64_MAX)
            fatal("%s: tensor %s: dimension %d (%llu) is zero or overflows", c->g->path, t->name, d,
                  (unsigned long long)t->ne[d]);
    }
    t->type = (int)rd(c, 4, what);
    t->offset = rd(c, 8, what);
}

// Once the data start is known: check each tensor's offset and (for supported types) its
// whole extent lies inside the file. Unsupported types are named when a tensor is used.
static void locate_tensor(GGUFFile *g, GGUFTensor *t) {
    if (t->offset % g->alignment)
        fatal("%s: tensor %s: offset %llu is not a multiple of the alignment %llu", g->path, t->name,
              (unsigned long long)t->offset, (unsigned long long)g->alignment);
    uint64_t start, end;
    if (add_overflow_u64(g->data_offset, t->offset, &start) || start > g->size)
        fatal("%s: tensor %s: offset %llu is outside the file (%zu bytes)", g->path, t->name,
              (unsigned long long)t->offset, g->size);
    int be, bb;
    if (ggml_block_info(t->type, &be, &bb)) {
        if (t->ne[0] % (uint64_t)be)
            fatal("%s: tensor %s: row length %llu is not a multiple of the %s block size %d", g->path,
                  t->name, (unsigned long long)t->ne[0], ggml_type_name(t->type), be);
        if (mul_overflow_u64(t->n_elements / (uint64_t)be, (uint64_t)bb, &t->nbytes) ||
            add_overflow_u64(start, t->nbytes, &end) || end > g->size)
            fatal("%s: tensor %s: data (offset %llu, %llu bytes) runs past the end of the file "
                  "(%zu bytes)", g->path, t->name, (unsigned long long)t->offset,
                  (unsigned long long)t->nbytes, g->size);
    }
    t->data = g->map + start;
}

static void map_file(GGUFFile *g, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) fatal("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) fatal("%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) fatal("%s: not a regular file", path);
    if (st.st_size < 24) fatal("%s: not a GGUF file (only %lld bytes)", path, (long long)st.st_size);
    g->size = (size_t)st.st_size;
    void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) fatal("%s: cannot mmap: %s", path, strerror(errno));
    g->map = m;
    g->mapped = 1;
}

// Everything after the bytes are in place: header, metadata, tensor infos, tensor extents.
static void parse(GGUFFile *g) {
    const char *path = g->path;
    if (g->size < 24) fatal("%s: not a GGUF file (only %zu bytes)", path, g->size);
    Cursor c = {g, 0};
    if (rd(&c, 4, "magic") != GGUF_MAGIC) fatal("%s: not a GGUF file (bad magic)", path);
    g->version = (uint32_t)rd(&c, 4, "version");
    if (g->version != 3)
        fatal("%s: GGUF version %u is not supported (this reader handles version 3)", path, g->version);
    g->n_tensors = rd(&c, 8, "tensor count");
    g->n_kv = rd(&c, 8, "metadata count");
    // Smallest encodings: a key-value pair is >= 13 bytes, a tensor info >= 32.
    if (g->n_kv > g->size / 13) fatal("%s: metadata count %llu is impossible for a file of %zu bytes",
                                      path, (unsigned long long)g->n_kv, g->size);
    if (g->n_tensors > g->size / 32) fatal("%s: tensor count %llu is impossible for a file of %zu bytes",
                                           path, (unsigned long long)g->n_tensors, g->size);
    g->keys = xcalloc((size_t)g->n_kv, sizeof(char *));
    g->values = xcalloc((size_t)g->n_kv, sizeof(GGUFValue));
    for (uint64_t k = 0; k < g->n_kv; k++) {
        uint64_t len;
        g->keys[k] = rd_string(&c, &len, "metadata key");
        check_name(&c, g->keys[k], len, "metadata key");
        int type = (int)rd(&c, 4, g->keys[k]);
        read_value(&c, &g->values[k], type, 0, g->keys[k]);
    }
    g->alignment = 32;
    const GGUFValue *al = gguf_get(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_UINT32 || al->i == 0 || (al->i & (al->i - 1)))
            fatal("%s: general.alignment must be a uint32 power of two", path);
        g->alignment = (uint64_t)al->i;
    }
    g->tensors = xcalloc((size_t)g->n_tensors, sizeof(GGUFTensor));
    for (uint64_t k = 0; k < g->n_tensors; k++) read_tensor_info(&c, &g->tensors[k], k);
    g->data_offset = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t k = 0; k < g->n_tensors; k++) locate_tensor(g, &g->tensors[k]);
}

void gguf_open(GGUFFile *g, const char *path) {
    memset(g, 0, sizeof *g);
    g->path = path;
    map_file(g, path);
    parse(g);
}

void gguf_open_memory(GGUFFile *g, const char *name, const uint8_t *data, size_t size) {
    memset(g, 0, sizeof *g);
    g->path = name;
    g->map = data;
    g->size = size;
    parse(g);
}

void gguf_close(GGUFFile *g) {
    for (uint64_t k = 0; k < g->n_kv; k++) {
        free(g->keys[k]);
        free_value(&g->values[k]);
    }
    for (uint64_t k = 0; k < g->n_tensors; k++) free(g->tensors[k].name);
    free(g->keys);
    free(g->values);
    free(g->tensors);
    if (g->mapped) munmap((void *)g->map, g->size);
    memset(g, 0, sizeof *g);
}

const GGUFValue *gguf_get(const GGUFFile *g, const char *key) {
    for (uint64_t k = 0; k < g->n_kv; k++)
        if (strcmp(g->keys[k], key) == 0) return &g->values[k];
    return NULL;
}

static const GGUFValue *need_value(const GGUFFile *g, const char *key) {
    const GGUFValue *v = gguf_get(g, key);
    if (!v) fatal("%s: missing metadata key %s", g->path, key);
    return v;
}

int64_t gguf_get_int(const GGUFFile *g, const char *key) {
    const GGUFValue *v = need_value(g, key);
    if (!fixed_size(v->type) || v->type == GGUF_FLOAT32 || v->type == GGUF_FLOAT64)
        fatal("%s: metadata %s is a %s, expected an integer", g->path, key, gguf_type_name(v->type));
    return v->i;
}

double gguf_get_float(const GGUFFile *g, const char *key) {
    const GGUFValue *v = need_value(g, key);
    if (!fixed_size(v->type)) fatal("%s: metadata %s is a %s, expected a number", g->path, key,
                                    gguf_type_name(v->type));
    return v->f;
}

const char *gguf_get_str(const GGUFFile *g, const char *key) {
    const GGUFValue *v = need_value(g, key);
    if (v->type != GGUF_STRING)
        fatal("%s: metadata %s is a %s, expected a string", g->path, key, gguf_type_name(v->type));
    return text_of(g, v, key, 0);
}

uint64_t gguf_get_str_array(const GGUFFile *g, const char *key, char ***out) {
    const GGUFValue *v = need_value(g, key);
    if (v->type != GGUF_ARRAY || v->elem_type != GGUF_STRING)
        fatal("%s: metadata %s is not an array of strings", g->path, key);
    *out = xmalloc((size_t)v->n * sizeof(char *));
    for (uint64_t k = 0; k < v->n; k++) (*out)[k] = (char *)text_of(g, &v->arr[k], key, k + 1);
    return v->n;
}

const GGUFTensor *gguf_find_tensor(const GGUFFile *g, const char *name) {
    for (uint64_t k = 0; k < g->n_tensors; k++)
        if (strcmp(g->tensors[k].name, name) == 0) return &g->tensors[k];
    return NULL;
}

const GGUFTensor *gguf_need_tensor(const GGUFFile *g, const char *name) {
    const GGUFTensor *t = gguf_find_tensor(g, name);
    if (!t) fatal("%s: missing tensor %s", g->path, name);
    if (!ggml_block_info(t->type, NULL, NULL))
        fatal("%s: tensor %s has type %s (%d), which export does not support "
              "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)", g->path, name, ggml_type_name(t->type),
              t->type);
    return t;
}

// ---- dequantization (block formats of ggml-common.h, read for the facts only) -----------

static uint16_t u16le(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

// Q8_0: 32 values = d * q, q int8.
static void deq_q8_0(const uint8_t *b, float *y) {
    float d = fp16_to_fp32(u16le(b));
    for (int j = 0; j < 32; j++) y[j] = d * (float)(int8_t)b[2 + j];
}

// Q4_0: 32 values = d * (nibble - 8); byte j holds value j (low nibble) and j + 16 (high).
static void deq_q4_0(const uint8_t *b, float *y) {
    float d = fp16_to_fp32(u16le(b));
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((b[2 + j] & 0x0f) - 8);
        y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
    }
}

// Q4_1: 32 values = d * nibble + m, same nibble order as Q4_0.
static void deq_q4_1(const uint8_t *b, float *y) {
    float d = fp16_to_fp32(u16le(b)), m = fp16_to_fp32(u16le(b + 2));
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(b[4 + j] & 0x0f) + m;
        y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
    }
}

void ggml_dequantize(int type, const uint8_t *src, float *dst, uint64_t n) {
    int be, bb;
    if (!ggml_block_info(type, &be, &bb)) fatal("cannot dequantize ggml type %s", ggml_type_name(type));
    uint64_t nblocks = n / (uint64_t)be;
    for (uint64_t i = 0; i < nblocks; i++) {
        const uint8_t *b = src + i * (uint64_t)bb;
        float *y = dst + i * (uint64_t)be;
        switch (type) {
        case GGML_F32: { union { uint32_t u; float f; } v = {(uint32_t)u16le(b) | (uint32_t)u16le(b + 2) << 16};
                         *y = v.f; break; }
        case GGML_F16: *y = fp16_to_fp32(u16le(b)); break;
        case GGML_BF16: *y = bf16_to_fp32(u16le(b)); break;
        case GGML_Q8_0: deq_q8_0(b, y); break;
        case GGML_Q4_0: deq_q4_0(b, y); break;
        case GGML_Q4_1: deq_q4_1(b, y); break;
        }
    }
}

void gguf_tensor_rows(const GGUFTensor *t, uint64_t row0, uint64_t nrows, float *out) {
    int be, bb;
    if (!ggml_block_info(t->type, &be, &bb)) fatal("tensor %s: unsupported type %s", t->name, ggml_type_name(t->type));
    uint64_t row_bytes = t->ne[0] / (uint64_t)be * (uint64_t)bb;
    ggml_dequantize(t->type, t->data + row0 * row_bytes, out, nrows * t->ne[0]);
}
