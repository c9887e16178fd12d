// gguf_builder.h: writes small GGUF files for the tests (header-only; used by test_gguf.c).
// A GGUF is assembled in memory: metadata, then tensor infos, then aligned data.
#ifndef KVT_GGUF_BUILDER_H
#define KVT_GGUF_BUILDER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../export/gguf.h"
#include "../util/util.h"

typedef struct { uint8_t *p; size_t n, cap; } Buf;

static inline void b_put(Buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static inline void b_uint(Buf *b, uint64_t v, int bytes) {   // little-endian
    for (int i = 0; i < bytes; i++) { uint8_t c = (uint8_t)(v >> (8 * i)); b_put(b, &c, 1); }
}
static inline void b_u32(Buf *b, uint32_t v) { b_uint(b, v, 4); }
static inline void b_u64(Buf *b, uint64_t v) { b_uint(b, v, 8); }
static inline void b_f32(Buf *b, float f) { union { float f; uint32_t u; } v = {f}; b_u32(b, v.u); }
static inline void b_str(Buf *b, const char *s) { b_u64(b, strlen(s)); b_put(b, s, strlen(s)); }
static inline void b_pad(Buf *b, size_t align) { while (b->n % align) b_uint(b, 0, 1); }

static inline void kv_u32(Buf *b, const char *k, uint32_t v) { b_str(b, k); b_u32(b, GGUF_UINT32); b_u32(b, v); }
static inline void kv_f32(Buf *b, const char *k, float v) { b_str(b, k); b_u32(b, GGUF_FLOAT32); b_f32(b, v); }
static inline void kv_str(Buf *b, const char *k, const char *v) { b_str(b, k); b_u32(b, GGUF_STRING); b_str(b, v); }
static inline void kv_str_array(Buf *b, const char *k, char **v, int n) {
    b_str(b, k); b_u32(b, GGUF_ARRAY); b_u32(b, GGUF_STRING); b_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) b_str(b, v[i]);
}
static inline void kv_i32_array(Buf *b, const char *k, const int32_t *v, int n) {
    b_str(b, k); b_u32(b, GGUF_ARRAY); b_u32(b, GGUF_INT32); b_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) b_u32(b, (uint32_t)v[i]);
}

// Tensors: infos are written by gb_tensor_info once data offsets are known.
typedef struct {
    const char *name;
    int n_dims;
    uint64_t ne[4];
    int type;
    uint8_t *data;          // raw bytes in the ggml type
    size_t nbytes;
    uint64_t offset;        // assigned by gb_layout (tests may overwrite it)
} GBTensor;

static inline void gb_layout(GBTensor *t, int n, uint64_t align) {
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        t[i].offset = pos;
        pos = (pos + t[i].nbytes + align - 1) / align * align;
    }
}

// Append tensor infos, padding and data to b (which already holds header + metadata).
static inline void gb_finish(Buf *b, const GBTensor *t, int n, uint64_t align) {
    for (int i = 0; i < n; i++) {
        b_str(b, t[i].name);
        b_u32(b, (uint32_t)t[i].n_dims);
        for (int d = 0; d < t[i].n_dims; d++) b_u64(b, t[i].ne[d]);
        b_u32(b, (uint32_t)t[i].type);
        b_u64(b, t[i].offset);
    }
    b_pad(b, align);
    size_t base = b->n;
    for (int i = 0; i < n; i++) {
        if (t[i].offset >= (1u << 28)) continue;     // a test's deliberately bad offset: no data
        while (b->n < base + t[i].offset) b_uint(b, 0, 1);
        if (b->n == base + t[i].offset) b_put(b, t[i].data, t[i].nbytes);
    }
}

static inline void gb_header(Buf *b, uint64_t n_tensors, uint64_t n_kv) {
    b_put(b, "GGUF", 4);
    b_u32(b, 3);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}

#endif
