// svgplot.c: see svgplot.h.
#include "svgplot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

static const char *PALETTE[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                "#7f7f7f", "#bcbd22", "#17becf"};
#define N_PALETTE 10

typedef struct { double lo, hi; int log2, log10; double x0, len; int flip; } Axis;

static int usable(const SvgPlot *p, double x, double y) {
    return isfinite(x) && isfinite(y) && (!p->log2_x || x > 0) && (!p->log10_y || y > 0);
}

static double tr(const Axis *a, double v) {      // data -> axis coordinate
    return a->log2 ? log2(v) : a->log10 ? log10(v) : v;
}

static double px(const Axis *a, double v) {      // data -> pixel
    double f = (tr(a, v) - a->lo) / (a->hi - a->lo);
    return a->flip ? a->x0 + (1 - f) * a->len : a->x0 + f * a->len;
}

// Range of the axis (in transformed units), padded; whole powers for log axes.
static void fit_axis(Axis *a, double lo, double hi) {
    if (!(lo <= hi)) { lo = 0; hi = 1; }
    if (a->log10) { lo = floor(lo); hi = ceil(hi); if (hi <= lo) hi = lo + 1; }
    else if (a->log2) { lo -= 0.3; hi += 0.3; }      // powers of two: keep end points off the frame
    else {
        double pad = (hi - lo) * 0.08;
        if (pad == 0) pad = fabs(hi) > 0 ? fabs(hi) * 0.1 : 1;
        lo -= pad; hi += pad;
    }
    a->lo = lo; a->hi = hi;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about 6 ticks.
static double nice_step(double span) {
    double raw = span / 6, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void ticks(FILE *f, const Axis *a, int is_x, double other0, double other1) {
    double step = (a->log2 || a->log10) ? 1 : nice_step(a->hi - a->lo);
    for (double t = ceil(a->lo / step) * step; t <= a->hi + 1e-9 * step; t += step) {
        double v = a->log2 ? exp2(t) : a->log10 ? pow(10, t) : t, q = px(a, v);
        char lab[32];
        if (a->log10) snprintf(lab, sizeof lab, "1e%d", (int)lround(t));
        else snprintf(lab, sizeof lab, "%g", fabs(v) < 1e-12 ? 0.0 : v);
        if (is_x)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\" "
                       "text-anchor=\"middle\">%s</text>\n", q, other0, q, other1, q, other1 + 15, lab);
        else
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\" "
                       "text-anchor=\"end\">%s</text>\n", other0, q, other1, q, other0 - 5, q + 4, lab);
    }
}

int svgplot_write(const char *path, const SvgPlot *p, const SvgSeries *s, int n_series) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int W = p->width ? p->width : 720, H = p->height ? p->height : 460;
    const double ml = 70, mr = 150, mt = 40, mb = 50;
    Axis ax = {.log2 = p->log2_x, .x0 = ml, .len = W - ml - mr};
    Axis ay = {.log10 = p->log10_y, .x0 = mt, .len = H - mt - mb, .flip = 1};
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int k = 0; k < n_series; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!usable(p, s[k].x[i], s[k].y[i])) continue;
            double x = tr(&ax, s[k].x[i]), y = tr(&ay, s[k].y[i]);
            xlo = fmin(xlo, x); xhi = fmax(xhi, x); ylo = fmin(ylo, y); yhi = fmax(yhi, y);
        }
    fit_axis(&ax, xlo, xhi);
    fit_axis(&ay, ylo, yhi);
    double x1 = ml + ax.len, y1 = mt + ay.len;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"14\">%s</text>\n", ml, p->title ? p->title : "");
    ticks(f, &ax, 1, mt, y1);
    ticks(f, &ay, 0, ml, x1);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"black\"/>\n", ml, mt, ax.len, ay.len);
    fprintf(f, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", ml + ax.len / 2, H - 12, p->xlabel ? p->xlabel : "");
    fprintf(f, "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" text-anchor=\"middle\">%s</text>\n",
            mt + ay.len / 2, mt + ay.len / 2, p->ylabel ? p->ylabel : "");
    for (int k = 0; k < n_series; k++) {
        const char *col = PALETTE[k % N_PALETTE];
        if (s[k].line) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
            for (int i = 0; i < s[k].n; i++)
                if (usable(p, s[k].x[i], s[k].y[i])) fprintf(f, "%.1f,%.1f ", px(&ax, s[k].x[i]), px(&ay, s[k].y[i]));
            fprintf(f, "\"/>\n");
        }
        for (int i = 0; i < s[k].n; i++) {
            if (!usable(p, s[k].x[i], s[k].y[i])) continue;
            double cx = px(&ax, s[k].x[i]), cy = px(&ay, s[k].y[i]);
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s: (%g, %g)</title></circle>\n", cx, cy,
                    col, s[k].label ? s[k].label : "", s[k].x[i], s[k].y[i]);
            if (s[k].point_labels && s[k].point_labels[i])
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s</text>\n", cx + 6, k % 2 ? cy + 14 : cy - 5, col,
                        s[k].point_labels[i]);   // alternate series label below, to collide less
        }
        double ly = mt + 10 + 18 * k, lx = x1 + 12;       // legend
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2\"/>"
                   "<circle cx=\"%.0f\" cy=\"%.0f\" r=\"3.5\" fill=\"%s\"/><text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                lx, ly, lx + 20, ly, col, lx + 10, ly, col, lx + 26, ly + 4, s[k].label ? s[k].label : "");
    }
    fprintf(f, "</svg>\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) { if (!errno) errno = EIO; return -1; }
    return 0;
}
