// tune.c: `run -m tune` (tune.h, docs/DESIGN.md §6). The steps, in order:
//   1. text: for each kind (a -f file), calibration tokens from its first half and held-back
//      tokens from its second half; the --verify file's first tokens
//   2-3. per kind: one fp16 pass recording every layer over the first half of its calibration
//      tokens, then the sensitivity table (tune_sens.c), or every kind's table from an earlier
//      run's sensitivity.tsv
//   4. the kinds' tables combined (tuner.h), pruning, clustering, the DP front under --max-bits
//   5. joint search: every uniform configuration within the cap is measured on every kind's
//      calibration text; at every half-bit budget the few best candidates of the additive model
//      are measured kind by kind, each stopped as soon as one kind shows it cannot win, and the
//      candidate whose worst kind gains most over the best uniform configuration is kept (§6.1)
//   6. verification of the chosen points and of the uniform configurations on the held-back
//      text of every kind and on the --verify text, then the outputs (tune_report.c)
#include "tune.h"
#include "tune_report.h"
#include "../model/eval.h"
#include "../util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TUNE_BUDGET_STEP 0.5    // one tuned point per half bit of average
#define TUNE_REFINE_M (TUNE_LOG_CANDS - 1)   // proposed candidates measured per budget
#define TUNE_POOL_M 32          // proposals per budget: the grouped space's best assignments...
#define TUNE_MINIMAX_ROUNDS 24  // ...and those of the per-layer minimax search: its rounds,
#define TUNE_MINIMAX_M 2        //    assignments per round,
#define TUNE_MINIMAX_STEP 4.0   //    and step (multiplicative weights on the relative ratio gap)
#define TUNE_EVAL_BATCH 64      // tokens per forward() call in the joint search and verification

void tune_options_init(TuneOptions *o) {
    memset(o, 0, sizeof *o);
    o->max_bits = 16;
    o->out_dir = "tune-out";
    o->progress = 1;
}

const char *tune_options_usage(void) {
    return "  -f A,B,...    tune: calibration files, one kind of text each (at most 7); each file's first half\n"
           "                calibrates, its second half is held back; --tokens N per kind (default 1024 / kinds)\n"
           "  --verify FILE tune: also verify on this kind of text, never calibrated on\n"
           "  --max-bits B  tune: cap on the average bits (k+v)/2, 2 <= B <= 16 (default 16: no cap)\n"
           "  --out DIR     tune: output directory (default tune-out)\n"
           "  --groups K    tune: number of layer groups (default: automatic)\n"
           "  --sensitivity FILE  tune: reuse the sensitivity.tsv of an earlier run (search and verify only)\n";
}

int tune_options_parse(TuneOptions *o, int argc, char **argv, int i) {
    const char *a = argv[i];
    if (strcmp(a, "--max-bits") && strcmp(a, "--out") && strcmp(a, "--groups") && strcmp(a, "--sensitivity") &&
        strcmp(a, "--verify"))
        return 0;
    if (i + 1 >= argc) fatal("%s: missing value", a);
    const char *v = argv[i + 1];
    char *end;
    errno = 0;
    if (!strcmp(a, "--sensitivity")) {
        o->sens_path = v;
    } else if (!strcmp(a, "--verify")) {
        if (o->verify) fatal("--verify: given twice (one kind of text the tuner does not calibrate on)");
        if (!*v) fatal("--verify: empty file name");
        o->verify = v;
    } else if (!strcmp(a, "--out")) {
        if (!*v) fatal("--out: empty directory name");
        o->out_dir = v;
    } else if (!strcmp(a, "--max-bits")) {
        double b = strtod(v, &end);
        if (end == v || *end || errno == ERANGE || !isfinite(b)) fatal("--max-bits: not a number: '%s'", v);
        if (b < 2 || b > 16) fatal("--max-bits: %g is outside [2, 16] (average bits per element of K and V)", b);
        o->max_bits = b;
    } else {
        long g = strtol(v, &end, 10);
        if (end == v || *end || errno == ERANGE) fatal("--groups: not an integer: '%s'", v);
        if (g < 1 || g > 4096) fatal("--groups: %ld is out of range [1, number of layers]", g);
        o->groups = (int)g;
    }
    return 2;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// CPU seconds of the process, all threads: what a phase costs whatever else the machine runs.
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Create --out if needed and prove it writable now, before minutes of work.
static void prepare_out_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) fatal("--out %s: cannot create the directory: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) fatal("--out %s: not a directory", dir);
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.kvt-write-test", dir);
    FILE *f = fopen(probe, "w");
    if (!f) fatal("--out %s: not writable: %s", dir, strerror(errno));
    fclose(f);
    remove(probe);
}

// ---- step 1: the kinds of text ----------------------------------------------------------------

// A kind's name: its file's base name without the extension ("data/tinyshakespeare.txt" ->
// "tinyshakespeare").
static void kind_name(char *out, size_t n, const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    size_t len = dot && dot > b ? (size_t)(dot - b) : strlen(b);
    if (len >= n) len = n - 1;
    memcpy(out, b, len);
    out[len] = 0;
}

// Split -f into kinds and append the --verify kind. `list` is modified (the paths point into it).
// Returns the number of kinds; *n_cal gets the calibration ones.
static int parse_kinds(char *list, const char *verify, TuneKind *kinds, int *n_cal) {
    int n = 0;
    for (char *p = list;; ) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        if (!*p) fatal("-f: an empty file name in the list (give FILE or FILE,FILE,... one per kind of text)");
        if (n == TUNE_MAX_KINDS - 1) fatal("-f: more than %d calibration files", TUNE_MAX_KINDS - 1);
        kinds[n].path = p;
        kinds[n].calibrated = 1;
        kind_name(kinds[n].name, sizeof kinds[n].name, p);
        if (!kinds[n].name[0]) fatal("-f %s: no file name to name the kind by", p);
        n++;
        if (!comma) break;
        p = comma + 1;
    }
    *n_cal = n;
    if (verify) {
        kinds[n].path = verify;
        kinds[n].calibrated = 0;
        kind_name(kinds[n].name, sizeof kinds[n].name, verify);
        if (!kinds[n].name[0]) fatal("--verify %s: no file name to name the kind by", verify);
        n++;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) {
            if (!strcmp(kinds[i].path, kinds[j].path))
                fatal("%s %s: the same file twice (%s)", kinds[i].calibrated ? "-f" : "--verify", kinds[i].path,
                      kinds[i].calibrated ? "one kind of text per file"
                                          : "the --verify text must be a kind the tuner does not calibrate on");
            if (!strcmp(kinds[i].name, kinds[j].name))
                fatal("%s %s: a second kind named '%s' (%s): kinds are named by their file's base name",
                      kinds[i].calibrated ? "-f" : "--verify", kinds[i].path, kinds[i].name, kinds[j].path);
        }
    return n;
}

// The first `want` token ids of text[from, to), from a line start (BOS first if the model
// wants one). Only a generous prefix is tokenized, not the whole file. Special-token strings
// are the model's special tokens, so a chat transcript in the model's template (data/kinds/)
// calibrates as the chat it is.
static int *slice_tokens(const Model *m, const char *text, size_t len, size_t from, size_t to, int want,
                         const char *path, const char *which) {
    while (from > 0 && from < to && text[from - 1] != '\n') from++;
    size_t bytes = (size_t)want * 16 + 64;
    if (to - from > bytes) to = from + bytes;
    if (to < len) {                                   // end on a line end: no split characters
        size_t e = to;
        while (e > from && text[e - 1] != '\n') e--;
        if (e > from) to = e;
    }
    int *all;
    int n = tokenizer_encode(&m->tokenizer, text + from, to - from, 1, &all);
    int bos = eval_wants_bos(&m->tokenizer);
    if (n + bos < want)
        fatal("%s: the text is too short: its %s has %d tokens, the tuner needs %d (a longer text, or --tokens N)",
              path, which, n + bos, want);
    int *ids = xmalloc((size_t)want * sizeof(int));
    if (bos) ids[0] = m->tokenizer.bos_id;
    memcpy(ids + bos, all, (size_t)(want - bos) * sizeof(int));
    free(all);
    return ids;
}

static void read_kind(const Model *m, TuneKind *k, int n) {
    size_t len;
    char *text = read_file(k->path, &len);
    if (len == 0) fatal("%s: the text is empty", k->path);
    if (k->calibrated) {
        k->cal = slice_tokens(m, text, len, 0, len / 2, n, k->path, "first half (calibration)");
        k->held = slice_tokens(m, text, len, len / 2, len, n, k->path, "second half (held back)");
    } else {
        k->held = slice_tokens(m, text, len, 0, len, n, k->path, "text (--verify)");
    }
    free(text);
}

// ---- measuring a configuration ----------------------------------------------------------------

// A full spec: the grouping with per-layer bits kv[l] on every head, and the grouping's rotated
// layers (docs/DESIGN.md §3.10), so that every configuration the tuner measures (joint search,
// uniform baselines, verification) is quantized as the one it writes will be. The spec owns its
// copies (free_kvspec frees both).
static void spec_for(const KVSpec *grouping, const Config *c, const KVBits *kv, KVSpec *out) {
    *out = *grouping;
    out->rotate = NULL;
    if (grouping->rotate) memcpy(build_kvspec_rotate(out), grouping->rotate, (size_t)c->n_layers);
    out->bits = xmalloc((size_t)c->n_layers * c->n_kv_heads * sizeof(KVBits));
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++) out->bits[(size_t)l * c->n_kv_heads + h] = kv[l];
}

static void pairs_to_bits(const int *pairs, int L, KVBits *kv) {
    for (int l = 0; l < L; l++) kv[l] = (KVBits){tune_kbits(pairs[l]), tune_vbits(pairs[l])};
}

// Mean KL of a configuration against fp16 log-probs `base` of text ids[0..n); top-1 and bits per
// element into *top1 and *bpe when given.
static double measure(const Model *m, const KVSpec *grouping, const KVBits *kv, const int *ids, int n,
                      const float *base, double *top1, double *bpe) {
    KVSpec sp;
    spec_for(grouping, &m->config, kv, &sp);
    EvalStats st;
    eval_against(m, &sp, ids, n, TUNE_EVAL_BATCH, base, &st);
    free_kvspec(&sp);
    if (top1) *top1 = (double)st.top1 / st.n;
    if (bpe) *bpe = st.kv_bits_per_elem;
    return st.kl / st.n;
}

// ---- step 5: the joint search ------------------------------------------------------------------

// Every configuration measured on calibration text, with its KL per kind (NAN: that kind was
// not needed: the candidate was already beaten).
typedef struct {
    int n, cap, L, K;
    int *pairs;       // [cap][L]
    int *cost;        // [cap] total half-bits
    double *kl;       // [cap][K]
    int runs, cut;    // kind measurements done; candidates stopped early
} Measured;

static int memo_find(const Measured *me, const int *pairs) {
    for (int i = 0; i < me->n; i++)
        if (!memcmp(me->pairs + (size_t)i * me->L, pairs, (size_t)me->L * sizeof(int))) return i;
    return -1;
}

static int memo_get(Measured *me, const int *pairs) {
    int i = memo_find(me, pairs);
    if (i >= 0) return i;
    if (me->n == me->cap) {
        me->cap = me->cap ? 2 * me->cap : 32;
        me->pairs = xrealloc(me->pairs, (size_t)me->cap * me->L * sizeof(int));
        me->cost = xrealloc(me->cost, (size_t)me->cap * sizeof(int));
        me->kl = xrealloc(me->kl, (size_t)me->cap * me->K * sizeof(double));
    }
    i = me->n++;
    memcpy(me->pairs + (size_t)i * me->L, pairs, (size_t)me->L * sizeof(int));
    me->cost[i] = 0;
    for (int l = 0; l < me->L; l++) me->cost[i] += tune_cost(pairs[l]);
    for (int k = 0; k < me->K; k++) me->kl[(size_t)i * me->K + k] = NAN;
    return i;
}

// What the joint search works with.
typedef struct {
    const Model *m;
    const KVSpec *grouping;
    const TuneKind *kinds;   // the calibration kinds [K]
    int n;                   // tokens of each
    const Clustering *cl;
    const GroupSpace *space; // the combined table's group space
    const SensTable *tab;    // the combined table
    Measured me;
} Search;

// Config i's calibration KL on kind k, measured now if it was not yet.
static double kind_kl(Search *s, int i, int k) {
    double *v = &s->me.kl[(size_t)i * s->me.K + k];
    if (isnan(*v)) {
        KVBits *kv = xmalloc((size_t)s->me.L * sizeof(KVBits));
        pairs_to_bits(s->me.pairs + (size_t)i * s->me.L, s->me.L, kv);
        *v = measure(s->m, s->grouping, kv, s->kinds[k].cal, s->n, s->kinds[k].cal_base, NULL, NULL);
        s->me.runs++;
        free(kv);
    }
    return *v;
}

// Of the configs cand[0..nc), the best under tune_pick (rows with a kind not measured are
// skipped); -1 if none is complete.
static int pick_of(const Search *s, const int *cand, int nc, const double *ref) {
    int K = s->me.K;
    double *rows = xmalloc((size_t)nc * K * sizeof(double));
    int *cost = xmalloc((size_t)nc * sizeof(int));
    for (int i = 0; i < nc; i++) {
        memcpy(rows + (size_t)i * K, s->me.kl + (size_t)cand[i] * K, (size_t)K * sizeof(double));
        cost[i] = s->me.cost[cand[i]];
    }
    int b = tune_pick(rows, cost, nc, ref, K);
    free(rows); free(cost);
    return b < 0 ? -1 : cand[b];
}

// Measure mixed candidate c kind by kind, the kinds where the current best is weakest first,
// and stop as soon as one kind's ratio reaches the best's worst ratio: c can no longer win.
static void try_candidate(Search *s, int c, int best, const double *ref) {
    int K = s->me.K, order[TUNE_MAX_KINDS];
    double r[TUNE_MAX_KINDS], bound = tune_worst_ratio(s->me.kl + (size_t)best * K, ref, K);
    for (int k = 0; k < K; k++) { order[k] = k; r[k] = s->me.kl[(size_t)best * K + k] / ref[k]; }
    for (int i = 1; i < K; i++)                        // insertion sort, weakest first
        for (int j = i; j > 0 && r[order[j]] > r[order[j - 1]]; j--) { int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t; }
    for (int i = 0; i < K; i++)
        if (kind_kl(s, c, order[i]) / ref[order[i]] >= bound) {
            if (i < K - 1) s->me.cut++;
            return;
        }
}

// Kind k's predicted KL for a configuration: the sum of its layers' single-layer KLs.
static double predict_kind(const Search *s, int k, const int *pairs) {
    double e = 0;
    for (int l = 0; l < s->me.L; l++) e += sens_err(&s->kinds[k].tab, l)[pairs[l]];
    return e;
}

// Proposed configurations of one budget, each with its predicted worst-kind ratio: each kind's
// predicted KL over the predicted KL of that kind's best measured uniform configuration.
typedef struct {
    int n, cap, L;
    int *pairs;            // [cap][L]
    double *score, *pred;  // [cap] predicted worst-kind ratio; predicted error (combined table)
} Pool;

static void pool_add(Pool *p, const Search *s, const int *pairs, const double *ref_pred) {
    int L = p->L;
    for (int j = 0; j < p->n; j++)
        if (!memcmp(p->pairs + (size_t)j * L, pairs, (size_t)L * sizeof(int))) return;
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->pairs = xrealloc(p->pairs, (size_t)p->cap * L * sizeof(int));
        p->score = xrealloc(p->score, (size_t)p->cap * sizeof(double));
        p->pred = xrealloc(p->pred, (size_t)p->cap * sizeof(double));
    }
    memcpy(p->pairs + (size_t)p->n * L, pairs, (size_t)L * sizeof(int));
    p->score[p->n] = p->pred[p->n] = 0;
    for (int k = 0; k < s->me.K; k++) p->score[p->n] = fmax(p->score[p->n], predict_kind(s, k, pairs) / ref_pred[k]);
    for (int l = 0; l < L; l++) p->pred[p->n] += sens_err(s->tab, l)[pairs[l]];
    p->n++;
}

// The m best assignments of a grouped search space within cost.
static void pool_from_space(Pool *p, const Search *s, const GroupSpace *gs, const Clustering *cl, int cost, int m,
                            const double *ref_pred) {
    int L = p->L;
    Front f;
    if (tune_search_best(gs, cost, m, &f) != 0) return;
    int *pairs = xmalloc((size_t)L * sizeof(int));
    for (int i = 0; i < f.n; i++) {
        for (int l = 0; l < L; l++) pairs[l] = f.pts[i].pair_of_group[cl->group_of[l]];
        pool_add(p, s, pairs, ref_pred);
    }
    free(pairs);
    free_front(&f);
}

// A per-layer minimax search under the additive model: for weights lam over the kinds, the best
// assignments of sum_k lam_k err_k / ref_pred_k within cost, each layer its own group (so the
// moves are not limited to the clustering's groups); then lam moves towards the kinds whose
// predicted ratio is the worst (multiplicative weights), TUNE_MINIMAX_ROUNDS times.
static void pool_minimax(Pool *p, const Search *s, int cost, const double *ref_pred, const unsigned char *all) {
    int L = p->L, K = s->me.K;
    double lam[TUNE_MAX_KINDS], r[TUNE_MAX_KINDS];
    for (int k = 0; k < K; k++) lam[k] = 1.0 / K;
    Clustering id = {.n_layers = L, .n_groups = L, .group_of = xmalloc((size_t)L * sizeof(int))};
    for (int l = 0; l < L; l++) id.group_of[l] = l;
    SensTable w;
    build_senstable(&w, L);
    for (int round = 0; round < TUNE_MINIMAX_ROUNDS; round++) {
        for (int l = 0; l < L; l++)
            for (int q = 0; q < TUNE_NPAIRS; q++) {
                double e = 0;
                for (int k = 0; k < K; k++) e += lam[k] * sens_err(&s->kinds[k].tab, l)[q] / ref_pred[k];
                sens_err(&w, l)[q] = e;
            }
        GroupSpace gs;
        build_groupspace(&gs, &w, all, &id);
        int first = p->n;
        pool_from_space(p, s, &gs, &id, cost, TUNE_MINIMAX_M, ref_pred);
        free_groupspace(&gs);
        if (p->n == first) break;                    // nothing new: the weights have settled
        const int *best = p->pairs + (size_t)first * L;
        double worst = 0, sum = 0;
        for (int k = 0; k < K; k++) { r[k] = predict_kind(s, k, best) / ref_pred[k]; worst = fmax(worst, r[k]); }
        for (int k = 0; k < K; k++) { lam[k] *= exp(TUNE_MINIMAX_STEP * (r[k] - worst) / worst); sum += lam[k]; }
        for (int k = 0; k < K; k++) lam[k] /= sum;
    }
    free_senstable(&w);
    free_clustering(&id);
}

// The candidates to measure at one budget (cost): the TUNE_REFINE_M best of the pool by
// predicted worst-kind ratio (ties: predicted error) into out [TUNE_REFINE_M][L]; returns how
// many. The pool: the grouped search space's TUNE_POOL_M best assignments, and the per-layer
// minimax search's. ref_pred[k]: the predicted KL of kind k's best uniform configuration.
// Proposing by
// the objective itself, not by the combined error, is what finds configurations that beat a
// uniform one on every kind (docs/DESIGN.md §6.1).
static int propose(const Search *s, int cost, const double *ref_pred, int *out) {
    int L = s->me.L;
    Pool p = {.L = L};
    pool_from_space(&p, s, s->space, s->cl, cost, TUNE_POOL_M, ref_pred);
    unsigned char *all = xmalloc((size_t)L * TUNE_NPAIRS);
    memset(all, 1, (size_t)L * TUNE_NPAIRS);
    pool_minimax(&p, s, cost, ref_pred, all);
    free(all);
    int m = 0;
    for (; m < TUNE_REFINE_M && m < p.n; m++) {       // selection of the m best: (score, pred)
        int b = m;
        for (int j = m + 1; j < p.n; j++)
            if (p.score[j] < p.score[b] || (p.score[j] == p.score[b] && p.pred[j] < p.pred[b])) b = j;
        memcpy(out + (size_t)m * L, p.pairs + (size_t)b * L, (size_t)L * sizeof(int));
        memcpy(p.pairs + (size_t)b * L, p.pairs + (size_t)m * L, (size_t)L * sizeof(int));
        p.score[b] = p.score[m]; p.pred[b] = p.pred[m];
    }
    free(p.pairs); free(p.score); free(p.pred);
    return m;
}

// The mixed candidates of a budget as they stand now (cand[n_uni..nc): the previous choice if
// any, then the proposed ones, in order), for the report.
static void log_budget(const Search *s, const int *cand, int nc, int n_uni, int prev, int best, const double *ref,
                       const double *ref_pred, BudgetLog *log) {
    int K = s->me.K;
    memcpy(log->ref, ref, (size_t)K * sizeof(double));
    log->n = 0;
    log->kept = -1;
    for (int i = n_uni, rank = 1; i < nc && log->n < TUNE_LOG_CANDS; i++) {
        int j = log->n++;
        if (cand[i] == prev && i == n_uni) snprintf(log->what[j], sizeof log->what[j], "previous");
        else snprintf(log->what[j], sizeof log->what[j], "proposed %d", rank++);
        log->bits[j] = s->me.cost[cand[i]] / (2.0 * s->me.L);
        log->predicted[j] = 0;
        for (int k = 0; k < K; k++)
            log->predicted[j] = fmax(log->predicted[j], predict_kind(s, k, s->me.pairs + (size_t)cand[i] * s->me.L) / ref_pred[k]);
        memcpy(log->kl[j], s->me.kl + (size_t)cand[i] * K, (size_t)K * sizeof(double));
        if (cand[i] == best) log->kept = j;
    }
}

// Step 5 for one budget (max total cost): the uniform configurations within it set ref, the
// least KL of any of them on each kind; candidates are those, the previous budget's choice and
// the proposed ones (propose). Returns the chosen config's index. Measuring the real
// configuration is what KVTuner's search does (paper §4.3): the additive model misses how
// quantized layers interact (errors grow through later layers).
static int choose_at_budget(Search *s, int cost, const int *uni, int n_uni, int prev, double *ref, BudgetLog *log) {
    int L = s->me.L, K = s->me.K;
    int cand[TUNE_NPAIRS + 1 + TUNE_REFINE_M], nc = 0, ubest[TUNE_MAX_KINDS];
    for (int k = 0; k < K; k++) ref[k] = INFINITY;
    for (int u = 0; u < n_uni; u++) {
        if (s->me.cost[uni[u]] > cost) continue;
        cand[nc++] = uni[u];
        for (int k = 0; k < K; k++)
            if (kind_kl(s, uni[u], k) < ref[k]) { ref[k] = kind_kl(s, uni[u], k); ubest[k] = uni[u]; }
    }
    for (int k = 0; k < K; k++)      // a KL of exactly 0 (a lossless text) compares as equal
        if (!(ref[k] > 0)) ref[k] = 1e-300;
    int n_uni_in = nc, prev_seen = 0;
    for (int j = 0; j < nc; j++) prev_seen |= cand[j] == prev;
    if (prev >= 0 && !prev_seen) cand[nc++] = prev;
    int best = pick_of(s, cand, nc, ref);
    double ref_pred[TUNE_MAX_KINDS];
    for (int k = 0; k < K; k++) ref_pred[k] = fmax(predict_kind(s, k, s->me.pairs + (size_t)ubest[k] * L), 1e-300);
    int *props = xmalloc((size_t)TUNE_REFINE_M * L * sizeof(int));
    int np = propose(s, cost, ref_pred, props);
    for (int i = 0; i < np; i++) {
        int c = memo_get(&s->me, props + (size_t)i * L), seen = 0;
        for (int j = 0; j < nc; j++) seen |= cand[j] == c;
        if (seen) continue;
        cand[nc++] = c;
        try_candidate(s, c, best, ref);
        best = pick_of(s, cand, nc, ref);
    }
    log_budget(s, cand, nc, n_uni_in, prev, best, ref, ref_pred, log);
    free(props);
    return best;
}

// ---- step 6: verification ------------------------------------------------------------------------

// Every point on every kind's held-back text (the --verify kind's too). A point with the same
// configuration as an earlier one copies its numbers.
static void verify_points(const Model *m, const KVSpec *grouping, const TuneKind *kinds, int n_kinds, int n,
                          TunePoint *pts, int np, int progress) {
    size_t V = (size_t)m->config.vocab_size;
    int L = m->config.n_layers;
    float *base = xmalloc((size_t)(n - 1) * V * sizeof(float));
    double t0 = now_s();
    for (int k = 0; k < n_kinds; k++) {
        eval_base_logprobs(m, kinds[k].held, n, TUNE_EVAL_BATCH, base);
        for (int i = 0; i < np; i++) {
            int j = 0;
            while (j < i && memcmp(pts[j].kv, pts[i].kv, (size_t)L * sizeof(KVBits))) j++;
            if (j < i) {
                pts[i].kl[k] = pts[j].kl[k];
                pts[i].top1[k] = pts[j].top1[k];
                pts[i].bits_per_elem = pts[j].bits_per_elem;
                continue;
            }
            pts[i].kl[k] = measure(m, grouping, pts[i].kv, kinds[k].held, n, base, &pts[i].top1[k], &pts[i].bits_per_elem);
            if (progress)
                fprintf(stderr, "tune: verify %s %-10s %.3f bits: held-back KL %.4g, top-1 %.2f%%  (%.0f s)\n", kinds[k].name,
                        pts[i].label, pts[i].avg_bits, pts[i].kl[k], 100 * pts[i].top1[k], now_s() - t0);
        }
    }
    free(base);
}

// ---- step 7: confirmation on held-back text ---------------------------------------------------------

// (tune_report.h) The search chose each budget's point on calibration text. A mixed point is
// kept only where the held-back text of every calibration kind confirms it: there too its KL is
// below that of every uniform configuration within the budget, by TUNE_CONFIRM_MARGIN.
// Otherwise the budget keeps the uniform configuration the search keeps when no mixed
// candidate wins (tune_pick over them, on calibration text): a margin that held-back text of
// the same kind does not reproduce is within the noise of a few hundred tokens, and would not
// transfer to other text either (docs/DESIGN.md §6.1).
void tune_confirm_points(TunePoint *pts, int n_tuned, int np, int n_cal, int L, const BudgetLog *blog) {
    for (int i = 0; i < n_tuned; i++) {
        TunePoint *p = &pts[i];
        p->held_won = 0;
        p->held_worst = 0;
        for (int k = 0; k < n_cal; k++) {
            double q = p->kl[k] / tune_best_uniform(pts, np, p->budget, k)->kl[k];
            p->held_won += q < 1;
            if (q > p->held_worst) p->held_worst = q;
        }
        int mixed = 0;
        for (int l = 1; l < L; l++) mixed |= memcmp(&p->kv[l], &p->kv[0], sizeof(KVBits)) != 0;
        if (p->held_worst < TUNE_CONFIRM_MARGIN || !mixed) continue;
        double rows[TUNE_NPAIRS * TUNE_MAX_KINDS];
        int cost[TUNE_NPAIRS], idx[TUNE_NPAIRS], n = 0;
        for (int u = n_tuned; u < np; u++)
            if (pts[u].avg_bits <= p->budget + 1e-9) {
                memcpy(rows + (size_t)n * n_cal, pts[u].cal, (size_t)n_cal * sizeof(double));
                cost[n] = (int)lround(pts[u].avg_bits * 2 * L);
                idx[n++] = u;
            }
        int pick = tune_pick(rows, cost, n, blog[i].ref, n_cal);
        if (pick < 0) continue;                  // (every uniform configuration within a budget is measured)
        const TunePoint *u = &pts[idx[pick]];
        char name[sizeof u->label];              // the uniform configuration's name ("KV4")
        memcpy(name, u->label, sizeof name);
        memcpy(p->kv, u->kv, (size_t)L * sizeof(KVBits));
        p->avg_bits = u->avg_bits;
        p->bits_per_elem = u->bits_per_elem;
        p->pred = u->pred;
        memcpy(p->cal, u->cal, sizeof p->cal);
        memcpy(p->kl, u->kl, sizeof p->kl);
        memcpy(p->top1, u->top1, sizeof p->top1);
        p->worst = tune_worst_ratio(p->cal, blog[i].ref, n_cal);
        p->mean = tune_mean_ratio(p->cal, blog[i].ref, n_cal);
        p->fell_back = 1;
        snprintf(p->label, sizeof p->label, "tuned-%.1f=%.8s", p->budget, name);
    }
    for (int i = 0; i < n_tuned; i++) {          // budgets that now share a configuration
        pts[i].same_as = -1;
        for (int j = 0; j < i && pts[i].same_as < 0; j++)
            if (!memcmp(pts[j].kv, pts[i].kv, (size_t)L * sizeof(KVBits))) pts[i].same_as = j;
    }
}

// ---- the driver ------------------------------------------------------------------------------------

static void fill_point(TunePoint *pt, const Measured *me, int idx, const SensTable *tab, const double *ref) {
    int L = me->L;
    const int *pairs = me->pairs + (size_t)idx * L;
    pt->kv = xmalloc((size_t)L * sizeof(KVBits));
    pairs_to_bits(pairs, L, pt->kv);
    pt->avg_bits = me->cost[idx] / (2.0 * L);
    pt->pred = 0;
    for (int l = 0; l < L; l++) pt->pred += sens_err(tab, l)[pairs[l]];
    for (int k = 0; k < me->K; k++) pt->cal[k] = me->kl[(size_t)idx * me->K + k];
    pt->worst = ref ? tune_worst_ratio(pt->cal, ref, me->K) : NAN;
    pt->mean = ref ? tune_mean_ratio(pt->cal, ref, me->K) : NAN;
}

// The uniform configurations within the cap, cheapest first (more key bits first on ties):
// memo indices into uni[], their pair into upair[]. A uniform pair whose predicted KL is at least
// TUNE_UNIFORM_FAR times that of a uniform pair with no more bits, on every kind, is neither
// measured nor verified (K2V4 against K4V2 under per-token keys, for example): it cannot be the
// best uniform configuration of any budget. Its name is appended to `skipped`.
static int uniform_configs(Search *s, double max_bits, int *uni, int *upair, char *skipped, size_t n_skipped) {
    int L = s->me.L, K = s->me.K, n = 0, *pairs = xmalloc((size_t)L * sizeof(int)), *other = xmalloc((size_t)L * sizeof(int));
    skipped[0] = 0;
    for (int cost = 4; cost <= 16; cost++)
        for (int p = TUNE_NPAIRS - 1; p >= 0; p--) {
            if (tune_cost(p) != cost || cost / 2.0 > max_bits + 1e-9) continue;
            for (int l = 0; l < L; l++) pairs[l] = p;
            int far = 0;
            for (int q = 0; q < TUNE_NPAIRS && !far; q++) {
                if (q == p || tune_cost(q) > cost) continue;
                for (int l = 0; l < L; l++) other[l] = q;
                far = 1;
                for (int k = 0; k < K; k++)
                    far &= predict_kind(s, k, pairs) >= TUNE_UNIFORM_FAR * predict_kind(s, k, other);
            }
            if (far) {
                size_t len = strlen(skipped);
                snprintf(skipped + len, n_skipped - len, "%s%s", len ? ", " : "", tune_pair_name(p));
                continue;
            }
            upair[n] = p;
            uni[n++] = memo_get(&s->me, pairs);
        }
    free(pairs); free(other);
    return n;
}

// 1 if the grouping rotates every layer (--kv-rotate), 0 if none. The tuner searches bits under
// one cache transform for the whole model; a per-layer mix comes only from a config file, which
// -m tune does not take.
static int grouping_rotated(const KVSpec *g) {
    int n = 0;
    for (int l = 0; g->rotate && l < g->n_layers; l++) n += g->rotate[l] != 0;
    if (n && n < g->n_layers)
        fatal("tune: the KV grouping rotates %d of %d layers; the tuner rotates every layer (--kv-rotate) or none", n,
              g->n_layers);
    return n > 0;
}

int run_tune(const Model *m, const KVSpec *grouping, const TuneOptions *o) {
    const Config *c = &m->config;
    int L = c->n_layers;
    double t_start = now_s(), c_start = cpu_s();
    if (!o->calib || !*o->calib) fatal("-m tune: give the calibration text with -f FILE (or FILE,FILE,... one per kind)");
    char *list = xstrdup(o->calib);
    TuneKind kinds[TUNE_MAX_KINDS];
    memset(kinds, 0, sizeof kinds);
    int n_cal, n_kinds = parse_kinds(list, o->verify, kinds, &n_cal);
    int N = o->tokens ? o->tokens : TUNE_TOKENS / n_cal;
    if (o->groups > L) fatal("--groups: %d is more than the model's %d layers", o->groups, L);
    if (N < 16) fatal("--tokens: %d tokens of each kind are too few for the tuner (at least 16)", N);
    if (N > c->max_seq_len) fatal("--tokens: %d is beyond the model's context of %d", N, c->max_seq_len);
    kvspec_validate(grouping, "tune: the KV grouping");
    int rotated = grouping_rotated(grouping);
    prepare_out_dir(o->out_dir);
    int cap_cost = (int)floor(o->max_bits * 2 * L + 1e-9);
    const char *preset = o->preset ? o->preset : "custom";

    // 1. the texts
    for (int k = 0; k < n_kinds; k++) read_kind(m, &kinds[k], N);
    int n_sens = tune_sens_tokens(N);
    if (o->sens_path) tune_load_sensitivity(o->sens_path, kinds, n_cal, n_sens, L, rotated);   // checked before any work
    if (o->progress) {
        fprintf(stderr, "tune: %s preset%s, %d layers x %d pairs, %d kinds x %d calibration (sensitivity: the first %d) + "
                        "held-back tokens (", preset, rotated ? " with a rotated cache" : "", L, TUNE_NPAIRS, n_cal, N,
                n_sens);
        for (int k = 0; k < n_kinds; k++) fprintf(stderr, "%s%s%s", k ? ", " : "", kinds[k].name, kinds[k].calibrated ? "" : ": --verify only");
        fprintf(stderr, "), out %s\n", o->out_dir);
    }

    // 2-3. per kind: the fp16 pass and the sensitivity table (or an earlier run's)
    size_t V = (size_t)c->vocab_size;
    int n_tail = 0, n_skipped = 0;
    for (int k = 0; k < n_cal; k++) {
        if (!o->sens_path) tune_measure_kind(m, grouping, &kinds[k], n_sens, o->progress, &n_tail, &n_skipped);
        kinds[k].cal_base = xmalloc((size_t)(N - 1) * V * sizeof(float));
        eval_base_logprobs(m, kinds[k].cal, N, TUNE_EVAL_BATCH, kinds[k].cal_base);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/sensitivity.tsv", o->out_dir);
    tune_save_sensitivity(path, kinds, n_cal, n_sens, preset, rotated);
    if (o->progress && o->sens_path) fprintf(stderr, "tune: sensitivity tables read from %s\n", o->sens_path);
    double t_sens = now_s() - t_start, c_sens = cpu_s() - c_start;

    // 4. combine, prune, cluster, search
    SensTable *ktabs = xmalloc((size_t)n_cal * sizeof(SensTable)), tab;
    for (int k = 0; k < n_cal; k++) ktabs[k] = kinds[k].tab;
    tune_combine_kinds(ktabs, n_cal, &tab);
    free(ktabs);
    unsigned char *keep = xmalloc((size_t)L * TUNE_NPAIRS);
    for (int l = 0; l < L; l++) tune_prune_pairs(sens_err(&tab, l), keep + (size_t)l * TUNE_NPAIRS);
    Clustering cl;
    tune_cluster(&tab, keep, o->groups, &cl);
    GroupSpace gs;
    build_groupspace(&gs, &tab, keep, &cl);
    Front front;
    if (tune_search_dp(&gs, cap_cost, &front) != 0)
        fatal("--max-bits %g: no configuration fits (the candidate set is empty after the cap)", o->max_bits);
    double top = front.pts[front.n - 1].cost / (2.0 * L);   // beyond it the front adds nothing
    if (o->progress)
        fprintf(stderr, "tune: %d groups (spread %.3f), predicted front of %d points up to %.3g bits\n", cl.n_groups,
                cl.spread, front.n, top);

    // 5. the uniform configurations, then one tuned point per half bit
    Search s = {.m = m, .grouping = grouping, .kinds = kinds, .n = N, .cl = &cl, .space = &gs, .tab = &tab,
                .me = {.L = L, .K = n_cal}};
    int uni[TUNE_NPAIRS], upair[TUNE_NPAIRS];
    char skipped[64];
    int n_uni = uniform_configs(&s, o->max_bits, uni, upair, skipped, sizeof skipped);
    int n_budgets = 0;
    for (double b = 2.0 + TUNE_BUDGET_STEP; b <= top + 1e-9; b += TUNE_BUDGET_STEP) n_budgets++;
    TunePoint *pts = xcalloc((size_t)n_budgets + n_uni, sizeof(TunePoint));
    BudgetLog *blog = xcalloc((size_t)n_budgets, sizeof(BudgetLog));
    double t2 = now_s(), c2 = cpu_s(), ref[TUNE_MAX_KINDS];
    int np = 0, prev = -1, *chosen = xmalloc((size_t)(n_budgets + 1) * sizeof(int));
    for (int i = 0; i < n_budgets; i++) {       // (2.0 bits is KV2 only: a uniform point below)
        double b = 2.0 + TUNE_BUDGET_STEP * (i + 1);
        blog[i].budget = b;
        int best = choose_at_budget(&s, (int)floor(b * 2 * L + 1e-9), uni, n_uni, prev, ref, &blog[i]);
        TunePoint *pt = &pts[np];
        pt->budget = b;
        pt->same_as = -1;
        for (int j = 0; j < np; j++) if (chosen[j] == best) { pt->same_as = j; break; }
        fill_point(pt, &s.me, best, &tab, ref);
        int same = 1, *pp = s.me.pairs + (size_t)best * L;   // the search may keep a uniform configuration
        for (int l = 1; l < L; l++) same &= pp[l] == pp[0];
        snprintf(pt->label, sizeof pt->label, "tuned-%.1f%s%s", b, same ? "=" : "", same ? tune_pair_name(pp[0]) : "");
        if (o->progress)
            fprintf(stderr, "tune: budget %.1f bits: %s%.3f bits, worst kind %.4g x the best uniform, mean %.4g "
                            "(%d configs, %d runs, %.0f s)\n", b, pt->same_as >= 0 ? "same as a cheaper budget, " : "",
                    pt->avg_bits, pt->worst, pt->mean, s.me.n, s.me.runs, now_s() - t2);
        chosen[np++] = best;
        prev = best;
    }
    for (int u = 0; u < n_uni; u++) {
        TunePoint *pt = &pts[np++];
        pt->uniform = 1;
        pt->same_as = -1;
        fill_point(pt, &s.me, uni[u], &tab, NULL);
        pt->budget = pt->avg_bits;
        snprintf(pt->label, sizeof pt->label, "%s", tune_pair_name(upair[u]));
    }
    double t_refine = now_s() - t2, c_refine = cpu_s() - c2;
    for (int k = 0; k < n_cal; k++) { free(kinds[k].cal_base); kinds[k].cal_base = NULL; }

    // 6. verification on held-back text of every kind and on the --verify text
    double t3 = now_s(), c3 = cpu_s();
    verify_points(m, grouping, kinds, n_kinds, N, pts, np, o->progress);
    double t_verify = now_s() - t3, c_verify = cpu_s() - c3;

    // 7. keep a mixed point only where held-back text confirms it
    tune_confirm_points(pts, n_budgets, np, n_cal, L, blog);
    if (o->progress)
        for (int i = 0; i < n_budgets; i++)
            if (pts[i].fell_back)
                fprintf(stderr, "tune: budget %.1f bits: the mixed point won on held-back text of %d of %d kinds "
                                "(worst ratio %.3f); kept %s\n", pts[i].budget, pts[i].held_won, n_cal,
                        pts[i].held_worst, pts[i].label);

    TuneReport rep = {.preset = preset, .rotate = grouping->rotate, .out_dir = o->out_dir, .n_layers = L, .tokens = N, .sens_tokens = n_sens,
                      .max_bits = o->max_bits,
                      .kinds = kinds, .n_kinds = n_kinds, .n_cal = n_cal, .tab = &tab, .keep = keep, .cl = &cl,
                      .pts = pts, .n_pts = np, .log = blog, .n_budgets = n_budgets, .refine_m = TUNE_REFINE_M, .n_tail = n_tail, .n_skipped = n_skipped,
                      .uniform_skipped = skipped, .n_configs = s.me.n, .n_runs = s.me.runs, .n_cut = s.me.cut, .t_sens = t_sens,
                      .t_refine = t_refine, .t_verify = t_verify, .c_sens = c_sens, .c_refine = c_refine,
                      .c_verify = c_verify};
    tune_write_report(&rep);
    double wall = now_s() - t_start;
    printf("tune: wrote %d tuned configs%s to %s in %.1f s (sensitivity %.1f s, joint search %.1f s, verification %.1f s; "
           "CPU %.0f s)\n", n_budgets, rotated ? " for a rotated cache (rotate: true on every layer)" : "", o->out_dir, wall,
           t_sens, t_refine, t_verify, cpu_s() - c_start);
    printf("tune preset %s front %d groups %d tokens %d kinds %d wall_s %.1f out %s\n", preset, n_budgets, cl.n_groups,
           N, n_cal, wall, o->out_dir);

    for (int i = 0; i < np; i++) free(pts[i].kv);
    for (int k = 0; k < n_kinds; k++) { free(kinds[k].cal); free(kinds[k].held); if (kinds[k].calibrated) free_senstable(&kinds[k].tab); }
    free(pts); free(blog); free(chosen); free(keep); free(list);
    free(s.me.pairs); free(s.me.cost); free(s.me.kl);
    free_front(&front); free_groupspace(&gs); free_clustering(&cl); free_senstable(&tab);
    return 0;
}
