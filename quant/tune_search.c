// tune_search.c: candidate pairs, the sensitivity table, intra-layer Pareto pruning, the
// group search space and the exact (dynamic-programming) Pareto front of (bits, error).
// KVTuner, arXiv 2502.04420 §4; docs/DESIGN.md §6 steps 3 and 5.
#include "tuner.h"
#include "../util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const TuneOption TUNE_OPTIONS[TUNE_NPAIRS] = {
    {2, 2, "KV2"}, {2, 4, "K2V4"}, {2, 8, "K2V8"}, {4, 2, "K4V2"}, {4, 4, "KV4"},
    {4, 8, "K4V8"}, {8, 2, "K8V2"}, {8, 4, "K8V4"}, {8, 8, "KV8"},
};

int tune_pair_index(int k_bits, int v_bits) {
    for (int p = 0; p < TUNE_NPAIRS; p++)
        if (TUNE_OPTIONS[p].k_bits == k_bits && TUNE_OPTIONS[p].v_bits == v_bits) return p;
    return -1;
}

const char *tune_pair_name(int p) {
    return p >= 0 && p < TUNE_NPAIRS ? TUNE_OPTIONS[p].name : "?";
}

void build_senstable(SensTable *t, int n_layers) {
    size_t n = (size_t)n_layers * TUNE_NPAIRS;
    t->n_layers = n_layers;
    t->err = xcalloc(n, sizeof(double));
    t->aux = xcalloc(n, sizeof(double));
    t->tail = xmalloc(n);
    memset(t->tail, 1, n);
}

void free_senstable(SensTable *t) {
    free(t->err); free(t->aux); free(t->tail);
    t->err = t->aux = NULL;
    t->tail = NULL;
}

// q dominates p: no more bits, no more error, better in at least one. Equal bits and equal
// error is a tie: the pair with more key bits wins (see tuner.h).
static int dominates(int q, int p, const double *err) {
    int cq = tune_cost(q), cp = tune_cost(p);
    if (cq > cp || err[q] > err[p]) return 0;
    if (cq < cp || err[q] < err[p]) return 1;
    return tune_kbits(q) > tune_kbits(p);
}

int tune_prune_pairs(const double *err, unsigned char keep[TUNE_NPAIRS]) {
    int n = 0;
    for (int p = 0; p < TUNE_NPAIRS; p++) {
        keep[p] = 1;
        for (int q = 0; q < TUNE_NPAIRS && keep[p]; q++)
            if (q != p && dominates(q, p, err)) keep[p] = 0;
        n += keep[p];
    }
    return n;
}

void tune_fill_skipped(double *err, const double *aux, const unsigned char *tail) {
    for (int p = 0; p < TUNE_NPAIRS; p++) {
        if (tail[p]) continue;
        int q = -1;                               // the nearest measured pair dominating p on aux
        for (int r = 0; r < TUNE_NPAIRS; r++)
            if (tail[r] && dominates(r, p, aux) && (q < 0 || aux[r] > aux[q])) q = r;
        if (q < 0) fatal("tune_fill_skipped: %s is not measured and no measured pair dominates it", tune_pair_name(p));
        double ratio = aux[q] > 0 ? aux[p] / aux[q] : 1.0;
        err[p] = err[q] * (ratio > 1 ? ratio * ratio : 1.0);
    }
}

void tune_combine_kinds(const SensTable *kinds, int n_kinds, SensTable *out) {
    int L = kinds[0].n_layers, kv4 = tune_pair_index(4, 4);
    double *z = xmalloc((size_t)n_kinds * sizeof(double)), zbar = 0;
    for (int k = 0; k < n_kinds; k++) {
        z[k] = 0;
        for (int l = 0; l < L; l++) z[k] += sens_err(&kinds[k], l)[kv4];
        zbar += z[k] / n_kinds;
    }
    build_senstable(out, L);
    for (int k = 0; k < n_kinds; k++) {
        double w = z[k] > 0 ? zbar / (n_kinds * z[k]) : 1.0 / n_kinds;   // (an all-zero kind: plain mean)
        for (size_t i = 0; i < (size_t)L * TUNE_NPAIRS; i++) {
            out->err[i] += w * kinds[k].err[i];
            out->aux[i] += kinds[k].aux[i] / n_kinds;
            out->tail[i] &= kinds[k].tail[i];
        }
    }
    free(z);
}

// ---- the transfer objective -----------------------------------------------------------------

double tune_worst_ratio(const double *kl, const double *ref, int n_kinds) {
    double w = 0;
    for (int k = 0; k < n_kinds; k++) {
        if (isnan(kl[k])) return NAN;
        double r = kl[k] / ref[k];
        if (r > w) w = r;
    }
    return w;
}

double tune_mean_ratio(const double *kl, const double *ref, int n_kinds) {
    double s = 0;
    for (int k = 0; k < n_kinds; k++) s += kl[k] / ref[k];
    return s / n_kinds;
}

int tune_pick(const double *kl, const int *cost, int n, const double *ref, int n_kinds) {
    int best = -1;
    double bw = 0, bm = 0;
    for (int i = 0; i < n; i++) {
        const double *row = kl + (size_t)i * n_kinds;
        double w = tune_worst_ratio(row, ref, n_kinds);
        if (isnan(w)) continue;
        double m = tune_mean_ratio(row, ref, n_kinds);
        if (best < 0 || w < bw || (w == bw && (cost[i] < cost[best] || (cost[i] == cost[best] && m < bm)))) {
            best = i; bw = w; bm = m;
        }
    }
    return best;
}

// ---- group space ---------------------------------------------------------------------------

void build_groupspace(GroupSpace *gs, const SensTable *t, const unsigned char *keep, const Clustering *c) {
    int G = c->n_groups;
    gs->n_groups = G;
    gs->n_cand = xcalloc((size_t)G, sizeof(int));
    gs->cand = xcalloc((size_t)G, sizeof *gs->cand);
    gs->gerr = xcalloc((size_t)G, sizeof *gs->gerr);
    gs->gsize = xcalloc((size_t)G, sizeof(int));
    unsigned char (*any)[TUNE_NPAIRS] = xcalloc((size_t)G, sizeof *any);
    for (int l = 0; l < t->n_layers; l++) {
        int g = c->group_of[l];
        gs->gsize[g]++;
        for (int p = 0; p < TUNE_NPAIRS; p++) {
            gs->gerr[g][p] += sens_err(t, l)[p];
            any[g][p] |= keep[(size_t)l * TUNE_NPAIRS + p];
        }
    }
    for (int g = 0; g < G; g++) {
        // Prune the union again on the summed error. Caveat: a pair pruned in every member
        // (each time by a different cheaper pair) is not offered even if the group sum would
        // keep it; the search is exact over this reduced space, as in the paper.
        double e[TUNE_NPAIRS];
        for (int p = 0; p < TUNE_NPAIRS; p++) e[p] = any[g][p] ? gs->gerr[g][p] : INFINITY;
        unsigned char k2[TUNE_NPAIRS];
        tune_prune_pairs(e, k2);
        for (int cost = 4; cost <= 16; cost++)          // cheapest first
            for (int p = 0; p < TUNE_NPAIRS; p++)
                if (any[g][p] && k2[p] && tune_cost(p) == cost) gs->cand[g][gs->n_cand[g]++] = p;
    }
    free(any);
}

void free_groupspace(GroupSpace *gs) {
    free(gs->n_cand); free(gs->cand); free(gs->gerr); free(gs->gsize);
    memset(gs, 0, sizeof *gs);
}

// ---- fronts ---------------------------------------------------------------------------------

void free_front(Front *f) {
    for (int i = 0; i < f->n; i++) free(f->pts[i].pair_of_group);
    free(f->pts);
    f->pts = NULL; f->n = 0;
}

static int total_cost_bounds(const GroupSpace *gs, int *lo, int *hi) {
    *lo = *hi = 0;
    for (int g = 0; g < gs->n_groups; g++) {
        if (gs->n_cand[g] == 0) return -1;
        *lo += gs->gsize[g] * tune_cost(gs->cand[g][0]);
        *hi += gs->gsize[g] * tune_cost(gs->cand[g][gs->n_cand[g] - 1]);
    }
    return 0;
}

// Keep, from best[w] (least error at exactly total w; INFINITY = unreachable), the totals whose
// error is strictly below every cheaper total's: that is the Pareto front.
static int front_totals(const double *best, int hi, int *sel) {
    int n = 0;
    double floor = INFINITY;
    for (int w = 0; w <= hi; w++)
        if (best[w] < floor) { floor = best[w]; sel[n++] = w; }
    return n;
}

int tune_search_dp(const GroupSpace *gs, int max_cost, Front *out) {
    out->n = 0; out->pts = NULL;
    int lo, hi, G = gs->n_groups;
    if (total_cost_bounds(gs, &lo, &hi) != 0) return -1;
    if (max_cost >= 0 && lo > max_cost) return -1;
    if (max_cost >= 0 && hi > max_cost) hi = max_cost;
    size_t W = (size_t)hi + 1;
    // best[g][w]: least error of groups 0..g-1 at total w; choice[g][w]: the candidate slot of
    // group g-1 on that optimum (for backtracking).
    double *best = xmalloc((size_t)(G + 1) * W * sizeof(double));
    signed char *choice = xmalloc((size_t)(G + 1) * W);
    for (size_t w = 0; w < W; w++) best[w] = INFINITY;
    best[0] = 0.0;
    for (int g = 0; g < G; g++) {
        double *prev = best + (size_t)g * W, *cur = prev + W;
        signed char *ch = choice + (size_t)(g + 1) * W;
        for (size_t w = 0; w < W; w++) { cur[w] = INFINITY; ch[w] = -1; }
        for (size_t w = 0; w < W; w++) {
            if (prev[w] == INFINITY) continue;
            for (int i = 0; i < gs->n_cand[g]; i++) {
                int p = gs->cand[g][i];
                size_t w2 = w + (size_t)gs->gsize[g] * (size_t)tune_cost(p);
                if (w2 >= W) break;                       // candidates are cheapest first
                double e = prev[w] + gs->gerr[g][p];
                if (e < cur[w2]) { cur[w2] = e; ch[w2] = (signed char)i; }
            }
        }
    }
    int *sel = xmalloc(W * sizeof(int));
    int n = front_totals(best + (size_t)G * W, hi, sel);
    out->pts = xcalloc((size_t)n, sizeof(FrontPoint));
    out->n = n;
    for (int k = 0; k < n; k++) {
        FrontPoint *fp = &out->pts[k];
        fp->cost = sel[k];
        fp->err = best[(size_t)G * W + (size_t)sel[k]];
        fp->pair_of_group = xmalloc((size_t)G * sizeof(int));
        size_t w = (size_t)sel[k];
        for (int g = G - 1; g >= 0; g--) {
            int p = gs->cand[g][choice[(size_t)(g + 1) * W + w]];
            fp->pair_of_group[g] = p;
            w -= (size_t)gs->gsize[g] * (size_t)tune_cost(p);
        }
    }
    free(sel); free(best); free(choice);
    return 0;
}

// One partial assignment in the m-best DP: groups 0..g-1 summing to error err, reached from
// entry `from` of total w_prev at level g-1 by candidate slot `slot` of group g-1.
typedef struct { double err; int w_prev, from, slot; } BestEntry;

// Insert e into the sorted list l[0..*n) of at most m entries (least error first; equal
// errors keep insertion order, so the result is deterministic).
static void best_insert(BestEntry *l, int *n, int m, BestEntry e) {
    int i = *n < m ? (*n)++ : m;
    if (i == m && !(e.err < l[m - 1].err)) return;
    if (i == m) i = m - 1;
    while (i > 0 && e.err < l[i - 1].err) { l[i] = l[i - 1]; i--; }
    l[i] = e;
}

int tune_search_best(const GroupSpace *gs, int max_cost, int m, Front *out) {
    out->n = 0; out->pts = NULL;
    int lo, hi, G = gs->n_groups;
    if (m < 1) return -1;
    if (total_cost_bounds(gs, &lo, &hi) != 0) return -1;
    if (max_cost >= 0 && lo > max_cost) return -1;
    if (max_cost >= 0 && hi > max_cost) hi = max_cost;
    size_t W = (size_t)hi + 1, M = (size_t)m;
    BestEntry *e = xmalloc((size_t)(G + 1) * W * M * sizeof(BestEntry));   // [level][w][m]
    int *cnt = xcalloc((size_t)(G + 1) * W, sizeof(int));
    cnt[0] = 1;
    e[0] = (BestEntry){0.0, -1, -1, -1};
    for (int g = 0; g < G; g++)
        for (size_t w = 0; w < W; w++)
            for (int r = 0; r < cnt[(size_t)g * W + w]; r++) {
                double base = e[((size_t)g * W + w) * M + (size_t)r].err;
                for (int i = 0; i < gs->n_cand[g]; i++) {
                    int p = gs->cand[g][i];
                    size_t w2 = w + (size_t)gs->gsize[g] * (size_t)tune_cost(p);
                    if (w2 >= W) break;                   // candidates are cheapest first
                    size_t at = (size_t)(g + 1) * W + w2;
                    best_insert(e + at * M, &cnt[at], m, (BestEntry){base + gs->gerr[g][p], (int)w, r, i});
                }
            }
    // the m best over every total <= hi: merge the last level's lists
    BestEntry *top = xmalloc(M * sizeof(BestEntry));
    int *top_w = xmalloc(M * sizeof(int)), n = 0;
    for (size_t w = 0; w < W; w++)
        for (int r = 0; r < cnt[(size_t)G * W + w]; r++) {
            BestEntry x = e[((size_t)G * W + w) * M + (size_t)r];
            x.w_prev = (int)w;   // (reused: the total of this final entry)
            x.from = r;
            best_insert(top, &n, m, x);
        }
    for (int k = 0; k < n; k++) top_w[k] = top[k].w_prev;
    out->pts = xcalloc((size_t)n, sizeof(FrontPoint));
    out->n = n;
    for (int k = 0; k < n; k++) {
        FrontPoint *fp = &out->pts[k];
        fp->cost = top_w[k];
        fp->err = top[k].err;
        fp->pair_of_group = xmalloc((size_t)G * sizeof(int));
        size_t w = (size_t)top_w[k];
        int r = top[k].from;
        for (int g = G; g > 0; g--) {
            const BestEntry *b = &e[((size_t)g * W + w) * M + (size_t)r];
            fp->pair_of_group[g - 1] = gs->cand[g - 1][b->slot];
            w = (size_t)b->w_prev;
            r = b->from;
        }
    }
    free(top); free(top_w); free(e); free(cnt);
    return 0;
}

int tune_search_brute(const GroupSpace *gs, int max_cost, Front *out) {
    out->n = 0; out->pts = NULL;
    int lo, hi, G = gs->n_groups;
    if (total_cost_bounds(gs, &lo, &hi) != 0) return -1;
    if (max_cost >= 0 && lo > max_cost) return -1;
    if (max_cost >= 0 && hi > max_cost) hi = max_cost;
    double *best = xmalloc(((size_t)hi + 1) * sizeof(double));
    int **arg = xcalloc((size_t)hi + 1, sizeof(int *));
    for (int w = 0; w <= hi; w++) best[w] = INFINITY;
    int *slot = xcalloc((size_t)G, sizeof(int));   // odometer over candidate slots
    for (;;) {
        int w = 0; double e = 0;
        for (int g = 0; g < G; g++) {
            int p = gs->cand[g][slot[g]];
            w += gs->gsize[g] * tune_cost(p);
            e += gs->gerr[g][p];
        }
        if (w <= hi && e < best[w]) {
            best[w] = e;
            if (!arg[w]) arg[w] = xmalloc((size_t)G * sizeof(int));
            for (int g = 0; g < G; g++) arg[w][g] = gs->cand[g][slot[g]];
        }
        int g = 0;
        while (g < G && ++slot[g] == gs->n_cand[g]) slot[g++] = 0;
        if (g == G) break;
    }
    int *sel = xmalloc(((size_t)hi + 1) * sizeof(int));
    int n = front_totals(best, hi, sel);
    out->pts = xcalloc((size_t)n, sizeof(FrontPoint));
    out->n = n;
    for (int k = 0; k < n; k++) {
        out->pts[k].cost = sel[k];
        out->pts[k].err = best[sel[k]];
        out->pts[k].pair_of_group = arg[sel[k]];
        arg[sel[k]] = NULL;
    }
    for (int w = 0; w <= hi; w++) free(arg[w]);
    free(arg); free(sel); free(slot); free(best);
    return 0;
}

void tune_point_bits(const Clustering *c, const FrontPoint *p, KVBits *kv) {
    for (int l = 0; l < c->n_layers; l++) {
        int pair = p->pair_of_group[c->group_of[l]];
        kv[l].k_bits = tune_kbits(pair);
        kv[l].v_bits = tune_vbits(pair);
    }
}
