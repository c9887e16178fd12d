// svgplot.h: a small line/scatter chart written as SVG with plain fprintf — enough for the
// benchmark figures (bench/report.c). Linear or log axes, several labelled series, a legend.
#ifndef KVT_SVGPLOT_H
#define KVT_SVGPLOT_H

typedef struct {
    const char *label;          // legend text
    const double *x, *y;        // [n] points; non-finite points (and y <= 0 on a log y axis) are skipped
    int n;
    const char **point_labels;  // [n] text beside each point, or NULL
    int line;                   // 1: join the points in order; 0: markers only
} SvgSeries;

typedef struct {
    const char *title, *xlabel, *ylabel;
    int log2_x;                 // 1: x axis in powers of two (context lengths)
    int log10_y;                // 1: y axis in decades (KL)
    int width, height;          // pixels; 0 = 720 x 460
} SvgPlot;

// Write the chart to path. Returns 0, or -1 with errno set if the file cannot be written.
int svgplot_write(const char *path, const SvgPlot *p, const SvgSeries *s, int n_series);

#endif
