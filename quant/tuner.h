// tuner.h: KVTuner's offline search (Li et al., ICML 2025, arXiv 2502.04420, docs/DESIGN.md §6),
// the model-independent half: a per-layer sensitivity table over the 9 candidate precision
// pairs (K, V) in {2, 4, 8}^2, intra-layer Pareto pruning, inter-layer clustering, and an
// exact multi-objective search (dynamic programming) under an additive-error model.
// The model-dependent half (measuring the table, verifying the front) is in tune.h.
#ifndef KVT_TUNER_H
#define KVT_TUNER_H

#include <stdio.h>
#include "kvcache.h"

// ---- candidate options ------------------------------------------------------------------
// What the search chooses for each layer is one of TUNE_NPAIRS options, listed in TUNE_OPTIONS
// (tune_search.c): today the precision pairs (K, V) in {2, 4, 8}^2 in the order KV2, K2V4,
// K2V8, K4V2, KV4, K4V8, K8V2, K8V4, KV8. Everything else (sensitivity, pruning, clustering, the
// DP, sensitivity.tsv, whose header names the options) goes through this table, so a per-layer
// choice such as a rotated cache is added as more rows (a flag next to the bits, the same cost)
// without touching the search. An option's cost is k + v "half-bits": the average bits
// (k + v) / 2 of a layer times two, so every total over layers is an integer and the DP below
// is exact.
#define TUNE_NPAIRS 9
typedef struct {
    int k_bits, v_bits;
    const char *name;    // "KV4", "K8V4", ...
} TuneOption;
extern const TuneOption TUNE_OPTIONS[TUNE_NPAIRS];
static inline int tune_kbits(int p) { return TUNE_OPTIONS[p].k_bits; }
static inline int tune_vbits(int p) { return TUNE_OPTIONS[p].v_bits; }
static inline int tune_cost(int p) { return tune_kbits(p) + tune_vbits(p); }
int tune_pair_index(int k_bits, int v_bits);            // -1 if not a candidate pair
const char *tune_pair_name(int p);                      // "KV4", "K8V4", ...; "?" if out of range

// ---- sensitivity table --------------------------------------------------------------------
typedef struct {
    int n_layers;
    double *err;    // [n_layers][TUNE_NPAIRS] the searched error: end-to-end KL(fp16 || only
                    //   this layer quantized) on the calibration text (>= 0, finite)
    double *aux;    // [n_layers][TUNE_NPAIRS] layer-local attention-output relative error
                    //   (decides which pairs get a KL measurement; may be all zero)
    unsigned char *tail;  // [n_layers][TUNE_NPAIRS] 1: err was measured (a tail run); 0: it
                          //   was estimated from aux (tune_fill_skipped)
} SensTable;

void build_senstable(SensTable *t, int n_layers);      // zero-filled, every tail flag 1
void free_senstable(SensTable *t);
static inline double *sens_err(const SensTable *t, int l) { return t->err + (size_t)l * TUNE_NPAIRS; }
static inline double *sens_aux(const SensTable *t, int l) { return t->aux + (size_t)l * TUNE_NPAIRS; }
static inline unsigned char *sens_tail(const SensTable *t, int l) { return t->tail + (size_t)l * TUNE_NPAIRS; }

// The pairs not on a layer's (cost, aux) Pareto front are not measured (docs/DESIGN.md §6.2:
// on SmolLM2 the attention-error front and the KL front agree on 298 of 304 kept pairs). For
// each such pair p, err[p] = err[q] * max(1, (aux[p] / aux[q])^2), q the measured pair that
// dominates p on aux with the largest aux (the nearest): p stays dominated by q, so pruning
// drops it, and its estimate is on the right scale for the group sums (KL grows with the square
// of a small perturbation). Measured entries (tail[p] = 1) are left as they are.
void tune_fill_skipped(double *err /* [9] */, const double *aux /* [9] */, const unsigned char *tail /* [9] */);

// The table the search uses when calibrating on several kinds of text (docs/DESIGN.md §6.1):
// out.err[l][p] = sum_k w_k * kinds[k].err[l][p], w_k = Zbar / (K * Z_k), Z_k = the kind's
// predicted KV4 error (sum over layers of err[l][KV4]), Zbar = the mean Z_k. Each kind then
// weighs the same relative to its own uniform 4-bit error, and a uniform KV4 still predicts the
// mean of the kinds' KLs. aux is the plain mean; tail is 1 where every kind measured it.
void tune_combine_kinds(const SensTable *kinds, int n_kinds, SensTable *out);

// ---- intra-layer pruning ---------------------------------------------------------------
// Keep pair p iff no other pair q has cost(q) <= cost(p) and err(q) <= err(p) with at least
// one strict. Ties — equal cost and equal error (K2V4/K4V2, K2V8/K8V2, K4V8/K8V4) — keep the
// pair with more key bits (keys are the more sensitive half, paper §3). A layer where every
// pair is equally bad keeps only KV2 (the cheapest). KV2 is never pruned (nothing is cheaper).
// keep[p] = 1 for kept pairs; returns their number (>= 1).
int tune_prune_pairs(const double *err /* [9] */, unsigned char keep[TUNE_NPAIRS]);

// ---- inter-layer clustering ---------------------------------------------------------------
// Profile of a layer (what is clustered): for every pair p, ln(max(e_p, TUNE_ERR_FLOOR)) where
// e_p is the error of the layer's pruned lower envelope: the least error of the kept pairs
// costing <= cost(p). Absolute, not normalised: layers sharing a group share a pair, so a layer
// 10x more sensitive than another should not join it. Distance: Euclidean / sqrt(9) (RMS
// difference of log-errors). Average-linkage agglomerative clustering (UPGMA): repeatedly merge
// the two closest clusters, ties to the lowest cluster indices; deterministic.
#define TUNE_ERR_FLOOR 1e-9
#define TUNE_SPREAD_TAU 0.35   // auto rule: RMS log-error distance to the group mean <= ln(2)/2
#define TUNE_MAX_AUTO_GROUPS 8

typedef struct {
    int n_layers, n_groups;
    int *group_of;      // [n_layers] group index; groups numbered by their first layer
    double spread;      // max over layers of the RMS log-error distance to its group mean profile
} Clustering;

void tune_layer_profile(const double *err, const unsigned char *keep, double prof[TUNE_NPAIRS]);
// n_groups_wanted in 1..n_layers, or 0 = auto: the smallest K whose spread <= TUNE_SPREAD_TAU,
// at most min(n_layers, TUNE_MAX_AUTO_GROUPS).
void tune_cluster(const SensTable *t, const unsigned char *keep /* [L][9] */, int n_groups_wanted,
                  Clustering *out);
void free_clustering(Clustering *c);

// ---- search ---------------------------------------------------------------------------
// A group's candidates: the union of its members' kept pairs, Pareto-pruned again on the
// group's summed error (group error of p = sum over members of err[l][p]; cost |g| * cost(p)).
typedef struct {
    int n_groups;
    int *n_cand;                 // [n_groups]
    int (*cand)[TUNE_NPAIRS];    // [n_groups][n_cand[g]] pair indices, cheapest first
    double (*gerr)[TUNE_NPAIRS]; // [n_groups][9] summed member error per pair
    int *gsize;                  // [n_groups] member layers
} GroupSpace;

void build_groupspace(GroupSpace *gs, const SensTable *t, const unsigned char *keep, const Clustering *c);
void free_groupspace(GroupSpace *gs);

typedef struct {
    int cost;           // total half-bits over layers; average bits = cost / (2 * n_layers)
    double err;         // predicted error: sum of the layers' errors (additive model)
    int *pair_of_group; // [n_groups]
} FrontPoint;

typedef struct { int n; FrontPoint *pts; } Front;   // by increasing cost, strictly decreasing err

// Exact Pareto front of (total cost, summed error) over the group space, total cost <= max_cost
// (max_cost < 0: no cap). DP over groups and integer totals: best[w] = least error reaching
// total w. Exact under additivity; KL with several layers quantized is not exactly the sum of
// single-layer KLs (errors interact through later layers), which is why the front is verified.
// Returns 0, or -1 if no assignment fits under max_cost.
int tune_search_dp(const GroupSpace *gs, int max_cost, Front *out);
// The same by enumerating every assignment (for tests; small spaces only).
int tune_search_brute(const GroupSpace *gs, int max_cost, Front *out);
void free_front(Front *f);

// The m assignments of least predicted error with total cost <= max_cost (m-best DP: each
// (group, total) keeps its m best partial sums, enough because the error is additive), by
// increasing error (ties: cheaper first). These are the candidates the tuner then measures
// jointly (tune.c), since the additive model is only a guide. Returns 0, or -1 if none fits.
int tune_search_best(const GroupSpace *gs, int max_cost, int m, Front *out);

// Per-layer KV bits of a front point (kv[l] for every layer).
void tune_point_bits(const Clustering *c, const FrontPoint *p, KVBits *kv);

// ---- the transfer objective (docs/DESIGN.md §6.1) ---------------------------------------------
// Candidates for one budget are measured with all layers quantized on the calibration text of
// each kind. ref[k] is the least KL on kind k of the uniform configurations within the budget.
// A candidate's score is its worst ratio max_k kl[k] / ref[k]: below 1 it beats every uniform
// configuration within the budget on every kind. NAN (a kind not measured) gives NAN.
double tune_worst_ratio(const double *kl, const double *ref, int n_kinds);
double tune_mean_ratio(const double *kl, const double *ref, int n_kinds);
// The best of n candidates, kl [n][n_kinds] and cost [n] (total half-bits): least worst ratio,
// then least cost, then least mean ratio, then the lowest index. Candidates with a NAN score
// are skipped. Returns the index, or -1 if none is complete.
int tune_pick(const double *kl, const int *cost, int n, const double *ref, int n_kinds);

// ---- writers ------------------------------------------------------------------------------
// KVTuner YAML (docs/DESIGN.md §3.7): "L:\n  nbits_key: K\n  nbits_value: V\n" for every layer,
// then "  rotate: true\n" for each layer with rotate[l] set (NULL: none; §3.10), the key
// load_kvconfig reads. Returns 0, or -1 (errno set) if the file cannot be written.
int tune_write_yaml(const char *path, const KVBits *kv, const uint8_t *rotate, int n_layers);

// SVG pictures (our own, dependency-free). Heatmap: layers x 9 pairs, colour = log10 err,
// pruned pairs crossed out, group index per row. Front: average bits vs error (log axis).
int tune_write_heatmap_svg(const char *path, const SensTable *t, const unsigned char *keep,
                           const Clustering *c, const char *title);

typedef struct {
    const char *label;   // "KV4", "tuned 3.25", ...
    double bits;         // average bits
    double pred;         // predicted error (< 0: none)
    double meas;         // measured KL (< 0: none)
    int uniform;         // 1 = a uniform configuration, 0 = a tuned front point
} PlotPoint;
int tune_write_front_svg(const char *path, const PlotPoint *pts, int n, const char *title);

#endif
