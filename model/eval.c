// eval.c: teacher-forced evaluation (eval.h, docs/DESIGN.md §5). All sums in double: KL values of
// a good 8-bit cache are ~1e-4 nats and must not drown in fp32 rounding over 49k-128k terms.
#include "eval.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int eval_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

double eval_logsumexp(const float *x, int n) {
    float mx = x[eval_argmax(x, n)];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

void eval_log_softmax(float *logp, const float *x, int n) {
    double lse = eval_logsumexp(x, n);
    for (int i = 0; i < n; i++) logp[i] = (float)((double)x[i] - lse);
}

double eval_kl(const float *logp, const float *logits_q, int n) {
    double lse_q = eval_logsumexp(logits_q, n), kl = 0.0;
    for (int i = 0; i < n; i++) {
        float lq = (float)((double)logits_q[i] - lse_q);   // rounded like eval_log_softmax
        kl += exp((double)logp[i]) * ((double)logp[i] - (double)lq);
    }
    return kl > 0.0 ? kl : 0.0;   // >= 0 in exact arithmetic; clamp rounding noise
}

void eval_score_position(EvalStats *st, const float *base_logp, const float *kv_logits, int n, int target) {
    double kl = eval_kl(base_logp, kv_logits, n);
    float lq_target = (float)((double)kv_logits[target] - eval_logsumexp(kv_logits, n));
    st->nll_base += -(double)base_logp[target];
    st->nll_kv += -(double)lq_target;
    st->kl += kl;
    st->top1 += eval_argmax(base_logp, n) == eval_argmax(kv_logits, n);
    if (st->kl_at) st->kl_at[st->n] = (float)kl;
    if (st->n == 0 || kl > st->kl_max) { st->kl_max = kl; st->kl_max_pos = st->n; }
    st->n++;
}

int eval_wants_bos(const Tokenizer *t) { return t->pretok == PRETOK_LLAMA3 && t->bos_id >= 0; }

static void progress_line(int progress, const char *what, int64_t done, int64_t total) {
    if (!progress) return;
    fprintf(stderr, "\r%s: %lld/%lld tokens", what, (long long)done, (long long)total);
    if (done >= total) fprintf(stderr, "\n");
    fflush(stderr);
}

static void build_fp16_spec(KVSpec *s, const Config *c) {
    build_kvspec_uniform(s, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
}

// Positions 0..n-2 are run (the last token predicts nothing that is scored), in batches.
#define FOR_EACH_BATCH(i, nb, n, batch) \
    for (int i = 0, nb; i < (n) - 1 && ((nb = ((n) - 1 - i < (batch) ? (n) - 1 - i : (batch))), 1); i += nb)

void eval_ppl(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, int progress, EvalStats *st) {
    const Config *c = &m->config;
    memset(st, 0, sizeof *st);
    KVCache *cache = build_kvcache(spec, n);
    RunState s;
    build_runstate(&s, c, batch, n);
    FOR_EACH_BATCH(i, nb, n, batch) {
        float *lg = forward(m, &s, cache, ids + i, nb, i, 1);
        for (int t = 0; t < nb; t++) {
            const float *row = lg + (size_t)t * c->vocab_size;
            st->nll_kv += eval_logsumexp(row, c->vocab_size) - row[ids[i + t + 1]];
            st->n++;
        }
        progress_line(progress, "ppl", i + nb + 1, n);
    }
    st->kv_bits_per_elem = kvcache_memory(cache, -1).bits_per_elem;
    free_runstate(&s);
    free_kvcache(cache);
}

void eval_compare(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, int progress, EvalStats *st) {
    const Config *c = &m->config;
    size_t V = (size_t)c->vocab_size;
    memset(st, 0, sizeof *st);
    st->kl_at = xcalloc((size_t)n, sizeof(float));
    KVSpec base;
    build_fp16_spec(&base, c);
    KVCache *cb = build_kvcache(&base, n), *ck = build_kvcache(spec, n);
    RunState s;
    build_runstate(&s, c, batch, n);
    float *lb = xmalloc((size_t)batch * V * sizeof(float));
    FOR_EACH_BATCH(i, nb, n, batch) {   // lockstep: the same batch through both caches
        float *lg = forward(m, &s, cb, ids + i, nb, i, 1);
        for (int t = 0; t < nb; t++) eval_log_softmax(lb + t * V, lg + t * V, (int)V);
        float *lk = forward(m, &s, ck, ids + i, nb, i, 1);
        for (int t = 0; t < nb; t++) eval_score_position(st, lb + t * V, lk + t * V, (int)V, ids[i + t + 1]);
        progress_line(progress, "compare", i + nb + 1, n);
    }
    st->kv_bits_per_elem = kvcache_memory(ck, -1).bits_per_elem;
    free(lb);
    free_runstate(&s);
    free_kvcache(cb);
    free_kvcache(ck);
    free_kvspec(&base);
}

void eval_base_logprobs(const Model *m, const int *ids, int n, int batch, float *logp) {
    const Config *c = &m->config;
    size_t V = (size_t)c->vocab_size;
    KVSpec base;
    build_fp16_spec(&base, c);
    KVCache *cb = build_kvcache(&base, n);
    RunState s;
    build_runstate(&s, c, batch, n);
    FOR_EACH_BATCH(i, nb, n, batch) {
        float *lg = forward(m, &s, cb, ids + i, nb, i, 1);
        for (int t = 0; t < nb; t++) eval_log_softmax(logp + (size_t)(i + t) * V, lg + t * V, (int)V);
    }
    free_runstate(&s);
    free_kvcache(cb);
    free_kvspec(&base);
}

void eval_against(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, const float *base_logp,
                  EvalStats *st) {
    const Config *c = &m->config;
    size_t V = (size_t)c->vocab_size;
    memset(st, 0, sizeof *st);
    KVCache *ck = build_kvcache(spec, n);
    RunState s;
    build_runstate(&s, c, batch, n);
    FOR_EACH_BATCH(i, nb, n, batch) {
        float *lk = forward(m, &s, ck, ids + i, nb, i, 1);
        for (int t = 0; t < nb; t++)
            eval_score_position(st, base_logp + (size_t)(i + t) * V, lk + t * V, (int)V, ids[i + t + 1]);
    }
    st->kv_bits_per_elem = kvcache_memory(ck, -1).bits_per_elem;
    free_runstate(&s);
    free_kvcache(ck);
}

void eval_layer_kl(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, int progress, double *kl) {
    const Config *c = &m->config;
    float *base = xmalloc((size_t)(n - 1) * c->vocab_size * sizeof(float));
    eval_base_logprobs(m, ids, n, batch, base);
    KVSpec one = *spec;                       // same grouping flags, its own bits table
    size_t nb = (size_t)c->n_layers * c->n_kv_heads;
    one.bits = xmalloc(nb * sizeof(KVBits));
    for (int l = 0; l < c->n_layers; l++) {
        for (size_t j = 0; j < nb; j++) one.bits[j] = (KVBits){16, 16};
        memcpy(one.bits + (size_t)l * c->n_kv_heads, spec->bits + (size_t)l * c->n_kv_heads,
               (size_t)c->n_kv_heads * sizeof(KVBits));
        EvalStats st;
        eval_against(m, &one, ids, n, batch, base, &st);
        kl[l] = st.kl / st.n;
        if (progress) { fprintf(stderr, "\rper-layer: %d/%d layers", l + 1, c->n_layers); fflush(stderr); }
    }
    if (progress) fprintf(stderr, "\n");
    free(one.bits);
    free(base);
}

// Print a token's bytes with control characters escaped.
static void print_token(const Tokenizer *t, int id) {
    putchar('\'');
    for (int i = 0; i < t->token_len[id]; i++) {
        unsigned char ch = (unsigned char)t->token[id][i];
        if (ch == '\n') fputs("\\n", stdout);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    putchar('\'');
}

typedef struct { float kl; int64_t pos; } PosKL;
static int cmp_kl_desc(const void *a, const void *b) {
    float x = ((const PosKL *)a)->kl, y = ((const PosKL *)b)->kl;
    return x > y ? -1 : x < y ? 1 : 0;
}

void eval_print_worst(const Tokenizer *t, const int *ids, const EvalStats *st, int k) {
    if (!st->kl_at || st->n == 0) return;
    PosKL *all = xmalloc((size_t)st->n * sizeof(PosKL));
    for (int64_t p = 0; p < st->n; p++) all[p] = (PosKL){st->kl_at[p], p};
    qsort(all, (size_t)st->n, sizeof *all, cmp_kl_desc);
    printf("worst positions (KL, the token there -> the true next token):\n");
    for (int64_t r = 0; r < st->n && r < k; r++) {
        printf("  position %lld: KL %.5f  ", (long long)all[r].pos, all[r].kl);
        print_token(t, ids[all[r].pos]);
        fputs(" -> ", stdout);
        print_token(t, ids[all[r].pos + 1]);
        putchar('\n');
    }
    free(all);
}

void free_evalstats(EvalStats *st) {
    free(st->kl_at);
    st->kl_at = NULL;
}
