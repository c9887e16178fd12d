// tune_report.h: what `run -m tune` works on and measures (the kinds of text, the measured
// configurations) and the writer of its --out directory; internal to quant/tune*.c.
#ifndef KVT_TUNE_REPORT_H
#define KVT_TUNE_REPORT_H

#include "../model/model.h"
#include "tune.h"
#include "tuner.h"

// One kind of text: a calibration file of -f, or the --verify file.
typedef struct {
    char name[64];         // the file's base name without its extension: "tinyshakespeare"
    const char *path;
    int calibrated;        // 1: from -f (calibration + held back); 0: --verify (held back only)
    int *cal;              // [n] calibration token ids, from the first half (NULL for --verify)
    int *held;             // [n] held-back token ids: the second half (--verify: from the start)
    float *cal_base;       // [n-1][vocab] fp16 log-probs of cal, for the joint search
    SensTable tab;         // this kind's sensitivity (calibration kinds only)
} TuneKind;

typedef struct {
    char label[32];        // "tuned-3.5" (the budget it was chosen under) or "KV4"
    int uniform;           // 1: every layer at one pair
    double budget;         // tuned: the budget in average bits; uniform: its bits
    int same_as;           // tuned: index of the cheaper budget that chose the same config, or -1
    KVBits *kv;            // [n_layers]
    double avg_bits;       // mean over layers of (k + v) / 2
    double bits_per_elem;  // measured: cache bytes * 8 / elements, scales and fp16 window included
    double pred;           // predicted: sum of the layers' (combined) single-layer errors
    double cal[TUNE_MAX_KINDS];   // calibration KL per calibration kind (NAN: not measured)
    double worst, mean;    // tuned: worst and mean ratio to the best uniform within its budget
    double kl[TUNE_MAX_KINDS];    // held-back KL per kind (the --verify kind last)
    double top1[TUNE_MAX_KINDS];  // top-1 agreement with fp16, the same texts
    // tuned: how the search's choice did on held-back text of the calibration kinds, against
    // the best uniform configuration within the budget on each (confirm_points in tune.c)
    int held_won;          // kinds where it had the lesser KL
    double held_worst;     // its largest ratio
    int fell_back;         // 1: not confirmed, so the budget keeps a uniform configuration
} TunePoint;


// A uniform pair predicted this many times worse than a uniform pair with no more bits, on
// every kind, is neither measured nor verified (tune.c).
#define TUNE_UNIFORM_FAR 2.0

// A mixed point is confirmed on held-back text when its KL there is below this fraction of the
// best uniform configuration's on every calibration kind. Realizations of one quantized run
// differ by 2-3% in mean KL at 512 tokens (tests/golden/seed_kl/kl.tsv, kl_sd), about 4% at 256:
// a smaller margin is noise.
#define TUNE_CONFIRM_MARGIN 0.95

// One budget of the joint search as it was decided: the mixed candidates measured (the previous
// budget's choice and the additive model's best), for the report.
#define TUNE_LOG_CANDS (1 + 4)
typedef struct {
    double budget;
    double ref[TUNE_MAX_KINDS];           // the least uniform KL within the budget, per kind
    int n;
    char what[TUNE_LOG_CANDS][24];        // "previous", "additive 1", ...
    double bits[TUNE_LOG_CANDS];
    double predicted[TUNE_LOG_CANDS];     // predicted worst-kind ratio (the additive model)
    double kl[TUNE_LOG_CANDS][TUNE_MAX_KINDS];   // calibration KL per kind; NAN: not needed
    int kept;                             // index of the kept candidate, -1: a uniform one
} BudgetLog;

// The uniform point among pts[0..n) with no more than `bits` average bits and the least
// held-back KL on kind k.
const TunePoint *tune_best_uniform(const TunePoint *pts, int n, double bits, int k);

// Step 7 (tune.c): pts[0..n_tuned) are the budgets' points (blog[i] their search), the rest up
// to np the uniform ones, all verified on held-back text. A mixed point not below
// TUNE_CONFIRM_MARGIN times the best uniform configuration within its budget on every
// calibration kind's held-back text becomes
// the uniform configuration the search keeps without mixed candidates (fell_back = 1); held_won
// and held_worst record how it did. `same_as` is recomputed.
void tune_confirm_points(TunePoint *pts, int n_tuned, int np, int n_cal, int L, const BudgetLog *blog);

typedef struct {
    const char *preset, *out_dir;
    const uint8_t *rotate; // [n_layers] the layers whose cache was Hadamard-rotated (--kv-rotate,
                           //   docs/DESIGN.md §3.10) in every measurement; NULL: none
    int n_layers, tokens;  // tokens of each kind
    int sens_tokens;       // of which the sensitivity runs used the first
    double max_bits;
    const TuneKind *kinds; // [n_kinds]: the calibration kinds, then the --verify kind if any
    int n_kinds, n_cal;
    const SensTable *tab;  // the combined table the search used
    const unsigned char *keep;
    const Clustering *cl;
    TunePoint *pts;        // tuned points by increasing budget, then the uniform ones
    int n_pts;
    const BudgetLog *log;  // [n_budgets]
    int n_budgets;
    int refine_m;          // additive-model candidates per budget
    int n_tail, n_skipped; // sensitivity: KL runs done, pairs estimated from the attention error
    const char *uniform_skipped;   // uniform pairs predicted far worse than a cheaper one: "K2V4, K2V8"
    int n_configs, n_runs, n_cut;  // joint search: configurations, runs (one kind each), stopped early
    double t_sens, t_refine, t_verify;   // wall seconds of the three phases
    double c_sens, c_refine, c_verify;   // their CPU seconds (all threads)
} TuneReport;

// Write <out>/<preset>-<budget>.yaml for each tuned point, results.md, heatmap.svg and
// front.svg. Fatal if a file cannot be written.
void tune_write_report(const TuneReport *r);

// ---- tune_sens.c: step 1-2 and sensitivity.tsv ----
// The sensitivity runs use the first n / TUNE_SENS_SHARE of a kind's n calibration tokens (at
// least 16): the layer ranking they give is what the proposals need, and it holds at half the
// length (docs/DESIGN.md §6.2), while the joint search measures on all n. Like the other two
// shortcuts (tune_sens.c), it can be switched off at build time to measure what it costs.
#ifndef TUNE_SENS_SHARE
#define TUNE_SENS_SHARE 2
#endif
int tune_sens_tokens(int n);
// Record the fp16 pass over the first n tokens of k->cal and measure k->tab. Counts the KL
// runs done and the pairs estimated.
void tune_measure_kind(const Model *m, const KVSpec *grouping, TuneKind *k, int n, int progress, int *n_tail,
                       int *n_skipped);
// `rotated`: the cache was Hadamard-rotated on every layer (--kv-rotate); the table says so.
void tune_save_sensitivity(const char *path, const TuneKind *kinds, int n_cal, int n, const char *preset, int rotated);
// Fill kinds[k].tab for every calibration kind from a sensitivity.tsv (other kinds in it are
// ignored); fatal (naming the file and line) unless it has every layer 0..L-1 of every kind,
// measured on n tokens (tune_sens_tokens of this run's), with rotation iff `rotated`.
void tune_load_sensitivity(const char *path, TuneKind *kinds, int n_cal, int n, int L, int rotated);

#endif
