// tune_sens.c: the sensitivity step of `run -m tune` (docs/DESIGN.md §6 steps 1-2, §6.2) for
// one kind of calibration text, and sensitivity.tsv, which keeps every kind's table so that a
// search can be redone (other --max-bits, --groups, kinds or --verify) without remeasuring.
#include "tune_report.h"
#include "../util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tune_sens_tokens(int n) { return n / TUNE_SENS_SHARE < 16 ? (n < 16 ? n : 16) : n / TUNE_SENS_SHARE; }

// Sensitivity KL is scored at every stride-th position, as long as >= TUNE_KL_MIN_SCORED
// positions remain: every token still runs through every layer (the same contexts), only the
// classifier and the softmax are skipped, which are ~40% of a tail run at 256 tokens on
// SmolLM2-135M (§6.2 measures what this costs).
#ifndef TUNE_KL_STRIDE
#define TUNE_KL_STRIDE 4
#endif
#define TUNE_KL_MIN_SCORED 64
// 1: only the pairs on a layer's (cost, attention error) front get a KL run (§6.2).
#ifndef TUNE_SKIP_DOMINATED
#define TUNE_SKIP_DOMINATED 1
#endif

static int kl_stride(int n) {
    int s = n / TUNE_KL_MIN_SCORED;
    return s < 1 ? 1 : s > TUNE_KL_STRIDE ? TUNE_KL_STRIDE : s;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ||a - b|| / ||b|| over n floats, in double.
static double rel_error(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) { d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); s += (double)b[i] * b[i]; }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

// One layer: the attention error of every pair, then a KL run for each pair on the layer's
// attention-error front; the others are estimated (tune_fill_skipped).
static void measure_layer(const Model *m, const KVSpec *grouping, RunState *s, KVCache *c16, const TuneRecord *r,
                          int l, SensTable *t, float *o16, float *oq /* [9][od] */, int *n_tail, int *n_skipped) {
    const Config *c = &m->config;
    size_t od = (size_t)r->n * c->n_heads * c->head_dim;
    double *err = sens_err(t, l), *aux = sens_aux(t, l);
    unsigned char *tail = sens_tail(t, l);
    tune_layer_attention(m, grouping, (KVBits){16, 16}, r, l, o16);
    for (int p = 0; p < TUNE_NPAIRS; p++) {
        tune_layer_attention(m, grouping, (KVBits){tune_kbits(p), tune_vbits(p)}, r, l, oq + p * od);
        aux[p] = rel_error(oq + p * od, o16, od);
    }
    if (TUNE_SKIP_DOMINATED) tune_prune_pairs(aux, tail);
    else memset(tail, 1, TUNE_NPAIRS);
    for (int p = 0; p < TUNE_NPAIRS; p++) {
        if (!tail[p]) { (*n_skipped)++; continue; }
        err[p] = tune_tail_kl(m, s, c16, r, l, oq + p * od, kl_stride(r->n));
        if (!isfinite(err[p])) fatal("tune: layer %d %s: the KL is not finite", l, tune_pair_name(p));
        (*n_tail)++;
    }
    tune_fill_skipped(err, aux, tail);
}

void tune_measure_kind(const Model *m, const KVSpec *grouping, TuneKind *k, int n, int progress, int *n_tail,
                       int *n_skipped) {
    const Config *c = &m->config;
    int L = c->n_layers;
    RunState s;
    build_runstate(&s, c, n, n);
    TuneRecord r;
    double t0 = now_s();
    tune_record(m, &s, k->cal, n, &r);
    if (progress) fprintf(stderr, "tune: %s: fp16 pass recorded in %.1f s\n", k->name, now_s() - t0);
    build_senstable(&k->tab, L);
    size_t od = (size_t)n * c->n_heads * c->head_dim;
    float *o16 = xmalloc(od * sizeof(float)), *oq = xmalloc(TUNE_NPAIRS * od * sizeof(float));
    KVSpec sp16;
    build_kvspec_uniform(&sp16, L, c->n_kv_heads, c->head_dim, 16, 16);
    KVCache *c16 = build_kvcache(&sp16, n);
    for (int l = 0; l < L; l++) {
        measure_layer(m, grouping, &s, c16, &r, l, &k->tab, o16, oq, n_tail, n_skipped);
        if (progress) {
            double dt = now_s() - t0;
            // later layers are cheaper (shorter tails): weight the ETA by remaining depth
            double done = 0, all = 0;
            for (int j = 0; j < L; j++) { double w = L - j + 8; all += w; if (j <= l) done += w; }
            int nt = 0;
            for (int p = 0; p < TUNE_NPAIRS; p++) nt += sens_tail(&k->tab, l)[p];
            fprintf(stderr, "tune: %s: sensitivity layer %d/%d: KL KV2 %.4g KV4 %.4g KV8 %.3g, %d pairs measured  (%.0f s, ~%.0f s left)\n",
                    k->name, l + 1, L, sens_err(&k->tab, l)[0], sens_err(&k->tab, l)[4], sens_err(&k->tab, l)[8], nt, dt,
                    dt * (all - done) / done);
        }
    }
    free_kvcache(c16);
    free_kvspec(&sp16);
    free(o16); free(oq);
    free_tunerecord(&r);
    free_runstate(&s);
}

// sensitivity.tsv: a line naming the options (the column order), a line saying whether the
// cache was rotated, then one line per kind and layer: kind, tokens (those the KL runs used),
// layer, the 9 KLs, the 9 attention errors, and 9 flags (1: the KL was measured, 0: estimated
// from the attention error).
static const char *OPTIONS_LINE = "# options:";
// Rotation changes which numbers share a quantization group (docs/DESIGN.md §3.10), so a
// table measured with it describes another cache than one measured without: reusing it would
// search on the wrong errors. A table without this line was measured without rotation.
static const char *ROTATE_LINE = "# rotate:";

void tune_save_sensitivity(const char *path, const TuneKind *kinds, int n_cal, int n, const char *preset, int rotated) {
    FILE *f = fopen(path, "w");
    if (!f) fatal("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "# kvtuner.c -m tune sensitivity, %s preset%s: kind, tokens, layer, KL x 9, attention rel. error x 9, "
               "KL measured (1) or estimated (0) x 9\n%s", preset, rotated ? ", rotated cache" : "", OPTIONS_LINE);
    for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, " %s", tune_pair_name(p));
    fprintf(f, "\n%s %s\n", ROTATE_LINE, rotated ? "true" : "false");
    for (int k = 0; k < n_cal; k++) {
        const SensTable *t = &kinds[k].tab;
        for (int l = 0; l < t->n_layers; l++) {
            fprintf(f, "%s\t%d\t%d", kinds[k].name, n, l);
            for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, "\t%.17g", sens_err(t, l)[p]);
            for (int p = 0; p < TUNE_NPAIRS; p++) fprintf(f, "\t%.17g", sens_aux(t, l)[p]);
            fprintf(f, "\t");
            for (int p = 0; p < TUNE_NPAIRS; p++) fputc('0' + sens_tail(t, l)[p], f);
            fprintf(f, "\n");
        }
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) fatal("error writing %s", path);
}

// One data line into the kind's table (the kind and the token count already checked); seen[l]
// marks the layers read.
static void load_row(const char *path, int line, char *p, SensTable *t, unsigned char *seen) {
    char *end;
    long l = strtol(p, &end, 10);
    if (end == p || l < 0 || l >= t->n_layers) fatal("%s: line %d: layer is not in [0, %d)", path, line, t->n_layers);
    if (seen[l]) fatal("%s: line %d: a second line for layer %ld", path, line, l);
    seen[l] = 1;
    for (int i = 0; i < 2 * TUNE_NPAIRS; i++) {
        p = end;
        double v = strtod(p, &end);
        if (end == p || !isfinite(v) || v < 0) fatal("%s: line %d: value %d is missing or not a finite number >= 0", path, line, i + 1);
        (i < TUNE_NPAIRS ? sens_err(t, (int)l) : sens_aux(t, (int)l))[i % TUNE_NPAIRS] = v;
    }
    while (*end == ' ' || *end == '\t') end++;
    for (int p2 = 0; p2 < TUNE_NPAIRS; p2++, end++) {
        if (*end != '0' && *end != '1') fatal("%s: line %d: expected 9 flags (0 or 1) after the 18 values", path, line);
        sens_tail(t, (int)l)[p2] = (unsigned char)(*end - '0');
    }
    while (*end == ' ' || *end == '\t' || *end == '\r') end++;
    if (*end) fatal("%s: line %d: extra text after the flags", path, line);
}

// Fatal unless the table's rotation (`file_rotated`, read from its ROTATE_LINE, or 0 without
// one) is this run's.
static void check_rotation(const char *path, int line, int file_rotated, int rotated) {
    if (file_rotated && !rotated)
        fatal("%s: line %d: measured with a rotated cache (--kv-rotate) and this run does not rotate: give --kv-rotate, "
              "or measure the sensitivity again", path, line);
    if (!file_rotated && rotated)
        fatal("%s: line %d: measured without rotation and this run rotates the cache (--kv-rotate): drop --kv-rotate, "
              "or measure the sensitivity again", path, line);
}

void tune_load_sensitivity(const char *path, TuneKind *kinds, int n_cal, int n, int L, int rotated) {
    char *text = read_file(path, NULL), *save = NULL;
    int line = 0, options_ok = 0, rotate_seen = 0;
    char want[256];
    int w = snprintf(want, sizeof want, "%s", OPTIONS_LINE);
    for (int p = 0; p < TUNE_NPAIRS; p++) w += snprintf(want + w, sizeof want - (size_t)w, " %s", tune_pair_name(p));
    unsigned char *seen = xcalloc((size_t)n_cal * L, 1);
    for (int k = 0; k < n_cal; k++) build_senstable(&kinds[k].tab, L);
    for (char *ln = strtok_r(text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        line++;
        size_t len = strlen(ln);
        if (len && ln[len - 1] == '\r') ln[--len] = 0;
        if (!strncmp(ln, OPTIONS_LINE, strlen(OPTIONS_LINE))) {
            if (strcmp(ln, want)) fatal("%s: line %d: the options are not this tuner's (%s)", path, line, want + strlen(OPTIONS_LINE) + 1);
            options_ok = 1;
            continue;
        }
        if (!strncmp(ln, ROTATE_LINE, strlen(ROTATE_LINE))) {
            const char *v = ln + strlen(ROTATE_LINE);
            while (*v == ' ') v++;
            if (rotate_seen) fatal("%s: line %d: a second '%s' line", path, line, ROTATE_LINE);
            if (strcmp(v, "true") && strcmp(v, "false"))
                fatal("%s: line %d: '%s' is followed by '%s', not true or false", path, line, ROTATE_LINE, v);
            check_rotation(path, line, !strcmp(v, "true"), rotated);
            rotate_seen = 1;
            continue;
        }
        if (ln[0] == '#' || ln[0] == 0) continue;
        if (!options_ok) fatal("%s: line %d: a data line before the '%s' line", path, line, OPTIONS_LINE);
        if (!rotate_seen) check_rotation(path, line, 0, rotated);   // an older table: not rotated
        char *tab1 = strchr(ln, '\t');
        if (!tab1) fatal("%s: line %d: expected kind, tokens, layer and values separated by tabs", path, line);
        *tab1 = 0;
        int k = 0;
        while (k < n_cal && strcmp(kinds[k].name, ln)) k++;
        if (k == n_cal) continue;                   // a kind this run does not calibrate on
        char *end;
        long tok = strtol(tab1 + 1, &end, 10);
        if (end == tab1 + 1) fatal("%s: line %d: the token count is not a number", path, line);
        if (tok != n) fatal("%s: line %d: kind '%s' was measured on %ld tokens, this run measures %d (--tokens %ld)",
                            path, line, ln, tok, n, tok * TUNE_SENS_SHARE);
        load_row(path, line, end, &kinds[k].tab, seen + (size_t)k * L);
    }
    if (!options_ok) fatal("%s: not a sensitivity table (no '%s' line)", path, OPTIONS_LINE);
    for (int k = 0; k < n_cal; k++)
        for (int l = 0; l < L; l++)
            if (!seen[(size_t)k * L + l]) fatal("%s: no line for kind '%s' layer %d", path, kinds[k].name, l);
    free(seen);
    free(text);
}
