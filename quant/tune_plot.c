// tune_plot.c: the tuner's outputs written by our own code: KVTuner YAML configs and two SVG
// pictures (sensitivity heatmap, Pareto front). Plain fprintf, no dependencies.
#include "tuner.h"
#include "../util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

int tune_write_yaml(const char *path, const KVBits *kv, const uint8_t *rotate, int n_layers) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (int l = 0; l < n_layers; l++) {
        fprintf(f, "%d:\n  nbits_key: %d\n  nbits_value: %d\n", l, kv[l].k_bits, kv[l].v_bits);
        // the bits were chosen for a rotated layer: loaded without it they would be wrong
        if (rotate && rotate[l]) fprintf(f, "  rotate: true\n");
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) { if (!errno) errno = EIO; return -1; }
    return 0;
}

// A perceptual-ish colour ramp (dark blue -> yellow) for t in [0, 1].
static void ramp(double t, int *r, int *g, int *b) {
    static const double stops[5][3] = {{13, 8, 135}, {126, 3, 168}, {204, 71, 120}, {248, 149, 64}, {240, 249, 33}};
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 4;
    int i = (int)x;
    if (i > 3) i = 3;
    double f = x - i;
    *r = (int)lround(stops[i][0] + f * (stops[i + 1][0] - stops[i][0]));
    *g = (int)lround(stops[i][1] + f * (stops[i + 1][1] - stops[i][1]));
    *b = (int)lround(stops[i][2] + f * (stops[i + 1][2] - stops[i][2]));
}

static double lg(double e) { return log10(e > TUNE_ERR_FLOOR ? e : TUNE_ERR_FLOOR); }

static int finish(FILE *f) {
    fprintf(f, "</svg>\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) { if (!errno) errno = EIO; return -1; }
    return 0;
}

int tune_write_heatmap_svg(const char *path, const SensTable *t, const unsigned char *keep,
                           const Clustering *c, const char *title) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    const int cw = 46, ch = 16, x0 = 70, y0 = 60;
    int L = t->n_layers, W = x0 + TUNE_NPAIRS * cw + 140, H = y0 + (L * ch > 11 * 14 ? L * ch : 11 * 14) + 40;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < (size_t)L * TUNE_NPAIRS; i++) {
        double v = lg(t->err[i]);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (hi - lo < 1e-12) hi = lo + 1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"20\" font-size=\"14\">%s</text>\n", x0, title);
    fprintf(f, "<text x=\"%d\" y=\"38\">colour: log10 error; crossed: pruned (dominated); g: layer group</text>\n", x0);
    for (int p = 0; p < TUNE_NPAIRS; p++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x0 + p * cw + cw / 2, y0 - 6, tune_pair_name(p));
    for (int l = 0; l < L; l++) {
        int y = y0 + l * ch;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">L%d g%d</text>\n", x0 - 6, y + ch - 4, l, c ? c->group_of[l] : 0);
        for (int p = 0; p < TUNE_NPAIRS; p++) {
            int r, g, b, x = x0 + p * cw;
            ramp((lg(sens_err(t, l)[p]) - lo) / (hi - lo), &r, &g, &b);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\"><title>layer %d %s: %.4g</title></rect>\n",
                    x, y, cw, ch, r, g, b, l, tune_pair_name(p), sens_err(t, l)[p]);
            if (keep && !keep[(size_t)l * TUNE_NPAIRS + p])
                fprintf(f, "<path d=\"M%d %dL%d %dM%d %dL%d %d\" stroke=\"white\" stroke-width=\"1\"/>\n",
                        x + 4, y + 3, x + cw - 4, y + ch - 3, x + 4, y + ch - 3, x + cw - 4, y + 3);
        }
    }
    int lx = x0 + TUNE_NPAIRS * cw + 30;            // legend
    for (int i = 0; i <= 10; i++) {
        int r, g, b;
        ramp(1 - i / 10.0, &r, &g, &b);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"16\" height=\"%d\" fill=\"rgb(%d,%d,%d)\"/>\n", lx, y0 + i * 14, 14, r, g, b);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\">%.2g</text>\n", lx + 20, y0 + 10, pow(10, hi));
    fprintf(f, "<text x=\"%d\" y=\"%d\">%.2g</text>\n", lx + 20, y0 + 10 * 14 + 10, pow(10, lo));
    return finish(f);
}

int tune_write_front_svg(const char *path, const PlotPoint *pts, int n, const char *title) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    const int W = 640, H = 440, ml = 70, mr = 130, mt = 40, mb = 50;
    double xlo = 2, xhi = 8, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; i < n; i++) {
        double v[2] = {pts[i].pred, pts[i].meas};
        for (int j = 0; j < 2; j++) {
            if (!(v[j] > 0)) continue;
            if (lg(v[j]) < ylo) ylo = lg(v[j]);
            if (lg(v[j]) > yhi) yhi = lg(v[j]);
        }
    }
    if (ylo == INFINITY) { ylo = -3; yhi = 0; }
    ylo = floor(ylo); yhi = ceil(yhi);
    if (yhi <= ylo) yhi = ylo + 1;
    double pw = W - ml - mr, ph = H - mt - mb;
#define PX(b) (ml + ((b) - xlo) / (xhi - xlo) * pw)
#define PY(e) (mt + (yhi - lg(e)) / (yhi - ylo) * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"22\" font-size=\"14\">%s</text>\n", ml, title);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"black\"/>\n", ml, mt, pw, ph);
    for (int b = 2; b <= 8; b++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n",
                PX(b), mt, PX(b), mt + ph, PX(b), mt + ph + 15, b);
    for (int e = (int)ylo; e <= (int)yhi; e++)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n",
                ml, PY(pow(10, e)), ml + pw, PY(pow(10, e)), ml - 5, PY(pow(10, e)) + 4, e);
    fprintf(f, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">average bits (k+v)/2</text>\n", ml + pw / 2, H - 12);
    fprintf(f, "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" text-anchor=\"middle\">KL(fp16 || quantized)</text>\n", mt + ph / 2, mt + ph / 2);
    // the tuned front: a polyline through measured points (predicted as hollow circles)
    for (int which = 0; which < 2; which++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" %s points=\"",
                which ? "#1f77b4" : "#9ecae1", which ? "2" : "1", which ? "" : "stroke-dasharray=\"4 3\"");
        for (int i = 0; i < n; i++) {
            double v = which ? pts[i].meas : pts[i].pred;
            if (!pts[i].uniform && v > 0) fprintf(f, "%.1f,%.1f ", PX(pts[i].bits), PY(v));
        }
        fprintf(f, "\"/>\n");
    }
    for (int i = 0; i < n; i++) {
        const PlotPoint *p = &pts[i];
        if (!p->uniform) {
            if (p->pred > 0) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"white\" stroke=\"#9ecae1\"/>\n", PX(p->bits), PY(p->pred));
            if (p->meas > 0) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#1f77b4\"><title>%s: %.4g</title></circle>\n", PX(p->bits), PY(p->meas), p->label, p->meas);
        } else if (p->meas > 0) {
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"#d62728\"/>", PX(p->bits) - 4, PY(p->meas) - 4);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#d62728\">%s</text>\n", PX(p->bits) + 6, PY(p->meas) - 5, p->label);
        }
    }
    int lx = W - mr + 10;
    fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"#1f77b4\"/><text x=\"%d\" y=\"%d\">tuned, measured</text>\n", lx, mt + 10, lx + 8, mt + 14);
    fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"white\" stroke=\"#9ecae1\"/><text x=\"%d\" y=\"%d\">tuned, predicted</text>\n", lx, mt + 28, lx + 8, mt + 32);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"8\" height=\"8\" fill=\"#d62728\"/><text x=\"%d\" y=\"%d\">uniform</text>\n", lx - 4, mt + 42, lx + 8, mt + 50);
#undef PX
#undef PY
    return finish(f);
}
