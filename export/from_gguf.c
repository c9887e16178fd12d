// from_gguf.c: a llama.cpp GGUF checkpoint (architecture "llama") as a WeightSource.
// llama.cpp's converter already stores Q and K rows in Meta's interleaved RoPE order, the
// order model.bin uses (docs/DESIGN.md §2), so rows are copied through unpermuted.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "gguf.h"
#include "../model/modelbin.h"
#include "../util/util.h"

struct GGUFExport {
    GGUFFile g;
    Config c;
    const GGUFTensor *t[W_COUNT];      // non-layer tensors, by kind
    const GGUFTensor **layer;          // [n_layers][W_COUNT]
};

// A token id from metadata if present, else -1; an id outside the vocab is an error.
static int token_id(const GGUFFile *g, const char *key, uint64_t n_vocab) {
    if (!gguf_get(g, key)) return -1;
    int64_t id = gguf_get_int(g, key);
    if (id < 0 || (uint64_t)id >= n_vocab)
        fatal("%s: %s = %lld is outside the vocabulary (%llu tokens)", g->path, key, (long long)id,
              (unsigned long long)n_vocab);
    return (int)id;
}

void tokenizer_from_gguf(Tokenizer *t, const GGUFFile *g) {
    const char *model = gguf_get_str(g, "tokenizer.ggml.model");
    if (strcmp(model, "gpt2") != 0)
        fatal("%s: tokenizer.ggml.model \"%s\" is not supported (only byte-level BPE, \"gpt2\")",
              g->path, gguf_printable(model));
    char **tokens, **merges;
    uint64_t n_tok = gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens);
    uint64_t n_merges = gguf_get_str_array(g, "tokenizer.ggml.merges", &merges);
    if (n_tok == 0 || n_tok > (1u << 24)) fatal("%s: tokenizer.ggml.tokens has %llu entries", g->path,
                                                (unsigned long long)n_tok);
    if (n_merges > (1u << 24)) fatal("%s: tokenizer.ggml.merges has %llu entries", g->path,
                                     (unsigned long long)n_merges);
    int32_t *types = NULL;
    const GGUFValue *tt = gguf_get(g, "tokenizer.ggml.token_type");
    if (tt) {
        if (tt->type != GGUF_ARRAY || tt->elem_type != GGUF_INT32 || tt->n != n_tok)
            fatal("%s: tokenizer.ggml.token_type must be an int32 array with one entry per token", g->path);
        types = xmalloc(n_tok * sizeof(int32_t));
        for (uint64_t i = 0; i < n_tok; i++) types[i] = (int32_t)tt->arr[i].i;
    }
    // The builder guesses chat format and special ids from the token names
    // (tokenizer_guess_specials); GGUF's own keys, where present, take precedence.
    build_tokenizer_from_strings(t, tokens, (int)n_tok, merges, (int)n_merges, types);
    tokenizer_set_gguf_pre(t, gguf_printable(gguf_get_str(g, "tokenizer.ggml.pre")));   // unknown: fatal
    const char *keys[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                           "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"};
    int *ids[4] = {&t->bos_id, &t->eos_id, &t->eot_id, &t->eom_id};
    for (int k = 0; k < 4; k++) {
        int id = token_id(g, keys[k], n_tok);
        if (id >= 0) *ids[k] = id;
    }
    const GGUFValue *add_bos = gguf_get(g, "tokenizer.ggml.add_bos_token");
    if (add_bos && add_bos->type == GGUF_BOOL) t->add_bos = (int)add_bos->i && t->bos_id >= 0;
    free(tokens);
    free(merges);
    free(types);
}

static int get_dim(const GGUFFile *g, const char *key) {
    int64_t v = gguf_get_int(g, key);
    if (v <= 0 || v > (1 << 24)) fatal("%s: %s = %lld is out of range", g->path, key, (long long)v);
    return (int)v;
}

// GGUF tensor names (llama.cpp's llama architecture) for each kind.
static void tensor_name(char *buf, size_t n, WeightKind k, int layer) {
    static const char *layer_names[W_COUNT] = {
        [W_ATTN_NORM] = "attn_norm", [W_WQ] = "attn_q", [W_WK] = "attn_k", [W_WV] = "attn_v",
        [W_WO] = "attn_output", [W_FFN_NORM] = "ffn_norm", [W_GATE] = "ffn_gate",
        [W_DOWN] = "ffn_down", [W_UP] = "ffn_up"};
    if (k == W_EMBED) snprintf(buf, n, "token_embd.weight");
    else if (k == W_FINAL_NORM) snprintf(buf, n, "output_norm.weight");
    else if (k == W_CLASSIFIER) snprintf(buf, n, "output.weight");
    else snprintf(buf, n, "blk.%d.%s.weight", layer, layer_names[k]);
}

// Look up a tensor and check its shape is [rows][cols] (GGUF: ne = {cols, rows}).
static const GGUFTensor *need_shaped(const GGUFExport *e, WeightKind k, int layer) {
    char name[96];
    tensor_name(name, sizeof name, k, layer);
    const GGUFTensor *t = gguf_need_tensor(&e->g, name);
    uint64_t rows, cols;
    weight_shape(&e->c, k, &rows, &cols);
    int is_vec = rows == 1;
    if (t->ne[0] != cols || t->n_elements != rows * cols || (is_vec ? t->n_dims != 1 : t->n_dims != 2))
        fatal("%s: tensor %s has shape [%llu, %llu], expected [%llu, %llu]", e->g.path, name,
              (unsigned long long)t->ne[0], (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1),
              (unsigned long long)cols, (unsigned long long)rows);
    return t;
}

static void gguf_rows(WeightSource *src, WeightKind k, int layer, uint64_t row0, uint64_t nrows,
                      uint64_t ncols, float *out) {
    const GGUFExport *e = src->ctx;
    const GGUFTensor *t = layer < 0 ? e->t[k] : e->layer[(size_t)layer * W_COUNT + k];
    (void)ncols;
    gguf_tensor_rows(t, row0, nrows, out);
}

static void config_from_gguf(Config *c, const GGUFFile *g) {
    const char *arch = gguf_get_str(g, "general.architecture");
    if (strcmp(arch, "llama") != 0)
        fatal("%s: architecture \"%s\" is not supported (only \"llama\")", g->path, gguf_printable(arch));
    memset(c, 0, sizeof *c);
    c->n_layers = get_dim(g, "llama.block_count");
    c->dim = get_dim(g, "llama.embedding_length");
    c->hidden_dim = get_dim(g, "llama.feed_forward_length");
    c->n_heads = get_dim(g, "llama.attention.head_count");
    c->n_kv_heads = gguf_get(g, "llama.attention.head_count_kv") ? get_dim(g, "llama.attention.head_count_kv")
                                                                  : c->n_heads;
    c->max_seq_len = get_dim(g, "llama.context_length");
    c->norm_eps = (float)gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon");
    c->rope_theta = gguf_get(g, "llama.rope.freq_base") ? (float)gguf_get_float(g, "llama.rope.freq_base")
                                                        : 10000.0f;
    if (c->dim % c->n_heads) fatal("%s: embedding_length %d is not a multiple of head_count %d", g->path,
                                   c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    if (gguf_get(g, "llama.rope.dimension_count") && get_dim(g, "llama.rope.dimension_count") != c->head_dim)
        fatal("%s: llama.rope.dimension_count %d differs from head_dim %d (partial RoPE is not supported)",
              g->path, get_dim(g, "llama.rope.dimension_count"), c->head_dim);
    if (gguf_get(g, "llama.rope.scaling.type")) {
        const char *st = gguf_get_str(g, "llama.rope.scaling.type");
        if (strcmp(st, "none") != 0)
            fatal("%s: rope scaling type \"%s\" is not supported", g->path, gguf_printable(st));
    }
    if (gguf_find_tensor(g, "rope_freqs.weight"))
        fatal("%s: tensor rope_freqs.weight (Llama-3.1 rope scaling baked into frequencies) is not "
              "supported; export the model from its Hugging Face safetensors instead", g->path);
    const GGUFTensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb) fatal("%s: missing tensor token_embd.weight", g->path);
    if (emb->n_dims != 2 || emb->ne[1] > (1u << 24)) fatal("%s: token_embd.weight is not a [vocab][dim] matrix", g->path);
    c->vocab_size = gguf_get(g, "llama.vocab_size") ? get_dim(g, "llama.vocab_size") : (int)emb->ne[1];
    c->tied_classifier = gguf_find_tensor(g, "output.weight") == NULL;
}

GGUFExport *open_gguf_export(const char *path, Config *c, Tokenizer *tok, WeightSource *src) {
    GGUFExport *e = xcalloc(1, sizeof *e);
    gguf_open(&e->g, path);
    config_from_gguf(&e->c, &e->g);
    const char *err = config_check(&e->c);
    if (err) fatal("%s: unusable model dims: %s", path, err);
    // Find and shape-check every tensor before writing a byte.
    e->t[W_EMBED] = need_shaped(e, W_EMBED, -1);
    e->t[W_FINAL_NORM] = need_shaped(e, W_FINAL_NORM, -1);
    if (!e->c.tied_classifier) e->t[W_CLASSIFIER] = need_shaped(e, W_CLASSIFIER, -1);
    e->layer = xcalloc((size_t)e->c.n_layers * W_COUNT, sizeof(GGUFTensor *));
    for (int l = 0; l < e->c.n_layers; l++)
        for (int k = W_ATTN_NORM; k <= W_UP; k++)
            e->layer[(size_t)l * W_COUNT + k] = need_shaped(e, (WeightKind)k, l);
    tokenizer_from_gguf(tok, &e->g);
    *c = e->c;
    src->rows = gguf_rows;
    src->ctx = e;
    return e;
}

void close_gguf_export(GGUFExport *e) {
    gguf_close(&e->g);
    free(e->layer);
    free(e);
}
