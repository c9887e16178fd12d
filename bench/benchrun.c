// benchrun.c: see benchrun.h.
#include "benchrun.h"
#include "../model/eval.h"
#include "../quant/kvconfig.h"
#include "../util/util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void bench_spec(KVSpec *s, const Config *c, const char *kv, const char *preset) {
    KVOptions o;
    kvoptions_init(&o);
    o.spec = kv;
    o.preset = preset;
    build_kvspec_from_options(s, &o, c);
}

void bench_prefill(const Model *m, RunState *s, KVCache *c, const int *ids, int n, int64_t pos, float *last) {
    if (n <= 0) fatal("bench: empty prefill");
    float *lg = NULL;
    for (int i = 0; i < n; i += BENCH_BATCH) {
        int nb = n - i < BENCH_BATCH ? n - i : BENCH_BATCH;
        lg = forward(m, s, c, ids + i, nb, pos + i, 0);
    }
    memcpy(last, lg, (size_t)m->config.vocab_size * sizeof(float));
}

double bench_score(const Model *m, RunState *s, KVCache *c, const float *last, const int *ids, int n, int64_t pos,
                   int *all_top1) {
    int V = m->config.vocab_size;
    double sum = (double)last[ids[0]] - eval_logsumexp(last, V);
    *all_top1 = eval_argmax(last, V) == ids[0];
    // ids[0..n-1) go through the model; row t of their logits predicts ids[t + 1].
    for (int i = 0; i < n - 1; i += BENCH_BATCH) {
        int nb = n - 1 - i < BENCH_BATCH ? n - 1 - i : BENCH_BATCH;
        float *lg = forward(m, s, c, ids + i, nb, pos + i, 1);
        for (int t = 0; t < nb; t++) {
            const float *row = lg + (size_t)t * V;
            sum += (double)row[ids[i + t + 1]] - eval_logsumexp(row, V);
            *all_top1 &= eval_argmax(row, V) == ids[i + t + 1];
        }
    }
    return sum;
}

// The bookkeeping of one greedy step, shared by bench_greedy and bench_greedy_step: the
// sequence has chosen id as its n-th token (counting from 1) and would run it at position
// pos. Appends id's bytes to out (length *len). Returns 1 if id must run through the model
// (the sequence goes on), 0 if the sequence stops here.
static int greedy_accept(const Tokenizer *t, int id, int n, int max_new, int64_t pos, const KVCache *c,
                         int (*stop)(const char *), char *out, int out_size, int *len) {
    if (id == t->eos_id || id == t->eot_id) return 0;
    for (int i = 0; i < t->token_len[id] && *len < out_size - 1; i++) out[(*len)++] = t->token[id][i];
    out[*len] = 0;
    return !((stop && stop(out)) || n == max_new || pos >= kvcache_max_tokens(c));
}

int bench_greedy(const Model *m, RunState *s, KVCache *c, const float *last, int64_t pos, int max_new,
                 int (*stop)(const char *), char *out, int out_size) {
    int V = m->config.vocab_size, len = 0, n = 0;
    out[0] = 0;
    int id = eval_argmax(last, V);
    while (n < max_new) {
        n++;
        if (!greedy_accept(&m->tokenizer, id, n, max_new, pos, c, stop, out, out_size, &len)) break;
        float *lg = forward(m, s, c, &id, 1, pos++, 0);
        id = eval_argmax(lg, V);
    }
    return n;
}

void bench_greedy_start(GreedySeq *g, const Model *m, KVCache *c, const float *last, int64_t pos, int max_new,
                        int (*stop)(const char *), char *out, int out_size) {
    *g = (GreedySeq){c, pos, eval_argmax(last, m->config.vocab_size), 0, 0, max_new > 0, max_new, stop, out, out_size};
    out[0] = 0;
}

int bench_greedy_step(const Model *m, RunState *s, GreedySeq *g, int n) {
    int V = m->config.vocab_size, rows = 0, *seq = xmalloc((size_t)n * sizeof(int)), *tok = xmalloc((size_t)n * sizeof(int));
    int64_t *pos = xmalloc((size_t)n * sizeof(int64_t));
    KVCache **caches = xmalloc((size_t)n * sizeof(KVCache *));
    // first each running sequence takes its chosen token, as one pass of bench_greedy's loop;
    // those that go on run it through the model together, one row each
    for (int i = 0; i < n; i++) {
        if (!g[i].live) continue;
        g[i].n++;
        g[i].live = greedy_accept(&m->tokenizer, g[i].id, g[i].n, g[i].max_new, g[i].pos, g[i].cache, g[i].stop, g[i].out,
                                  g[i].out_size, &g[i].len);
        if (!g[i].live) continue;
        seq[rows] = i; tok[rows] = g[i].id; pos[rows] = g[i].pos; caches[rows] = g[i].cache;
        rows++;
    }
    if (rows > s->max_batch) fatal("bench_greedy_step: %d sequences, at most %d", rows, s->max_batch);
    if (rows) {
        const float *lg = forward_rows(m, s, caches, tok, pos, rows);
        for (int r = 0; r < rows; r++) {
            g[seq[r]].pos++;
            g[seq[r]].id = eval_argmax(lg + (size_t)r * V, V);
        }
    }
    free(seq); free(tok); free(pos); free(caches);
    return rows;
}

void bench_put_field(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\n') fputs("\\n", f);
        else if (*s == '\t') fputs("\\t", f);
        else fputc(*s, f);
    }
}

char **split_list(const char *s, int *n) {
    char *copy = xstrdup(s), *save = NULL;
    char **v = NULL;
    *n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        v = xrealloc(v, (size_t)(*n + 1) * sizeof(char *));
        v[(*n)++] = xstrdup(tok);
    }
    free(copy);
    return v;
}

void free_list(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
