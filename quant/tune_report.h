// tune_report.h: what `run -m tune` measured, and the writer of its --out directory
// (internal to quant/tune*.c).
#ifndef KVT_TUNE_REPORT_H
#define KVT_TUNE_REPORT_H

#include "tuner.h"

typedef struct {
    char label[32];        // "tuned-3.250" or the uniform pair's name ("KV4")
    int uniform;           // 1: every layer at one pair
    KVBits *kv;            // [n_layers]
    double avg_bits;       // mean over layers of (k + v) / 2
    double bits_per_elem;  // measured: cache bytes * 8 / elements, scales and fp16 window included
    double pred;           // predicted KL: sum of the single-layer KLs (calibration text)
    double cal_kl;         // measured KL with all its layers quantized, calibration text (the
                           //   search's choice among candidates)
    double kl, top1;       // measured on the held-back text
    int on_front;          // set by the writer: not dominated by another verified tuned point
} TunePoint;

typedef struct {
    const char *preset, *out_dir;
    int n_layers, tokens;
    double max_bits;
    const SensTable *tab;
    const unsigned char *keep;
    const Clustering *cl;
    TunePoint *pts;        // tuned points (by increasing bits), then the uniform ones
    int n_pts;
    int refine_m;          // candidates measured jointly per budget
    double t_sens, t_refine, t_verify;
} TuneReport;

// Mark the verified front, write <out>/<preset>-<bits>.yaml for each of its points,
// results.md, heatmap.svg and front.svg. Returns the number of front points; fatal if a file
// cannot be written.
int tune_write_report(TuneReport *r);

#endif
