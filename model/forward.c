// forward.c: the Llama transformer forward pass over a batch of tokens.
//
// Per layer, the projections (matmuls) run over all n tokens at once — they read each weight
// once per batch instead of once per token, which is what makes prefill fast. Attention then
// runs position by position in order: token t attends over everything cached before it and
// over its own K/V as computed, then appends its K/V to the cache (the seed's timing), so a
// batched prefill fills and reads the (possibly quantized) cache exactly as token-by-token
// decoding would (docs/DESIGN.md §3.3, §3.5).
#include "model.h"
#include "../kernels/kernels.h"
#include "../util/util.h"

#include <stdlib.h>
#include <string.h>

void build_runstate(RunState *s, const Config *c, int max_batch, int64_t max_tokens) {
    if (max_batch < 1) fatal("build_runstate: max_batch %d < 1", max_batch);
    if (max_tokens < 1) fatal("build_runstate: max_tokens %lld < 1", (long long)max_tokens);
    size_t b = (size_t)max_batch, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    s->max_batch = max_batch;
    s->x = xcalloc(b * c->dim, sizeof(float));
    s->xb = xcalloc(b * c->dim, sizeof(float));
    s->xb2 = xcalloc(b * c->dim, sizeof(float));
    s->q = xcalloc(b * qd, sizeof(float));
    s->k = xcalloc(b * kvd, sizeof(float));
    s->v = xcalloc(b * kvd, sizeof(float));
    s->att_out = xcalloc(b * qd, sizeof(float));
    s->hb = xcalloc(b * c->hidden_dim, sizeof(float));
    s->hb2 = xcalloc(b * c->hidden_dim, sizeof(float));
    s->logits = xcalloc(b * c->vocab_size, sizeof(float));
    s->rope_freqs = xcalloc((size_t)c->head_dim / 2, sizeof(float));
    rope_freqs(s->rope_freqs, c);
}

void free_runstate(RunState *s) {
    free(s->x); free(s->xb); free(s->xb2); free(s->q); free(s->k); free(s->v);
    free(s->att_out); free(s->hb); free(s->hb2); free(s->logits); free(s->rope_freqs);
    memset(s, 0, sizeof *s);
}

static void add_inplace(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

// Matmuls of one input x[n][k] (kernels.h matmul_multi: Q, K and V, or gate and up, share one
// fork/join) over n tokens in chunks of MM_CHUNK: a chunk of activations stays in cache while
// each block of weight rows is reused over it (the kernel's results do not depend on the
// batch, so chunking changes no bit).
#define MM_CHUNK 66
#define MM_MAX_OUTS 3
static void matmul_chunked(const float *x, DType wt, int n, int k, const MatmulOut *outs, int count) {
    MatmulOut o[MM_MAX_OUTS];
    for (int t = 0; t < n; t += MM_CHUNK) {
        int nb = n - t < MM_CHUNK ? n - t : MM_CHUNK;
        for (int i = 0; i < count; i++) o[i] = (MatmulOut){outs[i].out + (size_t)t * outs[i].d, outs[i].w, outs[i].d};
        matmul_multi(x + (size_t)t * k, wt, nb, k, o, count);
    }
}
static void matmul_one(float *out, const float *x, const void *w, DType wt, int n, int k, int d) {
    MatmulOut o = {out, w, d};
    matmul_chunked(x, wt, n, k, &o, 1);
}

// Norm and Q/K/V projections of rows s->x[0..n): s->q, s->k, s->v, before RoPE.
static void qkv_project(const Model *m, RunState *s, int l, int n) {
    const Config *c = &m->config;
    const LayerWeights *w = &m->weights.layers[l];
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    rmsnorm(s->xb, s->x, w->attn_norm, n, c->dim, c->norm_eps);
    MatmulOut qkv[3] = {{s->q, w->wq, qd}, {s->k, w->wk, kvd}, {s->v, w->wv, kvd}};
    matmul_chunked(s->xb, c->wdtype, n, c->dim, qkv, 3);
}

// RoPE of row t of s->q and s->k at position pos.
static void rope_row(const Config *c, RunState *s, int t, int64_t pos) {
    rope(s->q + (size_t)t * c->n_heads * c->head_dim, c->n_heads, c->head_dim, (int)pos, s->rope_freqs);
    rope(s->k + (size_t)t * c->n_kv_heads * c->head_dim, c->n_kv_heads, c->head_dim, (int)pos, s->rope_freqs);
}

void layer_qkv(const Model *m, RunState *s, int l, int n, int64_t pos) {
    qkv_project(m, s, l, n);
    for (int t = 0; t < n; t++) rope_row(&m->config, s, t, pos + t);
}

AttnRows layer_attn_rows(const Config *c, RunState *s, int n) {
    return (AttnRows){ s->q, s->k, s->v, s->att_out, n, c->n_heads };
}

void layer_out_ffn(const Model *m, RunState *s, int l, int n, const float *att_out) {
    const Config *c = &m->config;
    const LayerWeights *w = &m->weights.layers[l];
    matmul_one(s->xb2, att_out, w->wo, c->wdtype, n, c->n_heads * c->head_dim, c->dim);
    add_inplace(s->x, s->xb2, (size_t)n * c->dim);
    // SwiGLU feed-forward block
    rmsnorm(s->xb, s->x, w->ffn_norm, n, c->dim, c->norm_eps);
    MatmulOut gate_up[2] = {{s->hb, w->w_gate, c->hidden_dim}, {s->hb2, w->w_up, c->hidden_dim}};
    matmul_chunked(s->xb, c->wdtype, n, c->dim, gate_up, 2);
    swiglu(s->hb, s->hb, s->hb2, n * c->hidden_dim);
    matmul_one(s->xb2, s->hb, w->w_down, c->wdtype, n, c->hidden_dim, c->dim);
    add_inplace(s->x, s->xb2, (size_t)n * c->dim);
}

float *head_logits(const Model *m, RunState *s, const float *x, int rows) {
    const Config *c = &m->config;
    rmsnorm(s->xb, x, m->weights.final_norm, rows, c->dim, c->norm_eps);
    matmul_one(s->logits, s->xb, m->weights.classifier, c->wdtype, rows, c->dim, c->vocab_size);
    return s->logits;
}

// Token embeddings of tokens[0..n) into s->x.
static void embed_rows(const Model *m, RunState *s, const int *tokens, int n, const char *who) {
    const Config *c = &m->config;
    if (n < 1 || n > s->max_batch) fatal("%s: batch of %d tokens (max %d)", who, n, s->max_batch);
    for (int t = 0; t < n; t++) {
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size) fatal("%s: token id %d outside the vocabulary", who, tokens[t]);
        embed(s->x + (size_t)t * c->dim, m->weights.token_embedding, c->wdtype, c->dim, tokens[t]);
    }
}

float *forward(const Model *m, RunState *s, KVCache *cache, const int *tokens, int n, int64_t pos, int all_logits) {
    const Config *c = &m->config;
    embed_rows(m, s, tokens, n, "forward");
    for (int l = 0; l < c->n_layers; l++) {
        layer_qkv(m, s, l, n, pos);
        // In position order, token t attends over everything cached before it and its own K/V,
        // then appends its K/V (docs/DESIGN.md §3.3); the cache chunks fixed before the batch
        // are read once for all n.
        AttnRows rows = layer_attn_rows(c, s, n);
        attention_layer(cache, l, &rows, m->attention);
        layer_out_ffn(m, s, l, n, s->att_out);
    }
    // Only the rows whose logits are wanted go through the final norm and the classifier
    // (the classifier is the largest matrix of a small model).
    int first = all_logits ? 0 : n - 1, rows = n - first;
    return head_logits(m, s, s->x + (size_t)first * c->dim, rows);
}

float *forward_rows(const Model *m, RunState *s, KVCache **caches, const int *tokens, const int64_t *pos, int n) {
    const Config *c = &m->config;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    embed_rows(m, s, tokens, n, "forward_rows");
    // A row's RoPE position must be where its token lands in its cache, and two rows sharing
    // a cache would interleave their appends: both are caller bugs that would go unnoticed.
    for (int t = 0; t < n; t++) {
        if (kvcache_len(caches[t], 0) != pos[t])
            fatal("forward_rows: row %d at position %lld, its cache holds %lld tokens", t, (long long)pos[t],
                  (long long)kvcache_len(caches[t], 0));
        for (int u = 0; u < t; u++)
            if (caches[u] == caches[t]) fatal("forward_rows: rows %d and %d share a cache", u, t);
    }
    for (int l = 0; l < c->n_layers; l++) {
        qkv_project(m, s, l, n);
        for (int t = 0; t < n; t++) {
            rope_row(c, s, t, pos[t]);
            AttnRows row = { s->q + t * qd, s->k + t * kvd, s->v + t * kvd, s->att_out + t * qd, 1, c->n_heads };
            attention_layer(caches[t], l, &row, m->attention);
        }
        layer_out_ffn(m, s, l, n, s->att_out);
    }
    return head_logits(m, s, s->x, n);
}
