// modelbin.c: the one definition of the model.bin tensor layout and its validation.
// The writer (export/writer.c) and the loader (model/model.c) both call build_weight_layout,
// so the two can never disagree about where a tensor lives.
#include "modelbin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/util.h"

// Generous sanity bounds: far above any Llama (Llama-3-405B has dim 16384, 126 layers),
// low enough that every product below stays well inside 64 bits and no loader allocates
// absurd per-layer tables from a corrupt header.
#define MAX_DIM      (1 << 20)
#define MAX_LAYERS   4096
#define MAX_VOCAB    (1 << 24)
#define MAX_SEQ      (1 << 24)

// config.h's BlockQ8_0 is GGUF's Q8_0 block, fp16 scale and 32 codes, with no padding.
_Static_assert(sizeof(BlockQ8_0) == 2 + Q8_0_BLOCK, "BlockQ8_0 must be GGUF's 34-byte block");

static char check_msg[200];

static const char *bad(const char *fmt, long long v) {
    snprintf(check_msg, sizeof check_msg, fmt, v);
    return check_msg;
}

// Check one integer field is in [1, max]; name the field when it is not.
static const char *check_range(const char *field, int v, int max) {
    if (v <= 0) {
        snprintf(check_msg, sizeof check_msg, "%s is %d, must be positive", field, v);
        return check_msg;
    }
    if (v > max) {
        snprintf(check_msg, sizeof check_msg, "%s is %d, larger than the limit %d", field, v, max);
        return check_msg;
    }
    return NULL;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Hand out consecutive 64-byte-aligned slots in file order (modelbin.h lists the order).
static uint64_t take(uint64_t *pos, uint64_t bytes) {
    uint64_t at = *pos;
    *pos = align_up(at + bytes, MODELBIN_TENSOR_ALIGN);
    return at;
}

// The layout itself: offsets of every tensor in file order; returns the total. With l NULL
// only the total is computed. Only called on configs within the bounds above, where the
// largest tensor is 2^24 * 2^20 * 4 = 2^46 bytes and the total stays below 2^60: no overflow.
static uint64_t walk_layout(const Config *c, WeightLayout *l) {
    DType wt = (DType)c->wdtype;
    uint64_t d = (uint64_t)c->dim;
    uint64_t q = (uint64_t)c->n_heads * c->head_dim, kv = (uint64_t)c->n_kv_heads * c->head_dim;
    uint64_t h = (uint64_t)c->hidden_dim, v = (uint64_t)c->vocab_size, pos = 0;
    // A matrix [rows][cols] is rows * (bytes of one row); a q8_0 row is cols/32 blocks.
    uint64_t row_d = dtype_bytes(wt, d), row_q = dtype_bytes(wt, q), row_h = dtype_bytes(wt, h);
    uint64_t emb = take(&pos, v * row_d);
    for (int i = 0; i < c->n_layers; i++) {
        LayerOffsets scratch, *o = l ? &l->layers[i] : &scratch;
        o->attn_norm = take(&pos, d * 4);
        o->wq = take(&pos, q * row_d);
        o->wk = take(&pos, kv * row_d);
        o->wv = take(&pos, kv * row_d);
        o->wo = take(&pos, d * row_q);
        o->ffn_norm = take(&pos, d * 4);
        o->w_gate = take(&pos, h * row_d);
        o->w_down = take(&pos, d * row_h);
        o->w_up = take(&pos, h * row_d);
    }
    uint64_t final_norm = take(&pos, d * 4);
    uint64_t classifier = c->tied_classifier ? emb : take(&pos, v * row_d);
    if (l) {
        l->token_embedding = emb;
        l->final_norm = final_norm;
        l->classifier = classifier;
        l->total = pos;
    }
    return pos;
}

const char *config_check(const Config *c) {
    const char *e;
    if ((e = check_range("dim", c->dim, MAX_DIM))) return e;
    if ((e = check_range("hidden_dim", c->hidden_dim, MAX_DIM))) return e;
    if ((e = check_range("n_layers", c->n_layers, MAX_LAYERS))) return e;
    if ((e = check_range("n_heads", c->n_heads, MAX_DIM))) return e;
    if ((e = check_range("n_kv_heads", c->n_kv_heads, MAX_DIM))) return e;
    if ((e = check_range("head_dim", c->head_dim, MAX_DIM))) return e;
    if ((e = check_range("vocab_size", c->vocab_size, MAX_VOCAB))) return e;
    if ((e = check_range("max_seq_len", c->max_seq_len, MAX_SEQ))) return e;
    if ((int64_t)c->n_heads * c->head_dim != c->dim) {
        snprintf(check_msg, sizeof check_msg, "n_heads (%d) * head_dim (%d) != dim (%d)",
                 c->n_heads, c->head_dim, c->dim);
        return check_msg;
    }
    if (c->head_dim % 2) return bad("head_dim is %lld, must be even (RoPE rotates pairs)", c->head_dim);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads) {
        snprintf(check_msg, sizeof check_msg, "n_kv_heads (%d) must divide n_heads (%d)",
                 c->n_kv_heads, c->n_heads);
        return check_msg;
    }
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return "norm_eps must be in (0, 1)";
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta))) return "rope_theta must be positive and finite";
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        if (!(c->rope_factor >= 1 && isfinite(c->rope_factor))) return "rope_factor must be >= 1 and finite";
        if (!(c->rope_low_freq_factor > 0 && isfinite(c->rope_low_freq_factor)))
            return "rope_low_freq_factor must be positive";
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor && isfinite(c->rope_high_freq_factor)))
            return "rope_high_freq_factor must be larger than rope_low_freq_factor";
        if ((e = check_range("rope_orig_ctx", c->rope_orig_ctx, MAX_SEQ))) return e;
    } else if (c->rope_scaling != ROPE_SCALING_NONE) {
        return bad("rope_scaling is %lld, must be 0 (none) or 1 (llama3)", c->rope_scaling);
    }
    if (c->tied_classifier != 0 && c->tied_classifier != 1)
        return bad("tied_classifier is %lld, must be 0 or 1", c->tied_classifier);
    if (c->wdtype != DTYPE_F32 && c->wdtype != DTYPE_F16 && c->wdtype != DTYPE_BF16 && c->wdtype != DTYPE_Q8_0)
        return bad("wdtype is %lld, must be 0 (f32), 1 (f16), 2 (bf16) or 3 (q8_0)", c->wdtype);
    // Q8_0 blocks run along a matrix's input dimension (dim for every matrix but w_down,
    // whose input is hidden_dim; wo's is n_heads * head_dim = dim): it must hold whole blocks.
    if (c->wdtype == DTYPE_Q8_0 && (c->dim % Q8_0_BLOCK || c->hidden_dim % Q8_0_BLOCK)) {
        snprintf(check_msg, sizeof check_msg,
                 "wdtype q8_0 needs dim and hidden_dim to be multiples of %d (blocks of %d along each "
                 "row), got dim %d, hidden_dim %d", Q8_0_BLOCK, Q8_0_BLOCK, c->dim, c->hidden_dim);
        return check_msg;
    }
    return NULL;
}

void build_weight_layout(WeightLayout *l, const Config *c) {
    const char *e = config_check(c);
    if (e) fatal("build_weight_layout: invalid config: %s", e);
    l->layers = xcalloc((size_t)c->n_layers, sizeof(LayerOffsets));
    walk_layout(c, l);
}

void free_weight_layout(WeightLayout *l) {
    free(l->layers);
    l->layers = NULL;
}

void header_from_config(ModelHeader *h, const Config *c) {
    memset(h, 0, sizeof *h);
    h->magic = MODELBIN_MAGIC;
    h->version = MODELBIN_VERSION;
    h->dim = c->dim;
    h->hidden_dim = c->hidden_dim;
    h->n_layers = c->n_layers;
    h->n_heads = c->n_heads;
    h->n_kv_heads = c->n_kv_heads;
    h->head_dim = c->head_dim;
    h->vocab_size = c->vocab_size;
    h->max_seq_len = c->max_seq_len;
    h->norm_eps = c->norm_eps;
    h->rope_theta = c->rope_theta;
    h->rope_scaling = c->rope_scaling;
    h->rope_factor = c->rope_factor;
    h->rope_low_freq_factor = c->rope_low_freq_factor;
    h->rope_high_freq_factor = c->rope_high_freq_factor;
    h->rope_orig_ctx = c->rope_orig_ctx;
    h->tied_classifier = c->tied_classifier;
    h->wdtype = (int32_t)c->wdtype;
}

void config_from_header(Config *c, const ModelHeader *h) {
    memset(c, 0, sizeof *c);
    c->dim = h->dim;
    c->hidden_dim = h->hidden_dim;
    c->n_layers = h->n_layers;
    c->n_heads = h->n_heads;
    c->n_kv_heads = h->n_kv_heads;
    c->head_dim = h->head_dim;
    c->vocab_size = h->vocab_size;
    c->max_seq_len = h->max_seq_len;
    c->norm_eps = h->norm_eps;
    c->rope_theta = h->rope_theta;
    c->rope_scaling = h->rope_scaling;
    c->rope_factor = h->rope_factor;
    c->rope_low_freq_factor = h->rope_low_freq_factor;
    c->rope_high_freq_factor = h->rope_high_freq_factor;
    c->rope_orig_ctx = h->rope_orig_ctx;
    c->tied_classifier = h->tied_classifier;
    c->wdtype = (DType)h->wdtype;
}

const char *header_check(const ModelHeader *h, uint64_t file_size) {
    if (h->magic != MODELBIN_MAGIC) return "not a model.bin file (wrong magic)";
    if (h->version > MODELBIN_VERSION) {
        snprintf(check_msg, sizeof check_msg,
                 "format version %u is newer than this program reads (%d); rebuild kvtuner.c",
                 h->version, MODELBIN_VERSION);
        return check_msg;
    }
    if (h->version != MODELBIN_VERSION) return bad("unsupported format version %lld", h->version);
    Config c;
    config_from_header(&c, h);
    const char *e = config_check(&c);
    if (e) {
        char why[160];
        snprintf(why, sizeof why, "%s", e);
        snprintf(check_msg, sizeof check_msg, "bad header: %s", why);
        return check_msg;
    }
    if (h->file_size != file_size) {
        snprintf(check_msg, sizeof check_msg, "file is %llu bytes but its header says %llu%s",
                 (unsigned long long)file_size, (unsigned long long)h->file_size,
                 file_size < h->file_size ? " (truncated)" : "");
        return check_msg;
    }
    uint64_t wt_total = walk_layout(&c, NULL), tok_end, wt_end;
    if (h->tok_offset < MODELBIN_HEADER_SIZE || add_overflow_u64(h->tok_offset, h->tok_size, &tok_end) ||
        tok_end > h->wt_offset)
        return "bad header: tokenizer section is outside the file or overlaps the weights";
    if (h->wt_offset % MODELBIN_WEIGHTS_ALIGN)
        return "bad header: weights offset is not 4096-aligned";
    if (h->wt_size != wt_total)
        return "bad header: weights size does not match the dims (dims inconsistent with the file)";
    if (add_overflow_u64(h->wt_offset, h->wt_size, &wt_end) || wt_end > file_size)
        return "bad header: weights run past the end of the file (dims inconsistent with the file size)";
    return NULL;
}
