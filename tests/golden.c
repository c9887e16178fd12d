// golden.c: see golden.h. The text format is whitespace-separated keywords and numbers,
// '#' lines are comments (tests/golden/README.md).
#include "golden.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- a tiny cursor over the text file ------------------------------------------------
typedef struct { const char *path; char *p; } Cursor;

static void skip_space_and_comments(Cursor *c) {
    for (;;) {
        while (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r') c->p++;
        if (*c->p != '#') return;
        while (*c->p && *c->p != '\n') c->p++;
    }
}

static void expect_word(Cursor *c, const char *word) {
    skip_space_and_comments(c);
    size_t n = strlen(word);
    if (strncmp(c->p, word, n) != 0 || (c->p[n] != ' ' && c->p[n] != '\n'))
        fatal("%s: expected \"%s\" near \"%.20s\"", c->path, word, c->p);
    c->p += n;
}

static long read_long(Cursor *c) {
    skip_space_and_comments(c);
    char *end;
    long v = strtol(c->p, &end, 10);
    if (end == c->p) fatal("%s: expected an integer near \"%.20s\"", c->path, c->p);
    c->p = end;
    return v;
}

static float read_float(Cursor *c) {
    skip_space_and_comments(c);
    char *end;
    float v = strtof(c->p, &end);
    if (end == c->p) fatal("%s: expected a number near \"%.20s\"", c->path, c->p);
    c->p = end;
    return v;
}

static int read_count(Cursor *c, const char *word, long max) {
    expect_word(c, word);
    long n = read_long(c);
    if (n < 0 || n > max) fatal("%s: %s count %ld out of range", c->path, word, n);
    return (int)n;
}

// ---- reading ---------------------------------------------------------------------------
int golden_index(const char *dir, char ***names) {
    char path[512];
    snprintf(path, sizeof path, "%s/index.txt", dir);
    char *text = read_file(path, NULL);
    int n = 0;
    *names = NULL;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!line[0] || line[0] == '#') continue;
        *names = xrealloc(*names, (size_t)(n + 1) * sizeof(char *));
        (*names)[n++] = xstrdup(line);
    }
    free(text);
    return n;
}

void read_golden_case(GoldenCase *g, const char *dir, const char *name, const char *variant) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.prompt", dir, name);
    g->prompt = read_file(path, &g->prompt_len);

    if (variant) snprintf(path, sizeof path, "%s/%s.%s.txt", dir, name, variant);
    else snprintf(path, sizeof path, "%s/%s.txt", dir, name);
    Cursor c = { path, read_file(path, NULL) };
    char *text = c.p;
    g->n_prompt = read_count(&c, "prompt_ids", 1 << 20);
    g->prompt_ids = xmalloc((size_t)g->n_prompt * sizeof(int) + 1);
    for (int i = 0; i < g->n_prompt; i++) g->prompt_ids[i] = (int)read_long(&c);
    g->n_gen = read_count(&c, "gen_ids", 1 << 20);
    g->gen_ids = xmalloc((size_t)g->n_gen * sizeof(int) + 1);
    for (int i = 0; i < g->n_gen; i++) g->gen_ids[i] = (int)read_long(&c);
    if (read_count(&c, "gen_margin", 1 << 20) != g->n_gen) fatal("%s: gen_margin count != gen_ids count", path);
    g->gen_margin = xmalloc((size_t)g->n_gen * sizeof(float) + 1);
    for (int i = 0; i < g->n_gen; i++) g->gen_margin[i] = read_float(&c);
    if (read_count(&c, "topk", 1 << 20) != g->n_prompt) fatal("%s: topk rows != prompt length", path);
    g->topk = (int)read_long(&c);
    if (g->topk < 1 || g->topk > 1000) fatal("%s: topk %d out of range", path, g->topk);
    size_t nt = (size_t)g->n_prompt * g->topk;
    g->top_ids = xmalloc(nt * sizeof(int));
    g->top_logits = xmalloc(nt * sizeof(float));
    for (int p = 0; p < g->n_prompt; p++) {
        if (read_long(&c) != p) fatal("%s: topk row %d out of order", path, p);
        for (int k = 0; k < g->topk; k++) {
            g->top_ids[(size_t)p * g->topk + k] = (int)read_long(&c);
            g->top_logits[(size_t)p * g->topk + k] = read_float(&c);
        }
    }
    free(text);

    if (variant) return;   // variants carry no full logits
    // NAME.logits: float32 little-endian (this code assumes a little-endian host, as does model.bin)
    size_t len;
    snprintf(path, sizeof path, "%s/%s.logits", dir, name);
    char *raw = read_file(path, &len);
    if (len == 0 || len % 4) fatal("%s: size %zu is not a whole number of float32", path, len);
    g->vocab = (int)(len / 4);
    g->last_logits = xmalloc(len);
    memcpy(g->last_logits, raw, len);
    free(raw);
}

void free_golden_case(GoldenCase *g) {
    free(g->prompt); free(g->prompt_ids); free(g->gen_ids); free(g->gen_margin);
    free(g->top_ids); free(g->top_logits); free(g->last_logits);
    memset(g, 0, sizeof *g);
}

// ---- running the C model against a case -------------------------------------------------
static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

// |a - b| that turns a NaN into +inf, so that a NaN logit fails every bound.
static double absdiff(float a, float b) {
    double d = fabs((double)a - (double)b);
    return d == d ? d : INFINITY;
}

void golden_generate(const Model *m, const int *prompt, int n_prompt, int n_gen, GoldenRun *out) {
    const Config *c = &m->config;
    const size_t V = (size_t)c->vocab_size;
    int64_t max_tokens = (int64_t)n_prompt + n_gen + 1;
    KVSpec spec;
    build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);   // fp16 baseline
    KVCache *kv = build_kvcache(&spec, max_tokens);
    free_kvspec(&spec);
    RunState s;
    build_runstate(&s, c, n_prompt, max_tokens);

    out->n_prompt = n_prompt;
    out->n_gen = n_gen;
    out->vocab = c->vocab_size;
    out->prompt_logits = xmalloc((size_t)n_prompt * V * sizeof(float));
    out->gen = xmalloc((size_t)n_gen * sizeof(int) + 1);
    memcpy(out->prompt_logits, forward(m, &s, kv, prompt, n_prompt, 0, 1), (size_t)n_prompt * V * sizeof(float));
    int next = argmax(out->prompt_logits + (size_t)(n_prompt - 1) * V, c->vocab_size);
    for (int i = 0; i < n_gen; i++) {       // greedy, on the model's own tokens
        out->gen[i] = next;
        if (i + 1 < n_gen) next = argmax(forward(m, &s, kv, &next, 1, (int64_t)n_prompt + i, 0), c->vocab_size);
    }
    free_runstate(&s);
    free_kvcache(kv);
}

void free_golden_run(GoldenRun *r) {
    free(r->prompt_logits);
    free(r->gen);
    memset(r, 0, sizeof *r);
}

GoldenResult golden_compare(const GoldenCase *g, const GoldenRun *run) {
    GoldenResult r = { 0, 0, 0, 0, 0, -1 };
    const size_t V = (size_t)run->vocab;
    if (run->n_prompt != g->n_prompt) fatal("%s: run over %d prompt ids, golden has %d", g->name, run->n_prompt, g->n_prompt);
    if (g->last_logits && g->vocab != run->vocab) fatal("%s: golden vocab %d != model vocab %d", g->name, g->vocab, run->vocab);
    for (int p = 0; p < g->n_prompt; p++) {
        const float *row = run->prompt_logits + (size_t)p * V;
        const int *ids = g->top_ids + (size_t)p * g->topk;
        const float *want = g->top_logits + (size_t)p * g->topk;
        for (int k = 0; k < g->topk; k++) {
            if (ids[k] < 0 || ids[k] >= run->vocab) fatal("%s: golden id %d outside the vocabulary", g->name, ids[k]);
            double d = absdiff(row[ids[k]], want[k]);
            if (!(d <= r.max_topk)) r.max_topk = d;
            if (p == 0 && !(d <= r.max_pos0)) r.max_pos0 = d;
        }
        r.top1_agree += argmax(row, run->vocab) == ids[0];
    }
    const float *last = run->prompt_logits + (size_t)(g->n_prompt - 1) * V;
    if (!g->last_logits) r.max_last = -1;
    for (size_t i = 0; g->last_logits && i < V; i++) {
        double d = absdiff(last[i], g->last_logits[i]);
        if (!(d <= r.max_last)) r.max_last = d;
    }
    for (int i = 0; i < g->n_gen && r.first_diff < 0; i++) {
        if (i < run->n_gen && run->gen[i] == g->gen_ids[i]) r.gen_agree++;
        else r.first_diff = i;
    }
    return r;
}

GoldenResult golden_run(const Model *m, const GoldenCase *g) {
    GoldenRun run;
    golden_generate(m, g->prompt_ids, g->n_prompt, g->n_gen, &run);
    GoldenResult r = golden_compare(g, &run);
    free_golden_run(&run);
    return r;
}
