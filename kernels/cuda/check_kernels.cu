// check_kernels.cu: the CUDA kernel harness (`make cuda-check`), in llm.c's manner: every
// kernel runs on random inputs, is checked against the project's CPU code (kernels/kernels.c,
// quant/kvcache.c, kernels/attention.h) with a stated tolerance, and is timed in a loop that
// reports the memory bandwidth it achieves (bytes it must read and write / time).
// Without a CUDA device it prints "skipped: ..." and exits 0; a failed check exits 1.
#include "kvcache_cuda.h"
extern "C" {
#include "../../kernels/kernels.h"
#include "../../quant/kvstore.h"
#include "../../kernels/attention.h"
#include "cuda.h"
}
#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;
static uint64_t rng = 0x2545f4914f6cdd1dull;

static float frand(void) {       // uniform in [-1, 1)
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (float)((rng * 0x2545f4914f6cdd1dull) >> 40) / 8388608.0f - 1.0f;
}
static void fill(float *x, size_t n, float scale) { for (size_t i = 0; i < n; i++) x[i] = frand() * scale; }

static void *to_dev(const void *h, size_t bytes) {
    void *d;
    CUDA_CHECK(cudaMalloc(&d, bytes));
    CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}
static void from_dev(void *h, const void *d, size_t bytes) { CUDA_CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost)); }

// max |a - b| / (max |b| + tiny): differences relative to the output's scale.
static double max_rel(const float *a, const float *b, size_t n) {
    double d = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;                         // NaN propagates as failure
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return d / (m + 1e-30);
}

static void report(const char *kernel, const char *config, double err, double tol, double us, double bytes) {
    int ok = err <= tol;
    if (!ok) failures++;
    printf("%-10s %-34s err %-9.2e tol %-8.0e %-4s", kernel, config, err, tol, ok ? "ok" : "FAIL");
    if (us > 0) printf(" %9.1f us %8.1f GB/s", us, bytes / (us * 1e3));      // 0: checked, not timed
    printf("\n");
}

// Mean time of `iters` launches of f (after one warm-up), in microseconds.
template <class F> static double time_us(F f, int iters = 20) {
    f();
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a)); CUDA_CHECK(cudaEventCreate(&b));
    CUDA_CHECK(cudaEventRecord(a));
    for (int i = 0; i < iters; i++) f();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    CUDA_CHECK(cudaEventDestroy(a)); CUDA_CHECK(cudaEventDestroy(b));
    return ms * 1e3 / iters;
}

// Host arrays in dtype t from f32 (and back), with the CPU's rounding.
static void *to_dtype(const float *x, size_t n, DType t) {
    if (t == DTYPE_F32) { float *o = (float *)xmalloc(n * 4); memcpy(o, x, n * 4); return o; }
    uint16_t *o = (uint16_t *)xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) o[i] = t == DTYPE_F16 ? fp32_to_fp16(x[i]) : fp32_to_bf16(x[i]);
    return o;
}
static void dtype_to_f32(float *o, const void *x, size_t n, DType t) {
    for (size_t i = 0; i < n; i++)
        o[i] = t == DTYPE_F32 ? ((const float *)x)[i] : t == DTYPE_F16 ? fp16_to_fp32(((const uint16_t *)x)[i])
                                                                        : bf16_to_fp32(((const uint16_t *)x)[i]);
}

// The planes store_split writes for x (cuda_common.h), made on the host: [ns][n] in dtype t.
static void *split_planes(const float *x, size_t n, DType t) {
    int ns = act_splits(t);
    if (t == DTYPE_F32) return to_dtype(x, n, t);
    uint16_t *o = (uint16_t *)xmalloc((size_t)ns * n * 2);
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        for (int s = 0; s < ns; s++) {
            uint16_t h = t == DTYPE_F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
            o[s * n + i] = h;
            v -= t == DTYPE_F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
        }
    }
    return o;
}

// Sum of the planes back to f32 (what the GEMM sees).
static void sum_planes(float *o, const void *p, size_t n, DType t) {
    int ns = act_splits(t);
    float *tmp = (float *)xmalloc(n * 4);
    memset(o, 0, n * 4);
    for (int s = 0; s < ns; s++) {
        dtype_to_f32(tmp, (const char *)p + (size_t)s * n * dtype_size(t), n, t);
        for (size_t i = 0; i < n; i++) o[i] += tmp[i];
    }
    free(tmp);
}

// ---- dense kernels ---------------------------------------------------------------------------

static void check_embed(DType t) {
    const int vocab = 4096, dim = 2048, n = 256;
    float *tab = (float *)xmalloc((size_t)vocab * dim * 4), *ref = (float *)xmalloc((size_t)n * dim * 4), *got = (float *)xmalloc((size_t)n * dim * 4);
    fill(tab, (size_t)vocab * dim, 1.0f);
    void *tt = to_dtype(tab, (size_t)vocab * dim, t);
    int tok[n];
    for (int i = 0; i < n; i++) { tok[i] = (int)((frand() + 1.0f) * 0.5f * vocab); if (tok[i] >= vocab) tok[i] = vocab - 1; }
    for (int i = 0; i < n; i++) embed(ref + (size_t)i * dim, tt, t, dim, tok[i]);
    void *dt = to_dev(tt, (size_t)vocab * dim * dtype_size(t));
    int *dtok = (int *)to_dev(tok, sizeof tok);
    float *dout; CUDA_CHECK(cudaMalloc(&dout, (size_t)n * dim * 4));
    double us = time_us([&] { cuda_embed(dout, dtok, n, dt, t, dim, 0); });
    from_dev(got, dout, (size_t)n * dim * 4);
    char cfg[64]; snprintf(cfg, sizeof cfg, "%s %d tokens x %d", dtype_name(t), n, dim);
    report("embed", cfg, max_rel(got, ref, (size_t)n * dim), 0.0, us, (double)n * dim * (dtype_size(t) + 4));
    cudaFree(dt); cudaFree(dtok); cudaFree(dout); free(tab); free(tt); free(ref); free(got);
}

static void check_rmsnorm(DType ot) {
    const int n = 64, dim = 4096;
    size_t N = (size_t)n * dim;
    float *x = (float *)xmalloc(N * 4), *w = (float *)xmalloc(dim * 4), *ref = (float *)xmalloc(N * 4), *got = (float *)xmalloc(N * 4);
    fill(x, N, 3.0f); fill(w, dim, 1.0f);
    rmsnorm(ref, x, w, n, dim, 1e-5f);
    float *dx = (float *)to_dev(x, N * 4), *dw = (float *)to_dev(w, dim * 4);
    size_t ob = N * act_splits(ot) * dtype_size(ot);
    void *dout; CUDA_CHECK(cudaMalloc(&dout, ob));
    double us = time_us([&] { cuda_rmsnorm(dout, ot, dx, dw, n, dim, 1e-5f, 0); });
    void *h = xmalloc(ob);
    from_dev(h, dout, ob);
    sum_planes(got, h, N, ot);
    char cfg[64]; snprintf(cfg, sizeof cfg, "%d x %d -> %d %s plane(s)", n, dim, act_splits(ot), dtype_name(ot));
    // float sum of squares vs the CPU's double; the planes' sum is the f32 value within 2^-22
    report("rmsnorm", cfg, max_rel(got, ref, N), 1e-5, us, (double)N * 4 + (double)ob + dim * 4.0);
    cudaFree(dx); cudaFree(dw); cudaFree(dout); free(x); free(w); free(ref); free(got); free(h);
}

// rotate_half: then each head in rotate-half channel order, as kv_transform_qkv leaves it.
static void check_rope(int rotate_half) {
    Config c;
    memset(&c, 0, sizeof c);
    c.head_dim = 128; c.rope_theta = 500000.0f; c.rope_scaling = ROPE_SCALING_LLAMA3; c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f; c.rope_high_freq_factor = 4.0f; c.rope_orig_ctx = 8192;
    const int n = 64, heads = 32, hd = 128;
    const int64_t pos0 = 100000;                      // a long-context position: large angles
    size_t N = (size_t)n * heads * hd;
    float freqs[64], *x = (float *)xmalloc(N * 4), *ref = (float *)xmalloc(N * 4), *got = (float *)xmalloc(N * 4);
    rope_freqs(freqs, &c);
    fill(x, N, 1.0f);
    memcpy(ref, x, N * 4);
    for (int t = 0; t < n; t++) rope(ref + (size_t)t * heads * hd, heads, hd, (int)(pos0 + t), freqs);
    for (size_t h = 0; rotate_half && h < (size_t)n * heads; h++) {
        float tmp[128], *p = ref + h * hd;
        for (int i = 0; i < hd / 2; i++) { tmp[i] = p[2 * i]; tmp[hd / 2 + i] = p[2 * i + 1]; }
        memcpy(p, tmp, sizeof tmp);
    }
    float *dx = (float *)to_dev(x, N * 4), *df = (float *)to_dev(freqs, sizeof freqs);
    cuda_rope(dx, heads, NULL, 0, n, hd, pos0, df, rotate_half, 0);
    from_dev(got, dx, N * 4);
    // sincosf on the GPU is within 2 ulp of the CPU's cosf/sinf for the same f32 angle
    report("rope", rotate_half ? "64 tok x 32 heads x 128, rotate-half order" : "64 tok x 32 heads x 128, llama3.1",
           max_rel(got, ref, N), 1e-5, time_us([&] { cuda_rope(dx, heads, NULL, 0, n, hd, pos0, df, rotate_half, 0); }),
           2.0 * N * 4);
    cudaFree(dx); cudaFree(df); free(x); free(ref); free(got);
}

static void check_swiglu_residual(void) {
    const int tok = 64, hid = 14336;
    const size_t N = (size_t)tok * hid;
    float *g = (float *)xmalloc(N * 4), *u = (float *)xmalloc(N * 4), *ref = (float *)xmalloc(N * 4), *got = (float *)xmalloc(N * 4);
    float *gu = (float *)xmalloc(2 * N * 4);
    fill(g, N, 6.0f); fill(u, N, 2.0f);
    swiglu(ref, g, u, (int)N);
    for (int t = 0; t < tok; t++) {                   // the fused gate/up layout [g | u] per token
        memcpy(gu + (size_t)t * 2 * hid, g + (size_t)t * hid, hid * 4);
        memcpy(gu + (size_t)t * 2 * hid + hid, u + (size_t)t * hid, hid * 4);
    }
    float *dg = (float *)to_dev(g, N * 4), *du = (float *)to_dev(u, N * 4), *dgu = (float *)to_dev(gu, 2 * N * 4), *dh;
    CUDA_CHECK(cudaMalloc(&dh, N * 4));
    double us = time_us([&] { cuda_swiglu(dh, DTYPE_F32, dgu, tok, hid, 0); });
    from_dev(got, dh, N * 4);
    report("swiglu", "64 x 14336 f32", max_rel(got, ref, N), 1e-6, us, 3.0 * N * 4);
    cudaFree(dgu); free(gu);
    // residual add of a 2-plane GEMM output: g += (u + g), checked exactly
    float *parts = (float *)xmalloc(2 * N * 4), *dp;
    memcpy(parts, u, N * 4); memcpy(parts + N, g, N * 4);
    for (size_t i = 0; i < N; i++) ref[i] = g[i] + (u[i] + g[i]);
    dp = (float *)to_dev(parts, 2 * N * 4);
    cuda_add_splits(dg, dp, N, 2, 1, 0);
    from_dev(got, dg, N * 4);
    double err = max_rel(got, ref, N);
    us = time_us([&] { cuda_add_splits(dg, dp, N, 2, 1, 0); });
    report("residual", "64 x 14336, 2 planes", err, 0.0, us, 4.0 * N * 4);
    cudaFree(dp); free(parts);
    cudaFree(dg); cudaFree(du); cudaFree(dh); free(g); free(u); free(ref); free(got);
}

static void check_softmax(void) {
    const int rows = 32, n = 32768;
    size_t N = (size_t)rows * n;
    float *x = (float *)xmalloc(N * 4), *ref = (float *)xmalloc(N * 4), *got = (float *)xmalloc(N * 4);
    fill(x, N, 10.0f);
    memcpy(ref, x, N * 4);
    for (int r = 0; r < rows; r++) softmax(ref + (size_t)r * n, n);
    float *dx = (float *)to_dev(x, N * 4);
    cuda_softmax(dx, rows, n, 0);
    from_dev(got, dx, N * 4);
    double err = max_rel(got, ref, N);
    float *dy = (float *)to_dev(x, N * 4);
    report("softmax", "32 rows x 32768", err, 1e-5, time_us([&] { cuda_softmax(dy, rows, n, 0); }), 2.0 * N * 4);
    cudaFree(dx); cudaFree(dy); free(x); free(ref); free(got);
}

// The projections: cublasGemmEx over the planes of a split input, as forward_cuda.cu calls
// it, then the planes summed; against the CPU matmul on the f32 input.
static void check_gemm(DType t, int n, int k, int d) {
    float *w = (float *)xmalloc((size_t)d * k * 4), *x = (float *)xmalloc((size_t)n * k * 4);
    float *ref = (float *)xmalloc((size_t)n * d * 4), *got = (float *)xmalloc((size_t)n * d * 4);
    fill(w, (size_t)d * k, 0.02f); fill(x, (size_t)n * k, 1.0f);
    int ns = act_splits(t);
    void *wt = to_dtype(w, (size_t)d * k, t), *xt = split_planes(x, (size_t)n * k, t);
    matmul(ref, x, wt, t, n, k, d);
    void *dw = to_dev(wt, (size_t)d * k * dtype_size(t)), *dx = to_dev(xt, (size_t)ns * n * k * dtype_size(t));
    float *dout, *dparts; CUDA_CHECK(cudaMalloc(&dout, (size_t)n * d * 4));
    CUDA_CHECK(cudaMalloc(&dparts, (size_t)ns * n * d * 4));
    cublasHandle_t h; CUBLAS_CHECK(cublas()->create(&h));
    cudaDataType ct = t == DTYPE_F32 ? CUDA_R_32F : t == DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const float alpha = 1.0f, beta = 0.0f;
    double us = time_us([&] {
        CUBLAS_CHECK(cublas()->gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, d, n * ns, k, &alpha, dw, ct, k, dx, ct, k, &beta,
                                       dparts, CUDA_R_32F, d, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        cuda_add_splits(dout, dparts, (size_t)n * d, ns, 0, 0); });
    from_dev(got, dout, (size_t)n * d * 4);
    char cfg[64]; snprintf(cfg, sizeof cfg, "%s %d(x%d planes) x %d x %d", dtype_name(t), n, ns, k, d);
    // fp32 accumulation in another order; the planes carry x to 2^-22
    report("gemm", cfg, max_rel(got, ref, (size_t)n * d), 2e-5, us,
           (double)d * k * dtype_size(t) + (double)ns * n * (k * dtype_size(t) + d * 4));
    cublas()->destroy(h); cudaFree(dw); cudaFree(dx); cudaFree(dout); cudaFree(dparts); free(w); free(x); free(ref); free(got); free(wt); free(xt);
}

// The decode projection (gemv.cu) against the CPU's matmul, on n tokens of f32 x, for two
// matrices stacked in one launch (as wq, wk, wv are), and accumulating (as wo, w_down do). Timed
// on a matrix larger than the L2 cache (Llama-3-8B's w_gate_up, 235 MB in bf16), where the
// kernel must stream the weights from memory.
static void check_gemv(DType t, int n, int k, int d, int accumulate) {
    const int d1 = d / 4, d0 = d - d1;                // two stacked matrices: d0 rows, then d1
    float *w = (float *)xmalloc((size_t)d * k * 4), *x = (float *)xmalloc((size_t)n * k * 4);
    float *ref = (float *)xmalloc((size_t)n * d * 4), *got = (float *)xmalloc((size_t)n * d * 4);
    float *init = (float *)xmalloc((size_t)n * d * 4);
    fill(w, (size_t)d * k, 0.02f); fill(x, (size_t)n * k, 1.0f); fill(init, (size_t)n * d, 1.0f);
    void *wt = to_dtype(w, (size_t)d * k, t);
    float *ref0 = (float *)xmalloc((size_t)n * d0 * 4), *ref1 = (float *)xmalloc((size_t)n * d1 * 4);
    matmul(ref0, x, wt, t, n, k, d0);
    matmul(ref1, x, (char *)wt + (size_t)d0 * k * dtype_size(t), t, n, k, d1);
    for (int i = 0; i < n; i++)                     // outputs as [matrix][token][row]
        for (int r = 0; r < d; r++) {
            float v = r < d0 ? ref0[(size_t)i * d0 + r] : ref1[(size_t)i * d1 + r - d0];
            size_t o = r < d0 ? (size_t)i * d0 + r : (size_t)n * d0 + (size_t)i * d1 + r - d0;
            ref[o] = v + (accumulate ? init[o] : 0.0f);
        }
    char *dw = (char *)to_dev(wt, (size_t)d * k * dtype_size(t));
    float *dx = (float *)to_dev(x, (size_t)n * k * 4), *dout = (float *)to_dev(init, (size_t)n * d * 4);
    GemvRows m = { 2, { dw, dw + (size_t)d0 * k * dtype_size(t) }, { dout, dout + (size_t)n * d0 }, { d0, d1 }, { 0, d0, d } };
    cuda_gemv(&m, dx, n, k, t, accumulate, 0);
    from_dev(got, dout, (size_t)n * d * 4);
    double err = max_rel(got, ref, (size_t)n * d);
    const GemvVariant vs[] = { { 2, 1, 0 }, { 4, 1, 0 }, { 2, 2, 0 }, { 4, 2, 0 }, { 2, 1, 1 }, { 4, 1, 1 }, { 2, 2, 1 }, { 4, 2, 1 } };
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {     // each variant checked, then timed
        CUDA_CHECK(cudaMemcpy(dout, init, (size_t)n * d * 4, cudaMemcpyHostToDevice));
        cuda_gemv_variant(&m, dx, n, k, t, accumulate, vs[i], 0);
        from_dev(got, dout, (size_t)n * d * 4);
        double e = fmax(err, max_rel(got, ref, (size_t)n * d));
        char cfg[80];
        snprintf(cfg, sizeof cfg, "%s %d tok x %d x %d%s, %d/%d/%s", dtype_name(t), n, k, d, accumulate ? " +=" : "",
                 vs[i].depth, vs[i].rows_per_warp, vs[i].stream ? "cs" : "ldg");
        double us = time_us([&] { cuda_gemv_variant(&m, dx, n, k, t, 0, vs[i], 0); });
        report("gemv", cfg, e, 2e-5, us, (double)d * k * dtype_size(t) + (double)n * (k + d) * 4);
    }
    cudaFree(dw); cudaFree(dx); cudaFree(dout);
    free(w); free(x); free(ref); free(got); free(init); free(wt); free(ref0); free(ref1);
}

// ---- the quantized cache -------------------------------------------------------------------------

typedef struct { const char *name; int kb, vb, group, residual, axis, sym, sink; } CacheCase;
static const CacheCase cases[] = {
    { "fp16",               16, 16, -1,  0, KEY_AXIS_TOKEN,   0, 0 },
    { "kv8 pertoken",        8,  8, -1,  0, KEY_AXIS_TOKEN,   0, 0 },
    { "k8v4 pertoken",       8,  4, -1,  0, KEY_AXIS_TOKEN,   0, 0 },
    { "kv4 pertoken sym",    4,  4, -1,  0, KEY_AXIS_TOKEN,   1, 0 },
    { "kv2 G32 R64 sink4",   2,  2, 32, 64, KEY_AXIS_TOKEN,   0, 4 },
    { "k8v4 kivi",           8,  4, 32, 32, KEY_AXIS_CHANNEL, 0, 0 },
    { "k4v2 kivi sink4",     4,  2, 32, 32, KEY_AXIS_CHANNEL, 0, 4 },
    { "mixed heads kivi",    0,  0, 32, 32, KEY_AXIS_CHANNEL, 0, 0 },   // bits vary by layer/head
};

static void make_spec(KVSpec *s, const CacheCase *cc, int layers, int heads, int hd) {
    build_kvspec_uniform(s, layers, heads, hd, cc->kb ? cc->kb : 8, cc->vb ? cc->vb : 8);
    s->group = cc->group; s->residual = cc->residual; s->key_axis = cc->axis; s->symmetric = cc->sym; s->sink = cc->sink;
    if (!cc->kb) {
        const int set[4] = { 16, 8, 4, 2 };
        for (int i = 0; i < layers * heads; i++) s->bits[i] = (KVBits){ set[i % 4], set[(i / 2 + 1) % 4] };
    }
}

// Append the same K/V to a CPU cache token by token and to a GPU cache in uneven batches;
// the GPU cache, copied back, must be byte-identical. Then attention of one query over it.
static void check_cache(const CacheCase *cc) {
    const int layers = 2, heads = 8, hd = 128, n_heads = 32, T = 300;
    const int64_t cap = 512;
    int kvd = heads * hd;
    KVSpec spec;
    make_spec(&spec, cc, layers, heads, hd);
    KVCache *cpu = build_kvcache(&spec, cap), *back = build_kvcache(&spec, cap);
    CudaKVCache *gpu = build_cuda_kvcache(&spec, cap);
    float *k = (float *)xmalloc((size_t)T * kvd * 4), *v = (float *)xmalloc((size_t)T * kvd * 4);
    fill(k, (size_t)T * kvd, 4.0f); fill(v, (size_t)T * kvd, 2.0f);
    for (int l = 0; l < layers; l++) {
        for (int t = 0; t < T; t++) kvcache_append(cpu, l, k + (size_t)t * kvd, v + (size_t)t * kvd);
        const int sizes[] = { 1, 7, 33, 64, 3, 100 };
        for (int t = 0, i = 0; t < T; i++) {
            int n = sizes[i % 6] < T - t ? sizes[i % 6] : T - t;
            cuda_kvcache_append_host(gpu, l, k + (size_t)t * kvd, v + (size_t)t * kvd, n);
            t += n;
        }
    }
    cuda_kvcache_to_host(gpu, back);
    KVMemory mc = kvcache_memory(cpu, -1), mg = cuda_kvcache_memory(gpu, -1);
    char cfg[80]; snprintf(cfg, sizeof cfg, "%s, %d tok", cc->name, T);
    report("kv-append", cfg, (kvcache_equal(cpu, back) && mc.total == mg.total) ? 0.0 : 1.0, 0.0, 0.0, 0.0);

    // attention over the cache the CPU filled (uploaded), for the last layer, of a next
    // position with its own key and value
    float *q = (float *)xmalloc((size_t)n_heads * hd * 4), *ref = (float *)xmalloc((size_t)n_heads * hd * 4);
    float *got = (float *)xmalloc((size_t)n_heads * hd * 4), *own = (float *)xmalloc((size_t)kvd * 2 * 4);
    fill(q, (size_t)n_heads * hd, 1.0f);
    fill(own, (size_t)kvd, 4.0f); fill(own + kvd, (size_t)kvd, 2.0f);
    AttnRows xc = { q, own, own + kvd, ref, 1, n_heads };
    attention_query(cpu, layers - 1, &xc, ATTN_REFERENCE);
    cuda_kvcache_from_host(gpu, cpu);
    AttnScratch scr;
    build_attn_scratch(&scr, n_heads, hd);
    float *dq = (float *)to_dev(q, (size_t)n_heads * hd * 4), *down = (float *)to_dev(own, (size_t)kvd * 2 * 4), *dout;
    CUDA_CHECK(cudaMalloc(&dout, (size_t)n_heads * hd * 4));
    AttnQueries xg = { dq, down, down + kvd, 1, n_heads };
    cuda_attention(gpu, layers - 1, &xg, T, dout, DTYPE_F32, (size_t)n_heads * hd, &scr, 0);
    from_dev(got, dout, (size_t)n_heads * hd * 4);
    // fp32 sums in another order; the dequantized values themselves are identical
    report("attention", cfg, max_rel(got, ref, (size_t)n_heads * hd), 1e-4, 0.0, 0.0);
    free_attn_scratch(&scr);
    cudaFree(dq); cudaFree(down); cudaFree(dout); free(q); free(ref); free(got); free(own); free(k); free(v);
    free_cuda_kvcache(gpu); free_kvcache(cpu); free_kvcache(back); free_kvspec(&spec);
}

// Bandwidth of append and decode attention at a long context (Llama-3-8B's attention shape).
static void time_cache(const CacheCase *cc, int64_t T) {
    const int heads = 8, hd = 128, n_heads = 32;
    KVSpec spec;
    make_spec(&spec, cc, 1, heads, hd);
    CudaKVCache *gpu = build_cuda_kvcache(&spec, T + 4096);
    cuda_kvcache_fill_random(gpu, T, 7);
    KVMemory m = cuda_kvcache_memory(gpu, 0);
    AttnScratch scr;
    build_attn_scratch(&scr, n_heads, hd);
    float *q = (float *)xmalloc((size_t)n_heads * hd * 4), *dq, *dout, *dk;
    fill(q, (size_t)n_heads * hd, 1.0f);
    dq = (float *)to_dev(q, (size_t)n_heads * hd * 4);
    CUDA_CHECK(cudaMalloc(&dout, (size_t)n_heads * hd * 4));
    const int n = 4096;
    CUDA_CHECK(cudaMalloc(&dk, (size_t)n * heads * hd * 2 * 4));
    CUDA_CHECK(cudaMemset(dk, 0, (size_t)n * heads * hd * 2 * 4));
    AttnQueries x = { dq, dk, dk + (size_t)heads * hd, 1, n_heads };     // own key and value: zeros
    double us = time_us([&] { cuda_attention(gpu, 0, &x, T, dout, DTYPE_F32, (size_t)n_heads * hd, &scr, 0); });
    char cfg[80]; snprintf(cfg, sizeof cfg, "%s, %lld tok, %.2f bits", cc->name, (long long)T, m.bits_per_elem);
    report("attn-time", cfg, 0.0, 0.0, us, (double)m.total);
    // append: 4096 tokens at once (a prefill chunk), reading f32 K/V and writing the cache
    KVMemory before = cuda_kvcache_memory(gpu, 0);
    double ua = time_us([&] {
        gpu->len[0] = T;                            // re-append the same tokens each round
        cuda_kvcache_append(gpu, 0, dk, dk + (size_t)n * heads * hd, n, 0); }, 5);
    KVMemory after = cuda_kvcache_memory(gpu, 0);
    report("append", cfg, 0.0, 0.0, ua, (double)n * heads * hd * 2 * 4 + (double)(after.total - before.total));
    free_attn_scratch(&scr);
    cudaFree(dq); cudaFree(dout); cudaFree(dk); free(q);
    free_cuda_kvcache(gpu); free_kvspec(&spec);
}

// `cuda_check --fault`: the check of the debug mode (cuda_common.h). A kernel writes to an
// address that no allocation owns, a correct kernel follows, then a copy synchronises. With
// KVT_CUDA_SYNC=1 the fault must be reported at the first launch's line (printed first, so
// that tests/test_cuda.c can compare); without it, at the copy. Exits 1 either way.
__global__ void write_ones_kernel(float *p) { p[threadIdx.x] = 1.0f; }

static int planted_fault(void) {
    float *bad = (float *)(uintptr_t)0x1000, *good, h;
    CUDA_CHECK(cudaMalloc(&good, 32 * sizeof(float)));
    printf("planted fault at %s:%d\n", __FILE__, __LINE__ + 2);
    fflush(stdout);
    write_ones_kernel<<<1, 32>>>(bad); CUDA_LAUNCH_CHECK();
    write_ones_kernel<<<1, 32>>>(good); CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaMemcpy(&h, good, sizeof h, cudaMemcpyDeviceToHost));
    printf("FAILED: the planted fault was not reported\n");
    return 1;
}

int main(int argc, char **argv) {
    char why[256];
    if (!cuda_device_available(why, sizeof why)) { printf("skipped: %s\n", why); return 0; }
    if (argc == 2 && !strcmp(argv[1], "--fault")) { cuda_init(); return planted_fault(); }
    if (argc > 1) fatal("cuda_check: unknown argument %s (--fault, or none)", argv[1]);
    printf("cuda-check on %s: error = max |gpu - cpu| / max |cpu|\n", cuda_init());
    check_embed(DTYPE_F16); check_embed(DTYPE_BF16);
    check_rmsnorm(DTYPE_F32); check_rmsnorm(DTYPE_F16); check_rmsnorm(DTYPE_BF16);
    check_rope(0); check_rope(1);
    check_swiglu_residual();
    check_softmax();
    check_gemm(DTYPE_F32, 1, 4096, 4096); check_gemm(DTYPE_F16, 1, 4096, 4096); check_gemm(DTYPE_BF16, 1, 4096, 4096);
    check_gemm(DTYPE_BF16, 64, 4096, 4096);
    check_gemm(DTYPE_BF16, 1, 4096, 28672);             // beside the GEMV below, larger than the L2
    // Llama-3-8B's projections in bf16 (wq|wk|wv, wo, w_gate_up, w_down), then other dtypes and shapes
    check_gemv(DTYPE_BF16, 1, 4096, 6144, 0); check_gemv(DTYPE_BF16, 1, 4096, 4096, 1);
    check_gemv(DTYPE_BF16, 1, 4096, 28672, 0); check_gemv(DTYPE_BF16, 1, 14336, 4096, 1);
    check_gemv(DTYPE_F32, 1, 2048, 4096, 0); check_gemv(DTYPE_F16, 3, 576, 1536, 1); check_gemv(DTYPE_BF16, 4, 4096, 1024, 1);
    check_gemv(DTYPE_F16, 2, 4096, 28672, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_cache(&cases[i]);
    for (size_t i = 0; i < 6; i++) time_cache(&cases[i], 32768);
    printf("%s: %d check(s) failed\n", failures ? "FAILED" : "all passed", failures);
    return failures ? 1 : 0;
}
