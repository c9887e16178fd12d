// kv_attention.c: time the attention (attention_query) alone (all layers, one decode step) on the default
// model's shape (30 layers, 9 query heads, 3 KV heads, head_dim 64) at several contexts, for
// fp16 and each quantized configuration in both presets. Reports time per decode step, the
// cache bytes read per step, the effective bandwidth, and the speedup over fp16.
//
//   make bench            (builds build/kv_attention)
//   ./build/kv_attention [context ...]        (default 512 2048 8192)
//
// For a profile of one configuration: KVT_CONFIG=PRESET:KV (e.g. kivi:kv4, pertoken:k8v4)
// times only that one, KVT_REPS=N repeats each timing N times (default 20000/context + 3):
//   KVT_CONFIG=pertoken:kv4 KVT_REPS=100 OMP_NUM_THREADS=1 perf record -e cpu-clock build/kv_attention 8192
//   perf report --no-children      (the attention's functions: key_*, value_*, softmax_*, merge)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../kernels/attention.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

enum { L = 30, NH = 9, NKV = 3, HD = 64 };

// CPU time of the process: on a shared machine it is steadier than wall time; with one
// thread (OMP_NUM_THREADS=1) it is the kernel's own cost. KVT_WALL=1 times wall clock instead.
static double now(void) {
    struct timespec ts;
    clock_gettime(getenv("KVT_WALL") ? CLOCK_MONOTONIC : CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 1;
static float randn(void) {                 // cheap roughly-normal noise: sum of uniforms
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        s += (float)((double)(rng >> 11) / 9007199254740992.0) - 0.5f;
    }
    return s;
}

// Seconds per decode step (attention of every layer) at context T.
static double time_config(int kb, int vb, int kivi, int64_t T, uint64_t *bytes) {
    KVSpec spec;
    build_kvspec_uniform(&spec, L, NKV, HD, kb, vb);
    if (kivi) { spec.group = 32; spec.residual = 32; spec.key_axis = KEY_AXIS_CHANNEL; }
    KVCache *c = build_kvcache(&spec, T);
    float k[NKV * HD], v[NKV * HD], q[NH * HD], out[NH * HD];
    for (int64_t t = 0; t < T; t++)
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < NKV * HD; i++) { k[i] = randn() * 3 + (float)(i % 5); v[i] = randn(); }
            kvcache_append(c, l, k, v);
        }
    for (int i = 0; i < NH * HD; i++) q[i] = randn();
    *bytes = kvcache_memory(c, -1).total;
    int reps = getenv("KVT_REPS") ? atoi(getenv("KVT_REPS")) : (int)(20000 / T) + 3;
    if (reps < 1) reps = 1;
    AttnRows x = {.q = q, .k = k, .v = v, .out = out, .n = 1, .n_heads = NH};   // a decode token and its own k, v
    for (int l = 0; l < L; l++) attention_query(c, l, &x, ATTN_FAST);    // warm up
    double t0 = now();
    for (int r = 0; r < reps; r++)
        for (int l = 0; l < L; l++) attention_query(c, l, &x, ATTN_FAST);
    double dt = (now() - t0) / reps;
    free_kvcache(c);
    free_kvspec(&spec);
    return dt;
}

int main(int argc, char **argv) {
    int64_t ctx[16] = { 512, 2048, 8192 };
    int n_ctx = 3;
    if (argc > 1) {
        n_ctx = 0;
        for (int i = 1; i < argc && n_ctx < 16; i++) ctx[n_ctx++] = atoll(argv[i]);
    }
    static const int cfg[][2] = { { 16, 16 }, { 8, 8 }, { 8, 4 }, { 4, 4 }, { 4, 2 }, { 2, 2 } };
    const char *only = getenv("KVT_CONFIG");   // one configuration, PRESET:KV (then no fp16 to compare with)
    printf("%-8s %-6s %6s %10s %12s %8s %9s\n", "preset", "kv", "ctx", "ms/step", "KV MB", "GB/s", "vs fp16");
    for (int ci = 0; ci < n_ctx; ci++)
        for (int kivi = 0; kivi < 2; kivi++) {
            double base = 0;
            for (int k = 0; k < 6; k++) {
                uint64_t bytes;
                char name[16], full[32];
                if (cfg[k][0] == 16) snprintf(name, sizeof name, "fp16");
                else if (cfg[k][0] == cfg[k][1]) snprintf(name, sizeof name, "kv%d", cfg[k][0]);
                else snprintf(name, sizeof name, "k%dv%d", cfg[k][0], cfg[k][1]);
                snprintf(full, sizeof full, "%s:%s", kivi ? "kivi" : "pertoken", name);
                if (only && strcmp(only, full) != 0) continue;
                double dt = time_config(cfg[k][0], cfg[k][1], kivi, ctx[ci], &bytes);
                if (k == 0) base = dt;
                printf("%-8s %-6s %6lld %10.3f %12.2f %8.2f", kivi ? "kivi" : "pertoken", name,
                       (long long)ctx[ci], dt * 1e3, bytes / 1e6, bytes / dt / 1e9);
                if (base > 0) printf(" %8.2fx\n", base / dt);
                else printf(" %9s\n", "-");
                fflush(stdout);
            }
        }
    return 0;
}
