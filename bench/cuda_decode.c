// cuda_decode.c: decode speed of the CUDA path at long contexts, against the memory-bandwidth
// roofline. Decode reads every weight and every cached K/V byte once per token, so
//     roofline tok/s = copy bandwidth / (weight bytes + KV bytes at that context)
// with the copy bandwidth measured here (device-to-device cudaMemcpy, read + write counted).
// The cache is filled to the context length through the real quantize-and-append kernels
// with synthetic K/V (a prefill of 128k tokens would take longer than the whole benchmark);
// decode speed does not depend on the values.
//
//   build/cuda_decode MODEL.bin | --random-shape SHAPE [--dtype bf16]
//                     [--ctx 1024,8192,...] [--kv fp16,k8v4,kv4,kv2] [--kv-preset kivi] [--steps N]
// One line per (context, cache):
//   ctx N kv SPEC bits_per_elem B tok_per_s X ms_per_tok M weight_gb W kv_gb K roofline_tok_per_s R frac F
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../util/util.h"

#ifndef KVT_CUDA
int main(void) {
    fprintf(stderr, "error: cuda_decode: built without CUDA (nvcc was not found at build time)\n");
    return 1;
}
#else
#include "../model/model.h"
#include "../quant/kvconfig.h"
#include "../export/export.h"
#include "../kernels/cuda/cuda.h"

double cuda_copy_bandwidth(void);   // cuda_bench_util.cu

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int split(char *s, char **out, int max) {
    int n = 0;
    for (char *t = strtok(s, ","); t && n < max; t = strtok(NULL, ",")) out[n++] = t;
    return n;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *shape = NULL, *dtype = "bf16", *preset = "kivi";
    char ctx_list[256] = "1024,8192,32768,131072", kv_list[256] = "fp16,k8v4,kv4,kv2";
    int steps = 16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') { model_path = a; continue; }
        if (i + 1 >= argc) fatal("cuda_decode: %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--random-shape")) shape = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--ctx")) snprintf(ctx_list, sizeof ctx_list, "%s", v);
        else if (!strcmp(a, "--kv")) snprintf(kv_list, sizeof kv_list, "%s", v);
        else if (!strcmp(a, "--kv-preset")) preset = v;
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else fatal("cuda_decode: unknown option %s", a);
    }
    if (!model_path == !shape) fatal("cuda_decode: give a model.bin path or --random-shape SHAPE");
    if (steps < 1) fatal("cuda_decode: --steps must be positive");
    printf("device %s\n", cuda_init());

    Model m;
    Config c;
    CudaModel *cm;
    double t0 = now_s();
    if (model_path) {
        load_model(&m, model_path);
        c = m.config;
        cm = build_cuda_model(&m, 1);
        free_model(&m);
    } else {
        if (!random_shape(shape, &c)) fatal("cuda_decode: unknown shape %s (%s)", shape, random_shape_names());
        c.wdtype = !strcmp(dtype, "f32") ? DTYPE_F32 : !strcmp(dtype, "f16") ? DTYPE_F16 : DTYPE_BF16;
        cm = build_cuda_model_random(&c, 1, 1);
    }
    double bw = cuda_copy_bandwidth();
    uint64_t wbytes = cuda_model_weight_bytes(cm);
    printf("model %s: %d layers, dim %d, %s weights %.2f GB, loaded in %.1f s; copy bandwidth %.0f GB/s\n",
           model_path ? model_path : shape, c.n_layers, c.dim, dtype_name(c.wdtype), wbytes / 1e9, now_s() - t0, bw / 1e9);

    char *ctxs[16], *kvs[16];
    int nctx = split(ctx_list, ctxs, 16), nkv = split(kv_list, kvs, 16);
    for (int a = 0; a < nctx; a++) {
        int64_t T = atoll(ctxs[a]);
        if (T < 1) fatal("cuda_decode: bad context %s", ctxs[a]);
        for (int b = 0; b < nkv; b++) {
            KVOptions o;
            kvoptions_init(&o);
            o.spec = kvs[b];
            o.preset = preset;
            KVSpec spec;
            build_kvspec_from_options(&spec, &o, &c);
            CudaKVCache *kv = build_cuda_kvcache(&spec, T + steps + 2);
            cuda_kvcache_fill_random(kv, T, 1234);
            int tok = 1;
            for (int w = 0; w < 2; w++) cuda_forward(cm, kv, &tok, 1, T + w, 0);   // warm-up
            KVMemory mem = cuda_kvcache_memory(kv, -1);     // KV read per step, near the middle
            double s0 = now_s();
            for (int i = 0; i < steps; i++) {
                float *lg = cuda_forward(cm, kv, &tok, 1, T + 2 + i, 0);
                tok = lg[0] > lg[1] ? 0 : 1;               // a data dependence, as sampling has
            }
            double dt = (now_s() - s0) / steps, roof = bw / (double)(wbytes + mem.total);
            printf("ctx %lld kv %s bits_per_elem %.2f tok_per_s %.2f ms_per_tok %.3f weight_gb %.2f kv_gb %.3f "
                   "roofline_tok_per_s %.2f frac %.3f\n", (long long)T, kvs[b], mem.bits_per_elem, 1.0 / dt, dt * 1e3,
                   wbytes / 1e9, mem.total / 1e9, roof, (1.0 / dt) / roof);
            fflush(stdout);
            free_cuda_kvcache(kv);
            free_kvspec(&spec);
        }
    }
    free_cuda_model(cm);
    return 0;
}
#endif
