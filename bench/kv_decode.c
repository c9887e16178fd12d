// kv_decode.c: decode speed of the default model with each KV-cache configuration at long
// contexts, as ratios against the fp16 cache measured in the same run.
//
//   make bench            (builds build/kv_decode)
//   ./build/kv_decode models/smollm2-135m-instruct.bin data/tinyshakespeare.txt [steps] [ctx ...]
//
// Reaching context T honestly by prefilling T real tokens costs O(T²) attention, minutes per
// configuration at 8192 on a small CPU. Decode speed depends on how much cache there is to
// read, not on the values in it, so the cache is filled instead with real K/V rows: the
// model's own, from one batched fp16 prefill of the first 256 tokens of the text, appended
// cyclically up to T (each configuration quantizes them as it would its own). Then `steps`
// greedy decode steps of the real model run at positions T.. and are timed. Configurations
// are interleaved round by round so that a change in machine load hits all of them alike;
// the best of the rounds counts. KVT_CPU_TIME=1 times process CPU time instead of wall time
// (steadier on a shared machine; use with OMP_NUM_THREADS=1). KVT_CONFIG=PRESET:KV (e.g.
// pertoken:kv4) runs that one configuration alone, for a profiler (no fp16 to compare with).
//
// Output: a comment line with the weight bytes read per token; then per line: preset kv ctx
// tok/s ratio-vs-fp16 KV-bytes-per-cached-token, and the memory-traffic bound (weights + fp16
// KV) / (weights + quantized KV) for comparison.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../model/model.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(getenv("KVT_CPU_TIME") ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { PREFILL = 256, N_CFG = 6, ROUNDS = 3 };
static const int cfg[N_CFG][2] = { { 16, 16 }, { 8, 8 }, { 8, 4 }, { 4, 4 }, { 4, 2 }, { 2, 2 } };

static const char *cfg_name(int k) {
    static const char *name[N_CFG] = { "fp16", "kv8", "k8v4", "kv4", "k4v2", "kv2" };
    return name[k];
}

// Whether configuration k of the preset runs: all of them, or the one KVT_CONFIG names.
static int wanted(int k, int kivi) {
    const char *only = getenv("KVT_CONFIG");
    char full[32];
    snprintf(full, sizeof full, "%s:%s", kivi ? "kivi" : "pertoken", cfg_name(k));
    return !only || strcmp(only, full) == 0;
}

// K/V rows of a real prefill: [layer][token][K, V][n_kv_heads * head_dim], read back from an
// fp16 cache (so exactly the fp16 values the model produced).
static float *real_rows(const Model *m, const int *ids) {
    const Config *c = &m->config;
    int kvd = c->n_kv_heads * c->head_dim;
    KVSpec spec;
    build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
    KVCache *cache = build_kvcache(&spec, PREFILL);
    RunState s;
    build_runstate(&s, c, PREFILL, PREFILL);
    forward(m, &s, cache, ids, PREFILL, 0, 0);
    float *rows = xmalloc(sizeof(float) * (size_t)c->n_layers * PREFILL * 2 * (size_t)kvd);
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < PREFILL; t++)
            for (int w = 0; w < 2; w++)
                for (int h = 0; h < c->n_kv_heads; h++)
                    kvcache_read(cache, l, h, w, t, rows + (((size_t)l * PREFILL + t) * 2 + w) * kvd + h * c->head_dim);
    free_runstate(&s);
    free_kvcache(cache);
    free_kvspec(&spec);
    return rows;
}

// Fill a cache of `spec` to `target` tokens with the real rows, cyclically (each configuration
// quantizes them as it would its own), then time `steps` greedy decode steps: tok/s.
static double run_one(const Model *m, const KVSpec *spec, const float *rows, int first_token, int64_t target,
                      int steps, uint64_t *bytes_per_tok) {
    const Config *c = &m->config;
    int kvd = c->n_kv_heads * c->head_dim;
    KVCache *cache = build_kvcache(spec, target + steps);
    RunState s;
    build_runstate(&s, c, 1, target + steps);
    for (int64_t pos = 0; pos < target; pos++)
        for (int l = 0; l < c->n_layers; l++) {
            const float *r = rows + (((size_t)l * PREFILL + (size_t)(pos % PREFILL)) * 2) * kvd;
            kvcache_append(cache, l, r, r + kvd);
        }
    int tok = first_token;
    double t0 = now();
    for (int i = 0; i < steps; i++) {
        float *logits = forward(m, &s, cache, &tok, 1, target + i, 0);
        int best = 0;
        for (int j = 1; j < c->vocab_size; j++) if (logits[j] > logits[best]) best = j;
        tok = best;
    }
    double dt = now() - t0;
    *bytes_per_tok = kvcache_memory(cache, -1).total / (uint64_t)kvcache_len(cache, 0);
    free_runstate(&s);
    free_kvcache(cache);
    return steps / dt;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s MODEL TEXT [steps] [ctx ...]\n", argv[0]); return 1; }
    Model m;
    load_model(&m, argv[1]);
    const Config *c = &m.config;
    int steps = argc > 3 ? atoi(argv[3]) : 16;
    int64_t ctx[8] = { 512, 2048, 8192 };
    int n_ctx = 3;
    if (argc > 4) { n_ctx = 0; for (int i = 4; i < argc && n_ctx < 8; i++) ctx[n_ctx++] = atoll(argv[i]); }
    size_t len;
    char *text = read_file(argv[2], &len);
    if (len > 4000) text[4000] = 0;
    int *ids = NULL;
    int n = tokenizer_encode(&m.tokenizer, text, strlen(text), 0, &ids);
    if (n <= PREFILL) fatal("%s: fewer than %d tokens", argv[2], PREFILL + 1);
    float *rows = real_rows(&m, ids);
    // Bytes of weights read per decoded token: every matrix, plus one embedding row.
    double row_d = (double)dtype_bytes(c->wdtype, (uint64_t)c->dim), row_h = (double)dtype_bytes(c->wdtype, (uint64_t)c->hidden_dim);
    double wbytes = (double)c->n_layers * ((double)c->head_dim * (2 * c->n_heads + 2 * c->n_kv_heads) * row_d +
                    2.0 * c->hidden_dim * row_d + (double)c->dim * row_h) + (double)c->vocab_size * row_d;
    printf("# weights read per token: %.0f bytes\n", wbytes);
    printf("%-8s %-5s %6s %9s %8s %12s %9s\n", "preset", "kv", "ctx", "tok/s", "vs fp16", "KV B/token", "bound");
    for (int ci = 0; ci < n_ctx; ci++)
        for (int kivi = 0; kivi < 2; kivi++) {
            double best[N_CFG] = {0};
            uint64_t bpt[N_CFG] = {0};
            for (int r = 0; r < ROUNDS; r++)
                for (int k = 0; k < N_CFG; k++) {
                    if (!wanted(k, kivi)) continue;
                    KVSpec spec;
                    build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, cfg[k][0], cfg[k][1]);
                    if (kivi) { spec.group = 32; spec.residual = 32; spec.key_axis = KEY_AXIS_CHANNEL; }
                    double tps = run_one(&m, &spec, rows, ids[PREFILL], ctx[ci], steps, &bpt[k]);
                    if (tps > best[k]) best[k] = tps;
                    free_kvspec(&spec);
                }
            for (int k = 0; k < N_CFG; k++) {
                if (!wanted(k, kivi)) continue;
                if (best[0] == 0) {     // alone, without the fp16 row
                    printf("%-8s %-5s %6lld %9.3f %8s %12llu\n", kivi ? "kivi" : "pertoken", cfg_name(k),
                           (long long)ctx[ci], best[k], "-", (unsigned long long)bpt[k]);
                    continue;
                }
                double bound = (wbytes + (double)bpt[0] * ctx[ci]) / (wbytes + (double)bpt[k] * ctx[ci]);
                printf("%-8s %-5s %6lld %9.3f %7.3fx %12llu %8.3fx\n", kivi ? "kivi" : "pertoken", cfg_name(k), (long long)ctx[ci],
                       best[k], best[k] / best[0], (unsigned long long)bpt[k], bound);
            }
            fflush(stdout);
        }
    free(rows);
    free(ids);
    free(text);
    free_model(&m);
    return 0;
}
