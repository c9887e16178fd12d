// tune_forward.c: the forward pass cut into pieces the tuner needs (tune.h). It runs the
// layer steps of model/forward.c (model.h) in the same order, so that running a layer's
// unchanged attention output through tune_tail_kl reproduces the fp16 logits bit for bit
// (tests/test_tune.c checks KL == 0 there), but the sequence is processed layer by layer
// (all n tokens through layer l before layer l+1) so each layer's input can be recorded and
// a run can start at any layer from the recorded hidden states, which makes the
// sensitivity runs (one per layer and pair) cost a tail of the model each, not the whole.
#include "tune.h"
#include "../kernels/kernels.h"
#include "../model/eval.h"
#include "../util/util.h"

#include <stdlib.h>
#include <string.h>

static size_t qdim(const Config *c) { return (size_t)c->n_heads * c->head_dim; }
static size_t kvdim(const Config *c) { return (size_t)c->n_kv_heads * c->head_dim; }

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
        layer_qkv(m, s, (int)l, n, 0);
        memcpy(r->q + l * N * qdim(c), s->q, N * qdim(c) * sizeof(float));
        memcpy(r->k + l * N * kvdim(c), s->k, N * kvdim(c) * sizeof(float));
        memcpy(r->v + l * N * kvdim(c), s->v, N * kvdim(c) * sizeof(float));
        AttnRows rows = layer_attn_rows(c, s, n);
        attention_layer(cache, (int)l, &rows, m->attention);
        layer_out_ffn(m, s, (int)l, n, s->att_out);
    }
    float *lg = head_logits(m, s, s->x, n - 1);
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
                          float *out) {
    const Config *c = &m->config;
    size_t N = (size_t)r->n;
    KVSpec one = *grouping;          // the grouping fields; one layer, its own bits table
    one.n_layers = 1;
    one.rotate = grouping->rotate ? grouping->rotate + l : NULL;   // layer l's choice, as layer 0
    one.bits = xmalloc((size_t)c->n_kv_heads * sizeof(KVBits));
    for (int h = 0; h < c->n_kv_heads; h++) one.bits[h] = bits;
    KVCache *cache = build_kvcache(&one, r->n);
    AttnRows rows = { r->q + (size_t)l * N * qdim(c), r->k + (size_t)l * N * kvdim(c), r->v + (size_t)l * N * kvdim(c),
                      out, r->n, c->n_heads };
    attention_layer(cache, 0, &rows, m->attention);
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
        layer_qkv(m, s, j, n, 0);
        AttnRows rows = layer_attn_rows(c, s, n);
        attention_layer(c16, j, &rows, m->attention);
        layer_out_ffn(m, s, j, n, s->att_out);
    }
    // only the scored rows go through the classifier: gather positions 0, stride, 2*stride, ...
    int rows = (n - 2) / stride + 1;
    for (int i = 1; i < rows; i++)
        memmove(s->x + (size_t)i * c->dim, s->x + (size_t)i * stride * c->dim, (size_t)c->dim * sizeof(float));
    float *lg = head_logits(m, s, s->x, rows);
    double kl = 0.0;
    #pragma omp parallel for schedule(static) reduction(+:kl)
    for (int i = 0; i < rows; i++) kl += eval_kl(r->logp + (size_t)i * stride * V, lg + (size_t)i * V, (int)V);
    return kl / rows;
}
