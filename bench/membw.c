// membw.c: this machine's memory bandwidth, measured the way decode uses memory: threads
// streaming through buffers much larger than the caches. Decode of an f16 model reads
// every weight once per token, so tok/s <= bandwidth / weight bytes (bench/decode.sh).
//
//   cc -O2 -fopenmp bench/membw.c -o build/membw && build/membw [MiB] [threads]
//
// Reports the best of several passes for: read (sum, what a matmul does), copy (read +
// write, counted as 2x bytes, the STREAM convention) and write.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 512;
#ifdef _OPENMP
    if (argc > 2) omp_set_num_threads(atoi(argv[2]));
#endif
    if (mib < 64) mib = 64;
    size_t n = mib * 1024 * 1024 / sizeof(double);
    double *a = aligned_alloc(64, n * sizeof(double)), *b = aligned_alloc(64, n * sizeof(double));
    if (!a || !b) { fprintf(stderr, "error: membw: cannot allocate 2 x %zu MiB\n", mib); return 1; }
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = (double)(i & 1023); b[i] = 0; }   // first touch per thread

    double best_read = 1e30, best_copy = 1e30, best_write = 1e30, sink = 0;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = now_s(), s = 0;
        // eight independent sums: one chain of dependent adds would measure add latency
        #pragma omp parallel for schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i += 8)
            s += (a[i] + a[i + 1]) + (a[i + 2] + a[i + 3]) + (a[i + 4] + a[i + 5]) + (a[i + 6] + a[i + 7]);
        double t1 = now_s();
        sink += s;
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) b[i] = a[i];
        double t2 = now_s();
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) b[i] = (double)rep;
        double t3 = now_s();
        if (t1 - t0 < best_read) best_read = t1 - t0;
        if (t2 - t1 < best_copy) best_copy = t2 - t1;
        if (t3 - t2 < best_write) best_write = t3 - t2;
    }
    double bytes = (double)n * sizeof(double);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("membw: %zu MiB buffers, %d threads: read %.2f GB/s, copy %.2f GB/s, write %.2f GB/s (check %g)\n",
           mib, threads, bytes / best_read / 1e9, 2 * bytes / best_copy / 1e9, bytes / best_write / 1e9, sink > 0 ? 1.0 : 0.0);
    printf("read_gbs %.3f copy_gbs %.3f write_gbs %.3f\n", bytes / best_read / 1e9, 2 * bytes / best_copy / 1e9,
           bytes / best_write / 1e9);
    free(a);
    free(b);
    return 0;
}
