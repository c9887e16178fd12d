// tune_forward.c: the forward pass cut into pieces the tuner needs (tune.h). The same
// kernels and the same order of operations as model/forward.c, so that running a layer's
// unchanged attention output through tune_tail_kl reproduces the fp16 logits bit for bit
// (tests/test_tune.c checks KL == 0 there), but the sequence is processed layer by layer
// (all n tokens through layer l before layer l+1) so each layer's input can be recorded and
// a run can start at any layer from the recorded hidden states (issue 7, "Performance").
#include "tune.h"
#include "../kernels/kernels.h"
#include "../model/eval.h"
#include "../util/util.h"

#include <stdlib.h>
#include <string.h>

static size_t qdim(const Config *c) { return (size_t)c->n_heads * c->head_dim; }
static size_t kvdim(const Config *c) { return (size_t)c->n_kv_heads * c->head_dim; }

// matmul over n tokens in chunks of MM_CHUNK: a chunk of activations stays in cache while
// each block of weight rows is reused over it (the kernel's results do not depend on the
// batch, so chunking changes no bit).
#define MM_CHUNK 64
static void matmul_chunked(float *out, const float *x, const void *w, DType wt, int n, int k, int d) {
    for (int t = 0; t < n; t += MM_CHUNK) {
        int nb = n - t < MM_CHUNK ? n - t : MM_CHUNK;
        matmul(out + (size_t)t * d, x + (size_t)t * k, w, wt, nb, k, d);
    }
}

static void add_inplace(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

// Norm, Q/K/V projections and RoPE of n tokens at positions 0..n-1: s->q, s->k, s->v.
static void layer_qkv(const Model *m, RunState *s, int l, int n) {
    const Config *c = &m->config;
    const LayerWeights *w = &m->weights.layers[l];
    rmsnorm(s->xb, s->x, w->attn_norm, n, c->dim, c->norm_eps);
    matmul_chunked(s->q, s->xb, w->wq, c->wdtype, n, c->dim, (int)qdim(c));
    matmul_chunked(s->k, s->xb, w->wk, c->wdtype, n, c->dim, (int)kvdim(c));
    matmul_chunked(s->v, s->xb, w->wv, c->wdtype, n, c->dim, (int)kvdim(c));
    for (int t = 0; t < n; t++) {
        rope(s->q + (size_t)t * qdim(c), c->n_heads, c->head_dim, t, s->rope_freqs);
        rope(s->k + (size_t)t * kvdim(c), c->n_kv_heads, c->head_dim, t, s->rope_freqs);
    }
}

// Position by position: append token t to the cache, then attend (as decoding would).
static void attend(KVCache *cache, int cl, const float *q, const float *k, const float *v, int n, int n_heads,
                   size_t qd, size_t kvd, float *att, float *out) {
    for (int t = 0; t < n; t++) {
        kvcache_append(cache, cl, k + (size_t)t * kvd, v + (size_t)t * kvd);
        kvcache_attention(cache, cl, q + (size_t)t * qd, n_heads, out + (size_t)t * qd, att);
    }
}

// Output projection of att_out, residual, and the SwiGLU block: updates s->x.
static void layer_out_ffn(const Model *m, RunState *s, int l, int n, const float *att_out) {
    const Config *c = &m->config;
    const LayerWeights *w = &m->weights.layers[l];
    matmul_chunked(s->xb2, att_out, w->wo, c->wdtype, n, (int)qdim(c), c->dim);
    add_inplace(s->x, s->xb2, (size_t)n * c->dim);
    rmsnorm(s->xb, s->x, w->ffn_norm, n, c->dim, c->norm_eps);
    matmul_chunked(s->hb, s->xb, w->w_gate, c->wdtype, n, c->dim, c->hidden_dim);
    matmul_chunked(s->hb2, s->xb, w->w_up, c->wdtype, n, c->dim, c->hidden_dim);
    swiglu(s->hb, s->hb, s->hb2, n * c->hidden_dim);
    matmul_chunked(s->xb2, s->hb, w->w_down, c->wdtype, n, c->hidden_dim, c->dim);
    add_inplace(s->x, s->xb2, (size_t)n * c->dim);
}

// Final norm and classifier over the first n rows: s->logits [n][vocab].
static float *head_logits(const Model *m, RunState *s, int n) {
    const Config *c = &m->config;
    rmsnorm(s->xb, s->x, m->weights.final_norm, n, c->dim, c->norm_eps);
    matmul_chunked(s->logits, s->xb, m->weights.classifier, c->wdtype, n, c->dim, c->vocab_size);
    return s->logits;
}

void tune_record(const Model *m, RunState *s, const int *ids, int n, TuneRecord *r) {
    const Config *c = &m->config;
    size_t L = (size_t)c->n_layers, N = (size_t)n, V = (size_t)c->vocab_size;
    if (n > s->max_batch) fatal("tune_record: %d tokens, state holds %d", n, s->max_batch);
    r->n = n;
    r->x = xmalloc(L * N * c->dim * sizeof(float));
    r->q = xmalloc(L * N * qdim(c) * sizeof(float));
    r->k = xmalloc(L * N * kvdim(c) * sizeof(float));
    r->v = xmalloc(L * N * kvdim(c) * sizeof(float));
    r->logp = xmalloc((N - 1) * V * sizeof(float));
    KVSpec sp;
    build_kvspec_uniform(&sp, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
    KVCache *cache = build_kvcache(&sp, n);
    for (int t = 0; t < n; t++) embed(s->x + (size_t)t * c->dim, m->weights.token_embedding, c->wdtype, c->dim, ids[t]);
    for (size_t l = 0; l < L; l++) {
        memcpy(r->x + l * N * c->dim, s->x, N * c->dim * sizeof(float));
        layer_qkv(m, s, (int)l, n);
        memcpy(r->q + l * N * qdim(c), s->q, N * qdim(c) * sizeof(float));
        memcpy(r->k + l * N * kvdim(c), s->k, N * kvdim(c) * sizeof(float));
        memcpy(r->v + l * N * kvdim(c), s->v, N * kvdim(c) * sizeof(float));
        attend(cache, (int)l, s->q, s->k, s->v, n, c->n_heads, qdim(c), kvdim(c), s->att, s->att_out);
        layer_out_ffn(m, s, (int)l, n, s->att_out);
    }
    float *lg = head_logits(m, s, n - 1);
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n - 1; t++) eval_log_softmax(r->logp + (size_t)t * V, lg + (size_t)t * V, (int)V);
    free_kvcache(cache);
    free_kvspec(&sp);
}

void free_tunerecord(TuneRecord *r) {
    free(r->x); free(r->q); free(r->k); free(r->v); free(r->logp);
    memset(r, 0, sizeof *r);
}

void tune_layer_attention(const Model *m, const KVSpec *grouping, KVBits bits, const TuneRecord *r, int l,
                          float *att, float *out) {
    const Config *c = &m->config;
    size_t N = (size_t)r->n;
    KVSpec one = *grouping;          // the grouping fields; one layer, its own bits table
    one.n_layers = 1;
    one.bits = xmalloc((size_t)c->n_kv_heads * sizeof(KVBits));
    for (int h = 0; h < c->n_kv_heads; h++) one.bits[h] = bits;
    KVCache *cache = build_kvcache(&one, r->n);
    attend(cache, 0, r->q + (size_t)l * N * qdim(c), r->k + (size_t)l * N * kvdim(c), r->v + (size_t)l * N * kvdim(c),
           r->n, c->n_heads, qdim(c), kvdim(c), att, out);
    free_kvcache(cache);
    free(one.bits);
}

double tune_tail_kl(const Model *m, RunState *s, KVCache *c16, const TuneRecord *r, int l, const float *att_out,
                    int stride) {
    const Config *c = &m->config;
    size_t N = (size_t)r->n, V = (size_t)c->vocab_size;
    int n = r->n;
    kvcache_reset(c16);
    memcpy(s->x, r->x + (size_t)l * N * c->dim, N * c->dim * sizeof(float));
    layer_out_ffn(m, s, l, n, att_out);
    for (int j = l + 1; j < c->n_layers; j++) {
        layer_qkv(m, s, j, n);
        attend(c16, j, s->q, s->k, s->v, n, c->n_heads, qdim(c), kvdim(c), s->att, s->att_out);
        layer_out_ffn(m, s, j, n, s->att_out);
    }
    // only the scored rows go through the classifier: gather positions 0, stride, 2*stride, ...
    int rows = (n - 2) / stride + 1;
    for (int i = 1; i < rows; i++)
        memmove(s->x + (size_t)i * c->dim, s->x + (size_t)i * stride * c->dim, (size_t)c->dim * sizeof(float));
    float *lg = head_logits(m, s, rows);
    double kl = 0.0;
    #pragma omp parallel for schedule(static) reduction(+:kl)
    for (int i = 0; i < rows; i++) kl += eval_kl(r->logp + (size_t)i * stride * V, lg + (size_t)i * V, (int)V);
    return kl / rows;
}
