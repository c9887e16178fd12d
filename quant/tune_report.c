// tune_report.c: the files of `run -m tune --out DIR`: one KVTuner YAML per budget (loadable
// with --kv-config), results.md (in-domain and out-of-domain KL side by side with the uniform
// configurations), heatmap.svg, front.svg.
#include "tune_report.h"
#include "../util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Mean held-back KL over the calibration kinds.
static double in_domain(const TuneReport *r, const TunePoint *p) {
    double s = 0;
    for (int k = 0; k < r->n_cal; k++) s += p->kl[k];
    return s / r->n_cal;
}

static int has_verify(const TuneReport *r) { return r->n_kinds > r->n_cal; }

// The uniform point with the least held-back KL on kind k among those with no more average
// bits than `bits` (NULL if none).
const TunePoint *tune_best_uniform(const TunePoint *pts, int n, double bits, int k) {
    const TunePoint *b = NULL;
    for (int i = 0; i < n; i++) {
        const TunePoint *u = &pts[i];
        if (u->uniform && u->avg_bits <= bits + 1e-9 && (!b || u->kl[k] < b->kl[k])) b = u;
    }
    return b;
}

static const TunePoint *best_uniform(const TuneReport *r, double bits, int k) {
    return tune_best_uniform(r->pts, r->n_pts, bits, k);
}

static int n_rotated(const TuneReport *r) {
    int n = 0;
    for (int l = 0; r->rotate && l < r->n_layers; l++) n += r->rotate[l] != 0;
    return n;
}

static void write_header(FILE *f, const TuneReport *r) {
    int rot = n_rotated(r);
    fprintf(f, "# KVTuner search: %s preset%s\n\n", r->preset, rot ? ", rotated cache" : "");
    if (rot)
        fprintf(f, "The cache was Hadamard-rotated (`--kv-rotate`, docs/DESIGN.md §3.10) on %d of %d layers in every "
                   "measurement: sensitivity, joint search, the uniform configurations and verification. The configs "
                   "written say `rotate: true` on those layers.\n\n", rot, r->n_layers);
    fprintf(f, "Calibration: %d kind%s of text, %d tokens of each from the first half of its file (", r->n_cal,
            r->n_cal > 1 ? "s" : "", r->tokens);
    for (int k = 0; k < r->n_cal; k++) fprintf(f, "%s`%s`", k ? ", " : "", r->kinds[k].path);
    fprintf(f, "). Verification: %d held-back tokens of each kind (the second half of its file)", r->tokens);
    if (has_verify(r))
        fprintf(f, " and the first %d tokens of `%s`, a kind the tuner did not calibrate on (`--verify`)", r->tokens,
                r->kinds[r->n_cal].path);
    fprintf(f, ". %d layers, %d layer groups (RMS log-error spread %.3f), cap %.3g average bits.\n\n", r->n_layers,
            r->cl->n_groups, r->cl->spread, r->max_bits);
    fprintf(f, "At each half-bit budget the search measures, with all layers quantized on every kind's calibration "
               "text, the uniform configurations within the budget, the previous budget's choice and the %d "
               "least-error assignments of the additive model, and keeps the one with the least *worst-kind ratio*: "
               "max over kinds of its KL over the least KL of a uniform configuration within the budget on that "
               "kind (docs/DESIGN.md §6.1). Below 1 it beats every such uniform configuration on every kind.\n\n",
            r->refine_m);
    fprintf(f, "Time (wall, and CPU over all threads): sensitivity %.0f s, CPU %.0f s (on the first %d tokens of each "
               "kind: %d KL runs; %d pairs off their layer's attention-error front estimated); joint search %.0f s, CPU "
               "%.0f s (%d configurations, %d runs of one kind, %d candidates stopped early); verification %.0f s, CPU "
               "%.0f s.\n\n",
            r->t_sens, r->c_sens, r->sens_tokens, r->n_tail, r->n_skipped, r->t_refine, r->c_refine, r->n_configs,
            r->n_runs, r->n_cut, r->t_verify, r->c_verify);
}

// Held-back KL of every point on every kind, in-domain mean and out-of-domain side by side.
static void write_kl_table(FILE *f, const TuneReport *r) {
    fprintf(f, "## Held-back KL(fp16 || quantized): in-domain and out-of-domain\n\n");
    fprintf(f, "| config | avg bits | bits/elem | calibration worst ratio |");
    for (int k = 0; k < r->n_cal; k++) fprintf(f, " %s |", r->kinds[k].name);
    fprintf(f, " in-domain mean |");
    if (has_verify(r)) fprintf(f, " **%s** (not calibrated on) | its top-1 |", r->kinds[r->n_cal].name);
    fprintf(f, "\n|---|---:|---:|---:|");
    for (int k = 0; k < r->n_kinds + 1 + has_verify(r); k++) fprintf(f, "---:|");
    fprintf(f, "\n");
    for (int i = 0; i < r->n_pts; i++) {
        const TunePoint *p = &r->pts[i];
        fprintf(f, "| %s%s | %.3f | %.3f | ", p->label, p->same_as >= 0 ? " (same)" : "", p->avg_bits, p->bits_per_elem);
        if (p->uniform) fprintf(f, "- |");
        else fprintf(f, "%.3f |", p->worst);
        for (int k = 0; k < r->n_cal; k++) fprintf(f, " %.4g |", p->kl[k]);
        fprintf(f, " %.4g |", in_domain(r, p));
        if (has_verify(r)) fprintf(f, " **%.4g** | %.2f%% |", p->kl[r->n_cal], 100 * p->top1[r->n_cal]);
        fprintf(f, "\n");
    }
    fprintf(f, "\n(same): the same configuration as a cheaper budget's. Calibration worst ratio: the objective the "
               "search chose by (on calibration text, not the held-back text shown).");
    if (r->uniform_skipped[0])
        fprintf(f, " Not measured: %s, whose predicted KL is at least %g times that of a uniform configuration with "
                   "no more bits on every kind.", r->uniform_skipped, TUNE_UNIFORM_FAR);
    fprintf(f, "\n\n");
}

// The claim: each budget's tuned point against the best uniform configuration with no more bits,
// separately on every text.
static void write_claim(FILE *f, const TuneReport *r) {
    fprintf(f, "## Each budget's tuned point against every uniform configuration with no more bits\n\n");
    fprintf(f, "Ratio: the tuned point's held-back KL over the least KL of any uniform configuration with no more "
               "average bits, on the same text (below 1: the tuned point beats them all). A mixed point that the "
               "held-back text of some calibration kind did not confirm (a ratio below %g on every kind) gave way to "
               "the uniform configuration the "
               "search keeps without mixed candidates (docs/DESIGN.md §6.1); its in-domain columns then show how the "
               "mixed point did.\n\n", TUNE_CONFIRM_MARGIN);
    fprintf(f, "| budget | tuned | its bits | in-domain kinds won | worst in-domain ratio |");
    if (has_verify(r)) fprintf(f, " best uniform on %s | its KL | tuned KL | ratio | verdict |", r->kinds[r->n_cal].name);
    fprintf(f, "\n|---:|---|---:|---:|---:|");
    if (has_verify(r)) fprintf(f, "---|---:|---:|---:|---|");
    fprintf(f, "\n");
    for (int i = 0; i < r->n_pts; i++) {
        const TunePoint *p = &r->pts[i];
        if (p->uniform) continue;
        fprintf(f, "| %.1f | %s | %.3f | %s%d of %d | %.3f |", p->budget, p->label, p->avg_bits,
                p->fell_back ? "mixed point: " : "", p->held_won, r->n_cal, p->held_worst);
        if (has_verify(r)) {
            int k = r->n_cal;
            const TunePoint *u = best_uniform(r, p->budget, k);
            double q = p->kl[k] / u->kl[k];
            int same = !memcmp(u->kv, p->kv, (size_t)r->n_layers * sizeof(KVBits));
            fprintf(f, " %s | %.4g | %.4g | %.3f | %s |", u->label, u->kl[k], p->kl[k], q,
                    p->fell_back ? "is that uniform config (mixed point not confirmed)"
                    : same ? "is that uniform config" : q < 1 ? "**tuned beats all**" : "uniform better");
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\n");
}

// What the joint search saw: each budget's mixed candidates, their ratio to the best uniform
// configuration on each kind's calibration text, and which one it kept.
static void write_search(FILE *f, const TuneReport *r) {
    fprintf(f, "## Joint search: the mixed candidates of each budget (calibration text)\n\n");
    fprintf(f, "Ratio: KL over the least KL of a uniform configuration within the budget, on that kind. A "
               "candidate is measured kind by kind, the kinds where the current best is weakest first, and stopped "
               "(·) once one kind reaches the current best's worst ratio. When no candidate's worst ratio is below "
               "1, the best uniform configuration is kept. Predicted: the worst ratio under the additive model, "
               "which ranked the proposals.\n\n| budget | candidate | bits | predicted |");
    for (int k = 0; k < r->n_cal; k++) fprintf(f, " %s |", r->kinds[k].name);
    fprintf(f, " worst | kept |\n|---:|---|---:|---:|");
    for (int k = 0; k < r->n_cal + 2; k++) fprintf(f, "---:|");
    fprintf(f, "\n");
    for (int b = 0; b < r->n_budgets; b++) {
        const BudgetLog *g = &r->log[b];
        if (g->n == 0) {
            fprintf(f, "| %.1f | (none) | | |", g->budget);
            for (int k = 0; k < r->n_cal + 1; k++) fprintf(f, " |");
            fprintf(f, " (a uniform config) |\n");
        }
        for (int i = 0; i < g->n; i++) {
            fprintf(f, "| %.1f | %s | %.3f | %.3f |", g->budget, g->what[i], g->bits[i], g->predicted[i]);
            double w = 0;
            for (int k = 0; k < r->n_cal; k++) {
                if (isnan(g->kl[i][k])) { fprintf(f, " · |"); w = NAN; continue; }
                double q = g->kl[i][k] / g->ref[k];
                fprintf(f, " %.3f |", q);
                if (q > w) w = q;
            }
            if (isnan(w)) fprintf(f, " stopped |");
            else fprintf(f, " %.3f |", w);
            fprintf(f, " %s |\n", g->kept == i ? "**yes**" : i == g->n - 1 && g->kept < 0 ? "(a uniform config)" : "");
        }
    }
    fprintf(f, "\n");
}

static void write_layers(FILE *f, const TuneReport *r) {
    fprintf(f, "## Per-layer pairs of the tuned points\n\n| layer | group |");
    for (int i = 0; i < r->n_pts; i++)
        if (!r->pts[i].uniform && r->pts[i].same_as < 0) fprintf(f, " %.1f |", r->pts[i].budget);
    fprintf(f, "\n|---:|---:|");
    for (int i = 0; i < r->n_pts; i++) if (!r->pts[i].uniform && r->pts[i].same_as < 0) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int l = 0; l < r->n_layers; l++) {
        fprintf(f, "| %d | %d |", l, r->cl->group_of[l]);
        for (int i = 0; i < r->n_pts; i++)
            if (!r->pts[i].uniform && r->pts[i].same_as < 0)
                fprintf(f, " %s |", tune_pair_name(tune_pair_index(r->pts[i].kv[l].k_bits, r->pts[i].kv[l].v_bits)));
        fprintf(f, "\n");
    }
    fprintf(f, "\n## Sensitivity the search used: KL with only this layer quantized, kinds combined (attention-output "
               "relative error in brackets)\n\n| layer |");
    for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, " %s |", tune_pair_name(p));
    fprintf(f, "\n|---:|");
    for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int l = 0; l < r->n_layers; l++) {
        fprintf(f, "| %d |", l);
        for (int p = 0; p < TUNE_NPAIRS; p++) {
            int kept = r->keep[(size_t)l * TUNE_NPAIRS + p];
            fprintf(f, " %s%s%.3g (%.3g)%s |", kept ? "**" : "", sens_tail(r->tab, l)[p] ? "" : "~", sens_err(r->tab, l)[p],
                    sens_aux(r->tab, l)[p], kept ? "**" : "");
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\nBold: kept by intra-layer Pareto pruning. ~: estimated from the attention error in at least one kind "
               "(docs/DESIGN.md §6.2). Each kind's own table is in `sensitivity.tsv`.\n");
}

static void write_markdown(const TuneReport *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));
    write_header(f, r);
    write_kl_table(f, r);
    write_claim(f, r);
    write_search(f, r);
    write_layers(f, r);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) fatal("--out %s: error writing %s", r->out_dir, path);
}

void tune_write_report(const TuneReport *r) {
    char path[4096];
    for (int i = 0; i < r->n_pts; i++) {
        if (r->pts[i].uniform) continue;
        snprintf(path, sizeof path, "%s/%s-%.1f.yaml", r->out_dir, r->preset, r->pts[i].budget);
        if (tune_write_yaml(path, r->pts[i].kv, r->rotate, r->n_layers) != 0)
            fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/results.md", r->out_dir);
    write_markdown(r, path);

    char title[200];
    snprintf(title, sizeof title, "Sensitivity (KL, only this layer quantized, kinds combined), %s preset%s", r->preset,
             n_rotated(r) ? ", rotated" : "");
    snprintf(path, sizeof path, "%s/heatmap.svg", r->out_dir);
    if (tune_write_heatmap_svg(path, r->tab, r->keep, r->cl, title) != 0)
        fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));

    // the front: measured on the --verify text when there is one, else the in-domain mean
    PlotPoint *pp = xcalloc((size_t)r->n_pts, sizeof(PlotPoint));
    int n = 0;
    for (int i = 0; i < r->n_pts; i++) {
        const TunePoint *p = &r->pts[i];
        if (p->same_as >= 0) continue;
        double meas = has_verify(r) ? p->kl[r->n_cal] : in_domain(r, p);
        pp[n++] = (PlotPoint){p->label, p->avg_bits, p->uniform ? -1 : p->pred, meas, p->uniform};
    }
    if (has_verify(r))
        snprintf(title, sizeof title, "Tuned vs uniform, %s preset%s: KL on %s (not calibrated on)", r->preset,
                 n_rotated(r) ? ", rotated" : "", r->kinds[r->n_cal].name);
    else
        snprintf(title, sizeof title, "Tuned vs uniform, %s preset%s: held-back KL, mean over kinds", r->preset,
                 n_rotated(r) ? ", rotated" : "");
    snprintf(path, sizeof path, "%s/front.svg", r->out_dir);
    if (tune_write_front_svg(path, pp, n, title) != 0)
        fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));
    free(pp);
}
