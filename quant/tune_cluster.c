// tune_cluster.c: inter-layer clustering of pruned sensitivity profiles (KVTuner §4.2,
// docs/DESIGN.md §6 step 4). Layers in one group share one precision pair in the search, which
// shrinks the space (the paper's motivation) and averages calibration noise over members.
#include "tuner.h"
#include "../util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void tune_layer_profile(const double *err, const unsigned char *keep, double prof[TUNE_NPAIRS]) {
    for (int p = 0; p < TUNE_NPAIRS; p++) {
        // the lower envelope: the best kept pair no dearer than p (KV2 is always kept)
        double e = INFINITY;
        for (int q = 0; q < TUNE_NPAIRS; q++)
            if (keep[q] && tune_cost(q) <= tune_cost(p) && err[q] < e) e = err[q];
        prof[p] = log(e > TUNE_ERR_FLOOR ? e : TUNE_ERR_FLOOR);
    }
}

static double rms_dist(const double *a, const double *b) {
    double s = 0;
    for (int p = 0; p < TUNE_NPAIRS; p++) s += (a[p] - b[p]) * (a[p] - b[p]);
    return sqrt(s / TUNE_NPAIRS);
}

// Average-linkage agglomeration from n singletons down to k clusters. lab[i] gets the cluster
// of point i, clusters renumbered by their first member.
static void agglomerate(const double *prof, int n, int k, int *lab) {
    double *d = xmalloc((size_t)n * n * sizeof(double));      // cluster-to-cluster distance
    int *size = xmalloc((size_t)n * sizeof(int)), *alive = xmalloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        lab[i] = i; size[i] = 1; alive[i] = 1;
        for (int j = 0; j < n; j++)
            d[(size_t)i * n + j] = rms_dist(prof + (size_t)i * TUNE_NPAIRS, prof + (size_t)j * TUNE_NPAIRS);
    }
    for (int left = n; left > k; left--) {
        int bi = -1, bj = -1;
        double bd = INFINITY;
        for (int i = 0; i < n; i++) {
            if (!alive[i]) continue;
            for (int j = i + 1; j < n; j++)
                if (alive[j] && d[(size_t)i * n + j] < bd) { bd = d[(size_t)i * n + j]; bi = i; bj = j; }
        }
        // merge bj into bi; UPGMA: the new distance is the size-weighted mean of the two
        for (int m = 0; m < n; m++) {
            if (!alive[m] || m == bi || m == bj) continue;
            double v = (size[bi] * d[(size_t)bi * n + m] + size[bj] * d[(size_t)bj * n + m]) / (size[bi] + size[bj]);
            d[(size_t)bi * n + m] = d[(size_t)m * n + bi] = v;
        }
        size[bi] += size[bj];
        alive[bj] = 0;
        for (int i = 0; i < n; i++) if (lab[i] == bj) lab[i] = bi;
    }
    // renumber 0..k-1 in order of first member
    int *map = xmalloc((size_t)n * sizeof(int)), next = 0;
    for (int i = 0; i < n; i++) map[i] = -1;
    for (int i = 0; i < n; i++) {
        if (map[lab[i]] < 0) map[lab[i]] = next++;
        lab[i] = map[lab[i]];
    }
    free(map); free(d); free(size); free(alive);
}

// Max over points of the RMS distance to their cluster's mean profile.
static double spread_of(const double *prof, int n, int k, const int *lab) {
    double *mean = xcalloc((size_t)k * TUNE_NPAIRS, sizeof(double));
    int *cnt = xcalloc((size_t)k, sizeof(int));
    for (int i = 0; i < n; i++) {
        cnt[lab[i]]++;
        for (int p = 0; p < TUNE_NPAIRS; p++) mean[(size_t)lab[i] * TUNE_NPAIRS + p] += prof[(size_t)i * TUNE_NPAIRS + p];
    }
    for (int g = 0; g < k; g++)
        for (int p = 0; p < TUNE_NPAIRS; p++) mean[(size_t)g * TUNE_NPAIRS + p] /= cnt[g];
    double s = 0;
    for (int i = 0; i < n; i++) {
        double r = rms_dist(prof + (size_t)i * TUNE_NPAIRS, mean + (size_t)lab[i] * TUNE_NPAIRS);
        if (r > s) s = r;
    }
    free(mean); free(cnt);
    return s;
}

void tune_cluster(const SensTable *t, const unsigned char *keep, int n_groups_wanted, Clustering *out) {
    int n = t->n_layers;
    double *prof = xmalloc((size_t)n * TUNE_NPAIRS * sizeof(double));
    for (int l = 0; l < n; l++)
        tune_layer_profile(sens_err(t, l), keep + (size_t)l * TUNE_NPAIRS, prof + (size_t)l * TUNE_NPAIRS);
    out->n_layers = n;
    out->group_of = xmalloc((size_t)n * sizeof(int));
    if (n_groups_wanted > 0) {
        int k = n_groups_wanted < n ? n_groups_wanted : n;
        agglomerate(prof, n, k, out->group_of);
        out->n_groups = k;
    } else {
        int kmax = n < TUNE_MAX_AUTO_GROUPS ? n : TUNE_MAX_AUTO_GROUPS;
        for (int k = 1; k <= kmax; k++) {       // smallest K under the spread threshold
            agglomerate(prof, n, k, out->group_of);
            out->n_groups = k;
            if (spread_of(prof, n, k, out->group_of) <= TUNE_SPREAD_TAU) break;
        }
    }
    out->spread = spread_of(prof, n, out->n_groups, out->group_of);
    free(prof);
}

void free_clustering(Clustering *c) {
    free(c->group_of);
    c->group_of = NULL;
}
