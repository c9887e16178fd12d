// tune.c: `run -m tune` (tune.h, docs/DESIGN.md §6). The steps, in order:
//   1. text: calibration tokens from the first half of -f, held-back tokens from the second
//   2. one fp16 pass over the calibration tokens, recording every layer (tune_forward.c)
//   3. sensitivity: for each layer and pair, the attention-output relative error and the KL
//      with only that layer quantized (started at that layer from the recorded states)
//   4. pruning, clustering, the exact DP front under --max-bits (tune_search.c, tune_cluster.c)
//   5. joint measurement: at every half bit, the few best candidates of the additive model
//      (and the uniform configurations that fit) run with all their layers quantized on the
//      calibration text; the least measured KL is the tuned point for that budget
//   6. verification of the tuned points and of the uniform configurations on held-back
//      text, then the outputs (tune_report.c)
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
#define TUNE_REFINE_M 4         // additive-model candidates measured jointly per budget
#define TUNE_EVAL_BATCH 64      // tokens per forward() call in verification
// Sensitivity KL is scored at every TUNE_KL_STRIDE-th position once there are >= 512 tokens
// (>= 128 scored positions); every token still runs through every layer. The classifier is
// ~40% of a tail run at 1024 tokens on SmolLM2-135M, so this cuts the tuner's time ~1.6x.
#define TUNE_KL_STRIDE 4
static int kl_stride(int n) { return n >= 512 ? TUNE_KL_STRIDE : 1; }

void tune_options_init(TuneOptions *o) {
    memset(o, 0, sizeof *o);
    o->tokens = 1024;
    o->max_bits = 16;
    o->out_dir = "tune-out";
    o->progress = 1;
}

const char *tune_options_usage(void) {
    return "  --max-bits B  tune: cap on the average bits (k+v)/2, 2 <= B <= 16 (default 16: no cap)\n"
           "  --out DIR     tune: output directory (default tune-out)\n"
           "  --groups K    tune: number of layer groups (default: automatic)\n"
           "  --sensitivity FILE  tune: reuse the sensitivity.tsv of an earlier run (search and verify only)\n";
}

int tune_options_parse(TuneOptions *o, int argc, char **argv, int i) {
    const char *a = argv[i];
    if (strcmp(a, "--max-bits") && strcmp(a, "--out") && strcmp(a, "--groups") && strcmp(a, "--sensitivity")) return 0;
    if (i + 1 >= argc) fatal("%s: missing value", a);
    const char *v = argv[i + 1];
    char *end;
    errno = 0;
    if (!strcmp(a, "--sensitivity")) {
        o->sens_path = v;
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

// The first `want` token ids of text[from, to), from a line start (BOS first if the model
// wants one). Only a generous prefix is tokenized, not the whole 1 MB text.
static void slice_tokens(const Model *m, const TuneOptions *o, size_t from, size_t to, int want, const char *which,
                         int **ids) {
    while (from > 0 && from < to && o->text[from - 1] != '\n') from++;
    size_t bytes = (size_t)want * 16 + 64;
    if (to - from > bytes) to = from + bytes;
    if (to < o->text_len) {                           // end on a line end: no split characters
        size_t e = to;
        while (e > from && o->text[e - 1] != '\n') e--;
        if (e > from) to = e;
    }
    int *all;
    int n = tokenizer_encode(&m->tokenizer, o->text + from, to - from, 0, &all);
    int bos = eval_wants_bos(&m->tokenizer);
    if (n + bos < want)
        fatal("%s: the text is too short: its %s has %d tokens, the tuner needs %d (-f a longer text, or --tokens N)",
              o->text_name, which, n + bos, want);
    *ids = xmalloc((size_t)want * sizeof(int));
    if (bos) (*ids)[0] = m->tokenizer.bos_id;
    memcpy(*ids + bos, all, (size_t)(want - bos) * sizeof(int));
    free(all);
}

// ||a - b|| / ||b|| over n floats, in double.
static double rel_error(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) { d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); s += (double)b[i] * b[i]; }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

// Step 3: the sensitivity table from the recorded pass.
static void measure_sensitivity(const Model *m, const KVSpec *grouping, RunState *s, const TuneRecord *r,
                                SensTable *t, int progress) {
    const Config *c = &m->config;
    size_t od = (size_t)r->n * c->n_heads * c->head_dim;
    float *o16 = xmalloc(od * sizeof(float)), *oq = xmalloc(od * sizeof(float));
    KVSpec sp16;
    build_kvspec_uniform(&sp16, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
    KVCache *c16 = build_kvcache(&sp16, r->n);
    double t0 = now_s();
    for (int l = 0; l < c->n_layers; l++) {
        tune_layer_attention(m, grouping, (KVBits){16, 16}, r, l, o16);
        for (int p = 0; p < TUNE_NPAIRS; p++) {
            tune_layer_attention(m, grouping, (KVBits){tune_kbits(p), tune_vbits(p)}, r, l, oq);
            sens_aux(t, l)[p] = rel_error(oq, o16, od);
            sens_err(t, l)[p] = tune_tail_kl(m, s, c16, r, l, oq, kl_stride(r->n));
            if (!isfinite(sens_err(t, l)[p])) fatal("tune: layer %d %s: the KL is not finite", l, tune_pair_name(p));
        }
        if (progress) {
            double dt = now_s() - t0;
            // later layers are cheaper (shorter tails): weight the ETA by remaining depth
            double done = 0, all = 0;
            for (int j = 0; j < c->n_layers; j++) { double w = c->n_layers - j + 8; all += w; if (j <= l) done += w; }
            fprintf(stderr, "tune: sensitivity layer %d/%d: KL KV2 %.4g KV4 %.4g KV8 %.3g  (%.0f s, ~%.0f s left)\n",
                    l + 1, c->n_layers, sens_err(t, l)[0], sens_err(t, l)[4], sens_err(t, l)[8], dt, dt * (all - done) / done);
        }
    }
    free_kvcache(c16);
    free_kvspec(&sp16);
    free(o16); free(oq);
}

// sensitivity.tsv: one line per layer: the index, the 9 KLs, the 9 attention errors (pair
// order of tuner.h), so a search can be redone (other --max-bits / --groups) without step 3.
static void save_sensitivity(const SensTable *t, const TuneOptions *o) {
    char path[4096];
    snprintf(path, sizeof path, "%s/sensitivity.tsv", o->out_dir);
    FILE *f = fopen(path, "w");
    if (!f) fatal("--out %s: cannot write %s: %s", o->out_dir, path, strerror(errno));
    fprintf(f, "# kvtuner.c -m tune sensitivity, %s preset, %d calibration tokens: layer, KL x 9, attention rel. error x 9:",
            o->preset ? o->preset : "custom", o->tokens);
    for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, " %s", tune_pair_name(p));
    fprintf(f, "\n");
    for (int l = 0; l < t->n_layers; l++) {
        fprintf(f, "%d", l);
        for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, "\t%.17g", sens_err(t, l)[p]);
        for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, "\t%.17g", sens_aux(t, l)[p]);
        fprintf(f, "\n");
    }
    if (fclose(f) != 0) fatal("--out %s: error writing %s", o->out_dir, path);
}

static void load_sensitivity(SensTable *t, const char *path) {
    char *text = read_file(path, NULL), *save = NULL;
    int l = 0, line = 0;
    for (char *ln = strtok_r(text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        line++;
        if (ln[0] == '#' || ln[0] == 0) continue;
        if (l >= t->n_layers) fatal("%s: line %d: more layers than the model's %d", path, line, t->n_layers);
        char *p = ln, *end;
        long idx = strtol(p, &end, 10);
        if (end == p || idx != l) fatal("%s: line %d: expected layer %d first", path, line, l);
        for (int i = 0; i < 2 * TUNE_NPAIRS; i++) {
            p = end;
            double v = strtod(p, &end);
            if (end == p || !isfinite(v) || v < 0) fatal("%s: line %d: value %d is missing or not a finite number >= 0", path, line, i + 1);
            (i < TUNE_NPAIRS ? sens_err(t, l) : sens_aux(t, l))[i % TUNE_NPAIRS] = v;
        }
        while (*end == ' ' || *end == '\t' || *end == '\r') end++;
        if (*end) fatal("%s: line %d: extra text after 19 fields", path, line);
        l++;
    }
    if (l != t->n_layers) fatal("%s: %d layers, the model has %d", path, l, t->n_layers);
    free(text);
}

// A full spec: the grouping with per-layer bits kv[l] on every head.
static void spec_for(const KVSpec *grouping, const Config *c, const KVBits *kv, KVSpec *out) {
    *out = *grouping;
    out->bits = xmalloc((size_t)c->n_layers * c->n_kv_heads * sizeof(KVBits));
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++) out->bits[(size_t)l * c->n_kv_heads + h] = kv[l];
}

static void verify_point(const Model *m, const KVSpec *grouping, const int *ids, int n, const float *base_logp,
                         TunePoint *pt) {
    KVSpec sp;
    spec_for(grouping, &m->config, pt->kv, &sp);
    EvalStats st;
    eval_against(m, &sp, ids, n, TUNE_EVAL_BATCH, base_logp, &st);
    pt->kl = st.kl / st.n;
    pt->top1 = (double)st.top1 / st.n;
    pt->bits_per_elem = st.kv_bits_per_elem;
    free_kvspec(&sp);
}

// Step 5's candidates, measured once each: per-layer pairs and their calibration KL.
typedef struct { int n, cap; int *pairs; double *kl; } Measured;   // pairs [cap][L]

static double measure_joint(const Model *m, const KVSpec *grouping, const int *ids, int n, const float *base,
                            Measured *memo, const int *pairs) {
    int L = m->config.n_layers;
    for (int i = 0; i < memo->n; i++)
        if (!memcmp(memo->pairs + (size_t)i * L, pairs, (size_t)L * sizeof(int))) return memo->kl[i];
    TunePoint pt = {0};
    pt.kv = xmalloc((size_t)L * sizeof(KVBits));
    for (int l = 0; l < L; l++) pt.kv[l] = (KVBits){tune_kbits(pairs[l]), tune_vbits(pairs[l])};
    verify_point(m, grouping, ids, n, base, &pt);
    free(pt.kv);
    if (memo->n == memo->cap) {
        memo->cap = memo->cap ? 2 * memo->cap : 32;
        memo->pairs = xrealloc(memo->pairs, (size_t)memo->cap * L * sizeof(int));
        memo->kl = xrealloc(memo->kl, (size_t)memo->cap * sizeof(double));
    }
    memcpy(memo->pairs + (size_t)memo->n * L, pairs, (size_t)L * sizeof(int));
    return memo->kl[memo->n++] = pt.kl;
}

// Step 5 for one budget (max total cost): the TUNE_REFINE_M best assignments under the
// additive model plus every uniform pair that fits, each measured jointly on the calibration
// text; fills *pt with the least measured KL. The additive model ranks candidates well when
// errors are small but misses how quantized layers interact (errors grow through later
// layers); measuring the real configuration is what KVTuner's search does (paper §4.3).
static void choose_at_budget(const Model *m, const KVSpec *grouping, const GroupSpace *gs, const Clustering *cl,
                             const SensTable *tab, int cost, const int *cal, int n, const float *cal_base,
                             Measured *memo, TunePoint *pt) {
    int L = m->config.n_layers;
    Front best;
    if (tune_search_best(gs, cost, TUNE_REFINE_M, &best) != 0) fatal("tune: no configuration fits %d half-bits", cost);
    int *pairs = xmalloc((size_t)L * sizeof(int));
    KVBits *kv = xmalloc((size_t)L * sizeof(KVBits));
    pt->cal_kl = INFINITY;
    for (int i = 0; i < best.n + TUNE_NPAIRS; i++) {
        double pred = 0;
        int c = 0;
        if (i < best.n) {                                 // an additive-model candidate
            tune_point_bits(cl, &best.pts[i], kv);
            for (int l = 0; l < L; l++) pairs[l] = tune_pair_index(kv[l].k_bits, kv[l].v_bits);
        } else {                                          // a uniform pair, if it fits
            int p = i - best.n;
            if (tune_cost(p) * L > cost) continue;
            for (int l = 0; l < L; l++) pairs[l] = p;
        }
        for (int l = 0; l < L; l++) { pred += sens_err(tab, l)[pairs[l]]; c += tune_cost(pairs[l]); }
        double kl = measure_joint(m, grouping, cal, n, cal_base, memo, pairs);
        if (kl < pt->cal_kl || (kl == pt->cal_kl && c < (int)lround(pt->avg_bits * 2 * L))) {
            pt->cal_kl = kl;
            pt->pred = pred;
            pt->avg_bits = c / (2.0 * L);
            for (int l = 0; l < L; l++) pt->kv[l] = (KVBits){tune_kbits(pairs[l]), tune_vbits(pairs[l])};
        }
    }
    free(pairs); free(kv); free_front(&best);
}

int run_tune(const Model *m, const KVSpec *grouping, const TuneOptions *o) {
    const Config *c = &m->config;
    int L = c->n_layers, N = o->tokens;
    double t_start = now_s();
    if (o->groups > L) fatal("--groups: %d is more than the model's %d layers", o->groups, L);
    if (N < 16) fatal("--tokens: %d calibration tokens are too few for the tuner (at least 16)", N);
    if (N > c->max_seq_len) fatal("--tokens: %d is beyond the model's context of %d", N, c->max_seq_len);
    kvspec_validate(grouping, "tune: the KV grouping");
    prepare_out_dir(o->out_dir);
    if (o->text_len == 0) fatal("%s: the calibration text is empty", o->text_name);
    int cap_cost = (int)floor(o->max_bits * 2 * L + 1e-9);

    // 1. calibration and held-back slices (disjoint halves of the text)
    int *cal, *held;
    slice_tokens(m, o, 0, o->text_len / 2, N, "first half (calibration)", &cal);
    slice_tokens(m, o, o->text_len / 2, o->text_len, N, "second half (held back)", &held);
    SensTable tab;                                    // a given table is checked before any output
    build_senstable(&tab, L);
    if (o->sens_path) load_sensitivity(&tab, o->sens_path);
    if (o->progress)
        fprintf(stderr, "tune: %s preset, %d layers x %d pairs, %d calibration + %d held-back tokens, out %s\n",
                o->preset ? o->preset : "custom", L, TUNE_NPAIRS, N, N, o->out_dir);

    // 2. the fp16 pass, 3. sensitivity (or an earlier run's table)
    size_t V = (size_t)c->vocab_size;
    float *cal_base;                                  // fp16 log-probs of the calibration text
    if (o->sens_path) {
        if (o->progress) fprintf(stderr, "tune: sensitivity table read from %s\n", o->sens_path);
        cal_base = xmalloc((size_t)(N - 1) * V * sizeof(float));
        eval_base_logprobs(m, cal, N, TUNE_EVAL_BATCH, cal_base);
    } else {
        RunState s;
        build_runstate(&s, c, N, N);
        TuneRecord rec;
        double t1 = now_s();
        tune_record(m, &s, cal, N, &rec);
        if (o->progress) fprintf(stderr, "tune: fp16 pass recorded in %.1f s\n", now_s() - t1);
        measure_sensitivity(m, grouping, &s, &rec, &tab, o->progress);
        cal_base = rec.logp;                          // kept for step 5
        rec.logp = NULL;
        free_tunerecord(&rec);
        free_runstate(&s);
    }
    save_sensitivity(&tab, o);
    double t_sens = now_s() - t_start;

    // 4. prune, cluster, search
    unsigned char *keep = xmalloc((size_t)L * TUNE_NPAIRS);
    for (int l = 0; l < L; l++) tune_prune_pairs(sens_err(&tab, l), keep + (size_t)l * TUNE_NPAIRS);
    Clustering cl;
    tune_cluster(&tab, keep, o->groups, &cl);
    GroupSpace gs;
    build_groupspace(&gs, &tab, keep, &cl);
    Front front;
    if (tune_search_dp(&gs, cap_cost, &front) != 0)
        fatal("--max-bits %g: no configuration fits (the candidate set is empty after the cap)", o->max_bits);
    if (o->progress)
        fprintf(stderr, "tune: %d groups (spread %.3f), predicted front of %d points up to %.3g bits\n",
                cl.n_groups, cl.spread, front.n, front.pts[front.n - 1].cost / (2.0 * L));

    // 5. one tuned point per half bit, chosen by joint measurement on the calibration text
    double top = front.pts[front.n - 1].cost / (2.0 * L);   // beyond it the front adds nothing
    int n_budgets = 0;
    for (double b = 2.0 + TUNE_BUDGET_STEP; b <= top + 1e-9; b += TUNE_BUDGET_STEP) n_budgets++;
    TunePoint *pts = xcalloc((size_t)n_budgets + 6, sizeof(TunePoint));
    Measured memo = {0};
    int np = 0;
    double t2 = now_s();
    for (int i = 0; i < n_budgets; i++) {       // (2.0 bits is KV2 only: a uniform point below)
        double b = 2.0 + TUNE_BUDGET_STEP * (i + 1);
        TunePoint *pt = &pts[np];
        pt->kv = xmalloc((size_t)L * sizeof(KVBits));
        choose_at_budget(m, grouping, &gs, &cl, &tab, (int)floor(b * 2 * L + 1e-9), cal, N, cal_base, &memo, pt);
        int dup = 0;                                  // a cheaper budget already chose it
        for (int j = 0; j < np && !dup; j++) dup = !memcmp(pts[j].kv, pt->kv, (size_t)L * sizeof(KVBits));
        if (o->progress)
            fprintf(stderr, "tune: budget %.2f bits: %s%.3f bits, predicted KL %.4g, calibration KL %.4g (%d measured, %.0f s)\n",
                    b, dup ? "same as a cheaper budget, " : "", pt->avg_bits, pt->pred, pt->cal_kl, memo.n, now_s() - t2);
        if (dup) { free(pt->kv); pt->kv = NULL; continue; }
        int same = 1;                                 // the search may keep a uniform configuration
        for (int l = 1; l < L; l++) same &= pt->kv[l].k_bits == pt->kv[0].k_bits && pt->kv[l].v_bits == pt->kv[0].v_bits;
        snprintf(pt->label, sizeof pt->label, "tuned-%.3f%s%s", pt->avg_bits, same ? "=" : "",
                 same ? tune_pair_name(tune_pair_index(pt->kv[0].k_bits, pt->kv[0].v_bits)) : "");
        np++;
    }
    double t_refine = now_s() - t2;

    // 6. verification on held-back text: the tuned points and the uniform configurations
    float *base = xmalloc((size_t)(N - 1) * V * sizeof(float));
    eval_base_logprobs(m, held, N, TUNE_EVAL_BATCH, base);
    static const int uni_pairs[5][2] = {{2, 2}, {4, 2}, {4, 4}, {8, 4}, {8, 8}};
    for (int u = 0; u < 5; u++) {
        if ((uni_pairs[u][0] + uni_pairs[u][1]) / 2.0 > o->max_bits + 1e-9) continue;
        TunePoint *pt = &pts[np++];
        int p = tune_pair_index(uni_pairs[u][0], uni_pairs[u][1]);
        pt->uniform = 1;
        pt->kv = xmalloc((size_t)L * sizeof(KVBits));
        int *pairs = xmalloc((size_t)L * sizeof(int));
        for (int l = 0; l < L; l++) { pt->kv[l] = (KVBits){tune_kbits(p), tune_vbits(p)}; pt->pred += sens_err(&tab, l)[p]; pairs[l] = p; }
        pt->cal_kl = measure_joint(m, grouping, cal, N, cal_base, &memo, pairs);
        free(pairs);
        pt->avg_bits = tune_cost(p) / 2.0;
        snprintf(pt->label, sizeof pt->label, "%s", tune_pair_name(p));
    }
    double t3 = now_s();
    for (int i = 0; i < np; i++) {
        verify_point(m, grouping, held, N, base, &pts[i]);
        if (o->progress)
            fprintf(stderr, "tune: verify %d/%d %-12s %.3f bits: predicted KL %.4g, calibration %.4g, held-back %.4g, top-1 %.2f%%  (%.0f s)\n",
                    i + 1, np, pts[i].label, pts[i].avg_bits, pts[i].pred, pts[i].cal_kl, pts[i].kl, 100 * pts[i].top1, now_s() - t3);
    }
    double t_verify = now_s() - t3;

    TuneReport rep = {.preset = o->preset ? o->preset : "custom", .out_dir = o->out_dir, .n_layers = L,
                      .tokens = N, .max_bits = o->max_bits, .tab = &tab, .keep = keep, .cl = &cl,
                      .pts = pts, .n_pts = np, .refine_m = TUNE_REFINE_M, .t_sens = t_sens, .t_refine = t_refine,
                      .t_verify = t_verify};
    int n_front = tune_write_report(&rep);
    double wall = now_s() - t_start;
    printf("tune: wrote %d front configs to %s in %.1f s (sensitivity %.1f s, joint search %.1f s, verification %.1f s)\n",
           n_front, o->out_dir, wall, t_sens, t_refine, t_verify);
    printf("tune preset %s front %d groups %d tokens %d wall_s %.1f out %s\n", rep.preset, n_front, cl.n_groups, N, wall,
           o->out_dir);

    for (int i = 0; i < np; i++) free(pts[i].kv);
    free(pts); free(base); free(cal_base); free(cal); free(held); free(keep);
    free(memo.pairs); free(memo.kl);
    free_front(&front); free_groupspace(&gs); free_clustering(&cl); free_senstable(&tab);
    return 0;
}
