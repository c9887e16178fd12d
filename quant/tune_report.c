// tune_report.c: the verified front and the files of `run -m tune --out DIR`: one KVTuner
// YAML per front point (loadable with --kv-config), results.md, heatmap.svg, front.svg.
#include "tune_report.h"
#include "../util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// A tuned point is on the verified front if no other verified tuned point has no more bits
// and no more measured KL with one of them strictly smaller.
static void mark_front(TunePoint *p, int n) {
    for (int i = 0; i < n; i++) {
        if (p[i].uniform) continue;
        p[i].on_front = 1;
        for (int j = 0; j < n && p[i].on_front; j++) {
            if (j == i || p[j].uniform) continue;
            if (p[j].avg_bits <= p[i].avg_bits && p[j].kl <= p[i].kl && (p[j].avg_bits < p[i].avg_bits || p[j].kl < p[i].kl))
                p[i].on_front = 0;
        }
    }
}

static void yaml_name(char *buf, size_t n, const TuneReport *r, const TunePoint *p) {
    snprintf(buf, n, "%s/%s-%.3f.yaml", r->out_dir, r->preset, p->avg_bits);
}

// The best verified front point with no more bits than uniform config u (NULL if none).
static const TunePoint *best_at_or_below(const TuneReport *r, const TunePoint *u) {
    const TunePoint *best = NULL;
    for (int i = 0; i < r->n_pts; i++) {
        const TunePoint *p = &r->pts[i];
        if (!p->uniform && p->on_front && p->avg_bits <= u->avg_bits + 1e-9 && (!best || p->kl < best->kl)) best = p;
    }
    return best;
}

static void write_markdown(const TuneReport *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));
    fprintf(f, "# KVTuner search: %s preset\n\n", r->preset);
    fprintf(f, "%d layers; sensitivity from %d calibration tokens (first half of the text), verification on %d "
               "held-back tokens (second half); cap %.3g average bits; %d layer groups (RMS log-error spread %.3f).\n"
               "Each tuned point is, for its half-bit budget, the best of the %d least-error assignments of the additive "
               "model and the uniform configurations that fit, measured jointly on the calibration text.\n"
               "Sensitivity %.0f s, joint search %.0f s, verification %.0f s.\n\n",
            r->n_layers, r->tokens, r->tokens, r->max_bits, r->cl->n_groups, r->cl->spread, r->refine_m, r->t_sens,
            r->t_refine, r->t_verify);
    fprintf(f, "| config | avg bits (k+v)/2 | bits/elem incl. scales | predicted KL | calibration KL | held-back KL | top-1 | front |\n");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|:-:|\n");
    for (int i = 0; i < r->n_pts; i++) {
        const TunePoint *p = &r->pts[i];
        fprintf(f, "| %s | %.3f | %.3f | %.4g | %.4g | %.4g | %.2f%% | %s |\n", p->label, p->avg_bits, p->bits_per_elem,
                p->pred, p->cal_kl, p->kl, 100 * p->top1, p->uniform ? "uniform" : p->on_front ? "yes" : "no");
    }
    fprintf(f, "\nPredicted: sum of single-layer KLs; calibration: all layers quantized, calibration text (what the search "
               "chose by); held-back: all layers quantized, text the search never saw.\n\n");
    fprintf(f, "\n## Tuned front against the uniform configurations (measured, held-back text)\n\n");
    fprintf(f, "| uniform | avg bits | KL | best tuned at <= bits | its bits | its KL | verdict |\n|---|---:|---:|---|---:|---:|---|\n");
    for (int i = 0; i < r->n_pts; i++) {
        const TunePoint *u = &r->pts[i];
        if (!u->uniform) continue;
        const TunePoint *b = best_at_or_below(r, u);
        const char *verdict = !b ? "no tuned point" : b->kl < u->kl ? "tuned dominates"
                            : b->kl == u->kl ? "equal" : "uniform better";
        fprintf(f, "| %s | %.2f | %.4g | %s | %.3f | %.4g | %s |\n", u->label, u->avg_bits, u->kl, b ? b->label : "-",
                b ? b->avg_bits : 0.0, b ? b->kl : 0.0, verdict);
    }
    fprintf(f, "\n(At 2.0 bits the only configuration is KV2 everywhere, so there the front can at best equal KV2.)\n");
    fprintf(f, "\n## Per-layer pairs of the front points\n\n| layer | group |");
    for (int i = 0; i < r->n_pts; i++) if (r->pts[i].on_front) fprintf(f, " %.2f |", r->pts[i].avg_bits);
    fprintf(f, "\n|---:|---:|");
    for (int i = 0; i < r->n_pts; i++) if (r->pts[i].on_front) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int l = 0; l < r->n_layers; l++) {
        fprintf(f, "| %d | %d |", l, r->cl->group_of[l]);
        for (int i = 0; i < r->n_pts; i++)
            if (r->pts[i].on_front) fprintf(f, " %s |", tune_pair_name(tune_pair_index(r->pts[i].kv[l].k_bits, r->pts[i].kv[l].v_bits)));
        fprintf(f, "\n");
    }
    fprintf(f, "\n## Sensitivity: KL with only this layer quantized (attention-output relative error in brackets)\n\n| layer |");
    for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, " %s |", tune_pair_name(p));
    fprintf(f, "\n|---:|");
    for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int l = 0; l < r->n_layers; l++) {
        fprintf(f, "| %d |", l);
        for (int p = 0; p < TUNE_NPAIRS; p++)
            fprintf(f, " %s%.3g (%.3g)%s |", r->keep[(size_t)l * TUNE_NPAIRS + p] ? "**" : "", sens_err(r->tab, l)[p],
                    sens_aux(r->tab, l)[p], r->keep[(size_t)l * TUNE_NPAIRS + p] ? "**" : "");
        fprintf(f, "\n");
    }
    fprintf(f, "\nBold: kept by intra-layer Pareto pruning.\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) fatal("--out %s: error writing %s", r->out_dir, path);
}

int tune_write_report(TuneReport *r) {
    char path[4096];
    mark_front(r->pts, r->n_pts);
    int n_front = 0;
    for (int i = 0; i < r->n_pts; i++) {
        if (!r->pts[i].on_front) continue;
        n_front++;
        yaml_name(path, sizeof path, r, &r->pts[i]);
        if (tune_write_yaml(path, r->pts[i].kv, r->n_layers) != 0)
            fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/results.md", r->out_dir);
    write_markdown(r, path);

    char title[160];
    snprintf(title, sizeof title, "Sensitivity (KL, only this layer quantized), %s preset", r->preset);
    snprintf(path, sizeof path, "%s/heatmap.svg", r->out_dir);
    if (tune_write_heatmap_svg(path, r->tab, r->keep, r->cl, title) != 0)
        fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));

    PlotPoint *pp = xcalloc((size_t)r->n_pts, sizeof(PlotPoint));
    int n = 0;
    for (int i = 0; i < r->n_pts; i++) {
        const TunePoint *p = &r->pts[i];
        if (!p->uniform && !p->on_front) continue;
        pp[n++] = (PlotPoint){p->label, p->avg_bits, p->uniform ? -1 : p->pred, p->kl, p->uniform};
    }
    snprintf(title, sizeof title, "Tuned front vs uniform, %s preset (held-back KL)", r->preset);
    snprintf(path, sizeof path, "%s/front.svg", r->out_dir);
    if (tune_write_front_svg(path, pp, n, title) != 0)
        fatal("--out %s: cannot write %s: %s", r->out_dir, path, strerror(errno));
    free(pp);
    return n_front;
}
