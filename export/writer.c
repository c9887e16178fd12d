// writer.c: the model.bin writer. Layout and header come from model/modelbin.c (the same
// code the loader uses); this file only streams bytes into the slots it hands out.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export.h"
#include "../kernels/matmul_q8.h"
#include "../model/modelbin.h"
#include "../util/util.h"

#define CHUNK_ELEMS (4u << 20)   // rows are fetched ~16 MB of f32 at a time

const char *weight_kind_name(WeightKind k) {
    static const char *names[W_COUNT] = {"token_embedding", "attn_norm", "wq", "wk", "wv", "wo",
                                         "ffn_norm", "w_gate", "w_down", "w_up", "final_norm",
                                         "classifier"};
    return k >= 0 && k < W_COUNT ? names[k] : "?";
}

void weight_shape(const Config *c, WeightKind k, uint64_t *rows, uint64_t *cols) {
    uint64_t d = (uint64_t)c->dim, q = (uint64_t)c->n_heads * c->head_dim;
    uint64_t kv = (uint64_t)c->n_kv_heads * c->head_dim, h = (uint64_t)c->hidden_dim;
    uint64_t r = 1, n = d;
    switch (k) {
    case W_EMBED: case W_CLASSIFIER: r = (uint64_t)c->vocab_size; break;
    case W_ATTN_NORM: case W_FFN_NORM: case W_FINAL_NORM: break;
    case W_WQ: r = q; break;
    case W_WK: case W_WV: r = kv; break;
    case W_WO: r = d; n = q; break;
    case W_GATE: case W_UP: r = h; break;
    case W_DOWN: r = d; n = h; break;
    default: break;
    }
    *rows = r;
    *cols = n;
}

// The temporary file is removed if export dies part way (fatal exits through atexit).
static char *tmp_path;
static void remove_tmp(void) {
    if (tmp_path) unlink(tmp_path);
}

typedef struct {
    FILE *f;
    const char *path;
    uint64_t pos;
    float *buf;          // [CHUNK_ELEMS] rows from the source
    void *conv;          // the same in the file's dtype (2 * CHUNK_ELEMS bytes: f16, bf16, q8_0)
} Out;

static void put(Out *o, const void *p, uint64_t n) {
    if (n && fwrite(p, 1, (size_t)n, o->f) != n) fatal("%s: write failed: %s", o->path, strerror(errno));
    o->pos += n;
}

static void pad_to(Out *o, uint64_t at) {
    static const uint8_t zeros[4096];
    if (at < o->pos) fatal("%s: internal error: writing backwards (%llu < %llu)", o->path,
                           (unsigned long long)at, (unsigned long long)o->pos);
    while (o->pos < at) put(o, zeros, at - o->pos < sizeof zeros ? at - o->pos : sizeof zeros);
}

// Rows [r, r + nr) of a q8_0 tensor: the source's own Q8_0 blocks when it has them (a GGUF
// Q8_0 tensor is copied, not quantized again), else its f32 rows quantized per block of 32.
static void write_q8_0_rows(Out *o, WeightSource *src, WeightKind k, int layer, uint64_t r, uint64_t nr,
                            uint64_t cols) {
    uint64_t row_bytes = dtype_bytes(DTYPE_Q8_0, cols);
    if (!(src->q8_0_rows && src->q8_0_rows(src, k, layer, r, nr, cols, o->conv))) {
        src->rows(src, k, layer, r, nr, cols, o->buf);
        for (uint64_t i = 0; i < nr; i++)
            if (q8_0_quantize_row((BlockQ8_0 *)((uint8_t *)o->conv + i * row_bytes), o->buf + i * cols, cols)) {
                char layer_name[32] = "";
                if (layer >= 0) snprintf(layer_name, sizeof layer_name, "layer %d ", layer);
                fatal("%s: %s%s row %llu: a weight is not finite or too large for q8_0's fp16 scale", o->path,
                      layer_name, weight_kind_name(k), (unsigned long long)(r + i));
            }
    }
    put(o, o->conv, nr * row_bytes);
}

// Stream one tensor: rows from the source, converted to dt, in CHUNK_ELEMS pieces.
static void write_tensor(Out *o, const Config *c, WeightSource *src, WeightKind k, int layer,
                         uint64_t offset, DType dt) {
    uint64_t rows, cols;
    weight_shape(c, k, &rows, &cols);
    pad_to(o, offset);
    uint64_t step = CHUNK_ELEMS / cols ? CHUNK_ELEMS / cols : 1;
    if (step * cols > CHUNK_ELEMS) fatal("%s: a %s row of %llu elements is too long", o->path,
                                         weight_kind_name(k), (unsigned long long)cols);
    for (uint64_t r = 0; r < rows; r += step) {
        uint64_t nr = rows - r < step ? rows - r : step, n = nr * cols;
        if (dt == DTYPE_Q8_0) { write_q8_0_rows(o, src, k, layer, r, nr, cols); continue; }
        src->rows(src, k, layer, r, nr, cols, o->buf);
        if (dt == DTYPE_F32) { put(o, o->buf, n * 4); continue; }
        uint16_t *h = o->conv;
        if (dt == DTYPE_F16) for (uint64_t i = 0; i < n; i++) h[i] = fp32_to_fp16(o->buf[i]);
        else for (uint64_t i = 0; i < n; i++) h[i] = fp32_to_bf16(o->buf[i]);
        put(o, h, n * 2);
    }
}

void write_model_bin(const char *path, const Config *c, const Tokenizer *tok, WeightSource *src) {
    const char *e = config_check(c);
    if (e) fatal("%s: invalid model config: %s", path, e);
    if (tok->vocab_size != c->vocab_size)
        fatal("%s: the tokenizer has %d tokens but the model's vocab is %d", path, tok->vocab_size,
              c->vocab_size);
    WeightLayout L;
    build_weight_layout(&L, c);
    uint64_t tok_size;
    uint8_t *blob = tokenizer_to_blob(tok, &tok_size);
    ModelHeader h;
    header_from_config(&h, c);
    h.tok_offset = MODELBIN_HEADER_SIZE;
    h.tok_size = tok_size;
    h.wt_offset = (h.tok_offset + tok_size + MODELBIN_WEIGHTS_ALIGN - 1) / MODELBIN_WEIGHTS_ALIGN *
                  MODELBIN_WEIGHTS_ALIGN;
    h.wt_size = L.total;
    h.file_size = h.wt_offset + L.total;

    size_t plen = strlen(path);
    tmp_path = xmalloc(plen + 5);
    memcpy(tmp_path, path, plen);
    memcpy(tmp_path + plen, ".tmp", 5);
    atexit(remove_tmp);
    Out o = {fopen(tmp_path, "wb"), path, 0, xmalloc(CHUNK_ELEMS * sizeof(float)),
             xmalloc(CHUNK_ELEMS * sizeof(uint16_t))};
    if (!o.f) fatal("%s: cannot create: %s", tmp_path, strerror(errno));
    setvbuf(o.f, NULL, _IOFBF, 1 << 22);
    put(&o, &h, sizeof h);
    put(&o, blob, tok_size);

    int progress = isatty(2);
    DType dt = c->wdtype;
    uint64_t base = h.wt_offset;
    if (progress) fprintf(stderr, "\rexport: token embedding");
    write_tensor(&o, c, src, W_EMBED, -1, base + L.token_embedding, dt);
    for (int l = 0; l < c->n_layers; l++) {
        if (progress) fprintf(stderr, "\r\033[Kexport: layer %d/%d", l + 1, c->n_layers);
        const LayerOffsets *lo = &L.layers[l];
        write_tensor(&o, c, src, W_ATTN_NORM, l, base + lo->attn_norm, DTYPE_F32);
        write_tensor(&o, c, src, W_WQ, l, base + lo->wq, dt);
        write_tensor(&o, c, src, W_WK, l, base + lo->wk, dt);
        write_tensor(&o, c, src, W_WV, l, base + lo->wv, dt);
        write_tensor(&o, c, src, W_WO, l, base + lo->wo, dt);
        write_tensor(&o, c, src, W_FFN_NORM, l, base + lo->ffn_norm, DTYPE_F32);
        write_tensor(&o, c, src, W_GATE, l, base + lo->w_gate, dt);
        write_tensor(&o, c, src, W_DOWN, l, base + lo->w_down, dt);
        write_tensor(&o, c, src, W_UP, l, base + lo->w_up, dt);
    }
    write_tensor(&o, c, src, W_FINAL_NORM, -1, base + L.final_norm, DTYPE_F32);
    if (progress && !c->tied_classifier) fprintf(stderr, "\r\033[Kexport: classifier");
    if (!c->tied_classifier) write_tensor(&o, c, src, W_CLASSIFIER, -1, base + L.classifier, dt);
    if (progress) fprintf(stderr, "\r\033[K");
    pad_to(&o, h.file_size);
    if (fclose(o.f) != 0) fatal("%s: write failed: %s", tmp_path, strerror(errno));
    if (rename(tmp_path, path) != 0) fatal("%s: cannot rename %s: %s", path, tmp_path, strerror(errno));
    free(tmp_path);
    tmp_path = NULL;
    free(o.buf);
    free(o.conv);
    free(blob);
    free_weight_layout(&L);
}
