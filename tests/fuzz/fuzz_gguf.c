// fuzz_gguf.c: the GGUF reader and the exporter's reading of a GGUF (export/gguf.c,
// export/from_gguf.c). Every metadata value goes through the getter of its kind (which must
// refuse exactly the strings with a NUL byte inside), every tensor of a supported type is
// dequantized whole (with the bounds its block format implies), then the tokenizer and the
// export setup (config, tensor shapes) read the file.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../export/export.h"
#include "../../export/gguf.h"
#include "../../util/util.h"

#define NAME "fuzz.gguf"
#define MAX_DEQUANT ((uint64_t)1 << 20)    // elements dequantized per input

typedef struct {
    const uint8_t *data;
    size_t size;
    GGUFFile g;
    uint64_t key;
    Tokenizer tok;
    Config c;
    WeightSource src;
    GGUFExport *e;
} Ctx;

static void do_open(void *p) { Ctx *x = p; gguf_open_memory(&x->g, NAME, x->data, x->size); }

// 1 if a string value, or an element of an array of strings, holds a NUL byte inside: its
// getter must refuse it (it would be cut short as a C string).
static int has_nul(const GGUFValue *v) {
    if (v->type == GGUF_STRING) return memchr(v->str, 0, (size_t)v->str_len) != NULL;
    if (v->type == GGUF_ARRAY && v->elem_type == GGUF_STRING)
        for (uint64_t k = 0; k < v->n; k++)
            if (memchr(v->arr[k].str, 0, (size_t)v->arr[k].str_len)) return 1;
    return 0;
}

// The typed getter that matches the value's kind must accept it and agree with it.
static void do_get(void *p) {
    Ctx *x = p;
    const char *key = x->g.keys[x->key];
    const GGUFValue *v = gguf_get(&x->g, key);       // the first of equal keys
    switch (v->type) {
    case GGUF_FLOAT32: case GGUF_FLOAT64: {
        double f = gguf_get_float(&x->g, key);
        if (!(f == v->f || (isnan(f) && isnan(v->f)))) fuzz_fail("%s: gguf_get_float %g, value %g", key, f, v->f);
        break;
    }
    case GGUF_STRING:
        if (strcmp(gguf_get_str(&x->g, key), v->str)) fuzz_fail("%s: gguf_get_str differs", key);
        printable(v->str);
        break;
    case GGUF_ARRAY:
        if (v->elem_type == GGUF_STRING) {
            char **s;
            uint64_t n = gguf_get_str_array(&x->g, key, &s);
            if (n != v->n) fuzz_fail("%s: %llu strings, array has %llu", key, (unsigned long long)n,
                                     (unsigned long long)v->n);
            free(s);
        }
        break;
    default:
        if (gguf_get_int(&x->g, key) != v->i) fuzz_fail("%s: gguf_get_int differs", key);
        if (gguf_get_float(&x->g, key) != (double)v->i) fuzz_fail("%s: gguf_get_float of an integer differs", key);
    }
}

static uint16_t u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

// Dequantize t whole, row by row, and check each value against what its block allows.
static void dequantize(const GGUFTensor *t, uint64_t *budget) {
    int be, bb;
    if (!ggml_block_info(t->type, &be, &bb) || t->n_elements > *budget) return;
    *budget -= t->n_elements;
    uint64_t cols = t->ne[0], rows = t->n_elements / cols;
    float *y = xmalloc(cols * sizeof *y);
    for (uint64_t r = 0; r < rows; r++) {
        gguf_tensor_rows(t, r, 1, y);
        const uint8_t *row = t->data + r * (cols / (uint64_t)be) * (uint64_t)bb;
        for (uint64_t j = 0; j < cols; j++) {
            const uint8_t *b = row + j / (uint64_t)be * (uint64_t)bb;
            float d = be > 1 ? fp16_to_fp32(u16(b)) : 0, lo, hi;
            switch (t->type) {
            case GGML_F32: { float f; memcpy(&f, b, 4); lo = hi = f; break; }
            case GGML_F16: lo = hi = fp16_to_fp32(u16(b)); break;
            case GGML_BF16: lo = hi = bf16_to_fp32(u16(b)); break;
            case GGML_Q8_0: lo = -128 * fabsf(d); hi = 128 * fabsf(d); break;
            case GGML_Q4_0: lo = -8 * fabsf(d); hi = 8 * fabsf(d); break;
            default: { float m = fp16_to_fp32(u16(b + 2)); lo = fminf(m, m + 15 * d); hi = fmaxf(m, m + 15 * d); }
            }
            // Plain types: the very bits; blocks: inside the range the scale (and min) allow,
            // where those are finite (rounding is monotonic, so the float bounds are exact).
            if (be == 1 ? memcmp(&y[j], &lo, 4) != 0
                        : isfinite(d) && isfinite(lo) && isfinite(hi) && !(y[j] >= lo && y[j] <= hi))
                fuzz_fail("tensor %s (%s): element %llu of row %llu is %g, outside [%g, %g]", t->name,
                          ggml_type_name(t->type), (unsigned long long)j, (unsigned long long)r, (double)y[j],
                          (double)lo, (double)hi);
        }
    }
    free(y);
}

static void do_tokenizer(void *p) { Ctx *x = p; tokenizer_from_gguf(&x->tok, &x->g); }
static void do_export(void *p) {
    Ctx *x = p;
    x->e = open_gguf_export_memory(NAME, x->data, x->size, &x->c, &x->tok, &x->src);
}

// One row of each weight of layer 0 and of the whole-model tensors, as export reads them.
static void read_rows(Ctx *x) {
    float *out = xmalloc((size_t)(x->c.dim > x->c.hidden_dim ? x->c.dim : x->c.hidden_dim) * 4 +
                         (size_t)x->c.n_heads * (size_t)x->c.head_dim * 4);
    for (int k = 0; k < W_COUNT; k++) {
        if (k == W_CLASSIFIER && x->c.tied_classifier) continue;
        uint64_t rows, cols;
        weight_shape(&x->c, (WeightKind)k, &rows, &cols);
        int layer = k == W_EMBED || k == W_FINAL_NORM || k == W_CLASSIFIER ? -1 : 0;
        x->src.rows(&x->src, (WeightKind)k, layer, rows - 1, 1, cols, out);
    }
    free(out);
}

static void run(const uint8_t *data, size_t size) {
    Ctx x = { .data = data, .size = size };
    if (!fuzz_call(do_open, &x)) return;
    for (x.key = 0; x.key < x.g.n_kv; x.key++) {
        int nul = has_nul(gguf_get(&x.g, x.g.keys[x.key])), accepted = fuzz_call(do_get, &x);
        if (accepted && nul) fuzz_fail("%s: a getter accepted a string with a NUL byte inside", x.g.keys[x.key]);
        if (!accepted && !nul) fuzz_fail("a getter refused a value of its own kind: %s", fuzz_last_error());
    }
    uint64_t budget = MAX_DEQUANT;
    for (uint64_t k = 0; k < x.g.n_tensors; k++) dequantize(&x.g.tensors[k], &budget);
    if (fuzz_call(do_tokenizer, &x)) {
        fuzz_check_tokenizer_samples(&x.tok);
        free_tokenizer(&x.tok);
    }
    gguf_close(&x.g);
    if (fuzz_call(do_export, &x)) {
        read_rows(&x);
        free_tokenizer(&x.tok);
        close_gguf_export(x.e);
    }
}

FUZZ_TARGET(gguf)
