// tune.h: `run -m tune` — KVTuner's whole method on one model (docs/DESIGN.md §6):
// for each kind of calibration text, one fp16 pass records every layer's input and its Q/K/V,
// and each layer x pair (K, V) in {2,4,8}^2 is measured (layer-local attention error, and the
// end-to-end KL with only that layer quantized, run from the cached hidden states); pruning,
// clustering and the exact DP search (tuner.h) propose candidates; at every half-bit budget the
// candidates are measured on every kind and the one whose worst kind gains most over the uniform
// configurations is kept (§6.1); the chosen points are then measured on held-back text of every
// kind and of a kind never calibrated on (--verify), and written as KVTuner YAML, a markdown
// table and SVG plots.
#ifndef KVT_TUNE_H
#define KVT_TUNE_H

#include "../model/model.h"
#include "kvcache.h"
#include "tuner.h"

#define TUNE_MAX_KINDS 8     // calibration kinds, plus one --verify kind
#define TUNE_TOKENS 1024     // default calibration tokens, shared evenly among the kinds

typedef struct {
    const char *calib;     // -f: the calibration files, comma-separated, one kind of text each
                           //   (at most TUNE_MAX_KINDS - 1). Each file's first half calibrates,
                           //   the start of its second half is held back for verification
    const char *verify;    // --verify FILE: a kind of text never calibrated on; NULL = none
    const char *preset;    // name of the grouping preset, for the report ("pertoken", "kivi")
    int tokens;            // --tokens: tokens of each kind (calibration, and again held back);
                           //   0 = TUNE_TOKENS / (number of calibration files)
    double max_bits;       // --max-bits: cap on average bits (k+v)/2, in [2, 16]; default 16
    const char *out_dir;   // --out: created if missing; default "tune-out"
    int groups;            // --groups: 0 = the automatic rule (tuner.h)
    const char *sens_path; // --sensitivity FILE: reuse a sensitivity.tsv of an earlier run
                           //   (skips the sensitivity step, the expensive part); NULL = measure
    int progress;          // progress lines on stderr
} TuneOptions;

void tune_options_init(TuneOptions *o);
// Consume argv[i] (and its value) if it is a tuner flag (--max-bits, --out, --groups,
// --sensitivity, --verify):
// returns the number of arguments used, else 0. Bad values are fatal.
int tune_options_parse(TuneOptions *o, int argc, char **argv, int i);
const char *tune_options_usage(void);

// Run the tuner. `grouping` supplies the cache's grouping (group, residual, key axis,
// symmetric, sink); its bits are ignored. Returns 0; any bad input is fatal.
int run_tune(const Model *m, const KVSpec *grouping, const TuneOptions *o);

// ---- the model side (tune_forward.c) -----------------------------------------------------

// What the fp16 pass records over n calibration tokens (positions 0..n-1).
typedef struct {
    int n;
    float *x;      // [n_layers][n][dim] residual stream entering each layer
    float *q;      // [n_layers][n][n_heads*head_dim] queries after RoPE
    float *k, *v;  // [n_layers][n][n_kv_heads*head_dim] keys after RoPE, values
    float *logp;   // [n-1][vocab] log-probabilities of the fp16-cache model at positions
                   //   0..n-2 (the ones that predict a token of the text, as in eval.h)
} TuneRecord;

// The fp16 pass. s must hold n tokens (build_runstate(s, c, n, n)).
void tune_record(const Model *m, RunState *s, const int *ids, int n, TuneRecord *r);
void free_tunerecord(TuneRecord *r);

// Layer l's attention over the recorded Q/K/V through a one-layer cache of `grouping` with
// every KV head at `bits` (the real quantizer and kernel): out [n][n_heads*head_dim].
void tune_layer_attention(const Model *m, const KVSpec *grouping, KVBits bits, const TuneRecord *r, int l,
                          float *out);

// Finish the forward pass from layer l, given layer l's attention output; layers after l
// use the fp16 cache c16 (reset here). Returns the mean KL(fp16 || this) over positions
// 0, stride, 2*stride, ... <= n-2. With stride 1 that is what eval_layer_kl (model/eval.h)
// computes, without rerunning layers 0..l-1; a larger stride still runs every token through
// every layer (the same contexts) and only skips the classifier, a large share of the cost.
double tune_tail_kl(const Model *m, RunState *s, KVCache *c16, const TuneRecord *r, int l, const float *att_out,
                    int stride);

#endif
