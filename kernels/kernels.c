// kernels.c: the CPU kernels of the forward pass (kernels.h). Plain C11 + OpenMP, with an
// AVX2/FMA/F16C path for matmul chosen at run time, because decode is memory bound: every
// token reads every weight once (SmolLM2-135M in f16: ~270 MB per token), so the inner loop
// must consume the weights at memory speed, converting f16/bf16 to f32 in registers.
// Build with -DKVT_PORTABLE to use only the plain C path.
#include "kernels.h"
#include "matmul_q8.h"
#include "../util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KVT_PORTABLE)
#define KVT_X86 1
#include <immintrin.h>
#endif

// ---- matmul ---------------------------------------------------------------------------
//
// out[t][j] = sum_i x[t][i] * W[j][i]: one row of W per output. Threads split the rows of W
// in blocks of MM_ROWS, so each weight byte is read by one thread only. With a batch
// (prefill) a block is first widened to f32 in a small per-thread buffer and then reused for
// every token; with one token (decode) the rows are converted in registers on the fly.

#define MM_ROWS 4
// Below this many multiply-adds a matmul runs on one thread: waking the team costs more than
// it saves (and far more on a machine with other load, where a barrier can wait a whole
// scheduler slice for a descheduled thread).
#define MM_PARALLEL_MIN (1 << 16)

// Widen n elements of one weight row to f32 (portable path).
static void row_to_f32(float *dst, const void *w, DType wt, size_t row, int k) {
    size_t base = row * (size_t)k;
    if (wt == DTYPE_F32) { memcpy(dst, (const float *)w + base, (size_t)k * sizeof(float)); return; }
    const uint16_t *h = (const uint16_t *)w + base;
    if (wt == DTYPE_F16) for (int i = 0; i < k; i++) dst[i] = fp16_to_fp32(h[i]);
    else                 for (int i = 0; i < k; i++) dst[i] = bf16_to_fp32(h[i]);
}

static float dot_f32(const float *a, const float *b, int k) {
    float s = 0.0f;
    for (int i = 0; i < k; i++) s += a[i] * b[i];
    return s;
}

// Multiply-adds of a matmul_multi call, and which output row block `b` (of MM_ROWS rows) of the
// concatenated outputs falls in (*j0: its first row there).
static int64_t multi_work(int n, int k, const MatmulOut *o, int count, int *nblocks) {
    int64_t work = 0;
    *nblocks = 0;
    for (int i = 0; i < count; i++) { work += (int64_t)n * k * o[i].d; *nblocks += (o[i].d + MM_ROWS - 1) / MM_ROWS; }
    return work;
}
static const MatmulOut *multi_block(const MatmulOut *o, int b, int *j0) {
    while (b >= (o->d + MM_ROWS - 1) / MM_ROWS) b -= (o++->d + MM_ROWS - 1) / MM_ROWS;
    *j0 = b * MM_ROWS;
    return o;
}

static void matmul_portable(const float *x, DType wt, int n, int k, const MatmulOut *outs, int count) {
    int nblocks;
    int64_t work = multi_work(n, k, outs, count, &nblocks);
    (void)work;                                    // (unused without OpenMP)
    #pragma omp parallel if (work >= MM_PARALLEL_MIN)
    {
        float *row = xmalloc((size_t)k * sizeof(float));
        #pragma omp for schedule(static)
        for (int b = 0; b < nblocks; b++) {
            int j0;
            const MatmulOut *o = multi_block(outs, b, &j0);
            for (int j = j0; j < j0 + MM_ROWS && j < o->d; j++) {
                row_to_f32(row, o->w, wt, (size_t)j, k);
                for (int t = 0; t < n; t++) o->out[(size_t)t * o->d + j] = dot_f32(x + (size_t)t * k, row, k);
            }
        }
        free(row);
    }
}

#ifdef KVT_X86
#define AVX_TARGET __attribute__((target("avx2,fma,f16c")))

// Load 8 weights starting at element i of a row as f32.
AVX_TARGET static inline __m256 load8(const void *w, DType wt, size_t i) {
    if (wt == DTYPE_F32) return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (wt == DTYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));   // bf16
}

AVX_TARGET static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float wscalar(const void *w, DType wt, size_t i) {
    if (wt == DTYPE_F32) return ((const float *)w)[i];
    uint16_t h = ((const uint16_t *)w)[i];
    return wt == DTYPE_F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
}

// Widen one row to f32 (8 at a time).
AVX_TARGET static void row_to_f32_avx(float *dst, const void *w, DType wt, size_t base, int k) {
    int i = 0;
    for (; i + 8 <= k; i += 8) _mm256_storeu_ps(dst + i, load8(w, wt, base + i));
    for (; i < k; i++) dst[i] = wscalar(w, wt, base + i);
}

// Four rows (starting at elements r[0..3] of w) against one token x[k]. Each x load feeds
// four independent FMA chains. `next` (or NULL) is the start of the next four rows, which are
// prefetched while these are summed: rows of a small model are only ~1 KB, too short for the
// hardware prefetcher to ramp up, and this alone nearly doubles decode speed. Both matmul paths use this one function — on the weights
// directly (decode) or on rows already widened to f32 (prefill) — so a token's outputs are
// bit-identical whatever the batch size: prefill and decode agree exactly.
AVX_TARGET static inline __attribute__((always_inline))
void dot4_avx(float *o, const float *x, const void *w, DType wt, const size_t r[4], int k, const char *next) {
    size_t es = (size_t)dtype_size(wt);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        if (next && ((i * es) & 63) == 0)   // one prefetch per cache line of each next row
            for (int q = 0; q < 4; q++) _mm_prefetch(next + (size_t)q * k * es + (size_t)i * es, _MM_HINT_T0);
        a0 = _mm256_fmadd_ps(load8(w, wt, r[0] + i), xv, a0);
        a1 = _mm256_fmadd_ps(load8(w, wt, r[1] + i), xv, a1);
        a2 = _mm256_fmadd_ps(load8(w, wt, r[2] + i), xv, a2);
        a3 = _mm256_fmadd_ps(load8(w, wt, r[3] + i), xv, a3);
    }
    float s0 = hsum8(a0), s1 = hsum8(a1), s2 = hsum8(a2), s3 = hsum8(a3);
    for (; i < k; i++) {
        s0 += x[i] * wscalar(w, wt, r[0] + i); s1 += x[i] * wscalar(w, wt, r[1] + i);
        s2 += x[i] * wscalar(w, wt, r[2] + i); s3 += x[i] * wscalar(w, wt, r[3] + i);
    }
    o[0] = s0; o[1] = s1; o[2] = s2; o[3] = s3;
}

// dot4_avx on f32 rows for three tokens at once: twelve FMA chains (4 rows x 3 tokens), each
// row load used three times and each token load four times, so the loop is bound by the FMA
// units rather than by loads (12 accumulators + 3 tokens + 1 row = the 16 ymm registers).
// Every (row, token) sum runs in the same order as in dot4_avx, so the results are identical
// to three dot4_avx calls (prefill still reproduces decode bit for bit).
AVX_TARGET static inline __attribute__((always_inline))
void dot4x3_f32(float *o0, float *o1, float *o2, const float *x0, const float *x1, const float *x2,
                const float *w, int k) {
    const float *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps(), c3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 xa = _mm256_loadu_ps(x0 + i), xb = _mm256_loadu_ps(x1 + i), xc = _mm256_loadu_ps(x2 + i), wv;
        wv = _mm256_loadu_ps(w0 + i); a0 = _mm256_fmadd_ps(wv, xa, a0); b0 = _mm256_fmadd_ps(wv, xb, b0); c0 = _mm256_fmadd_ps(wv, xc, c0);
        wv = _mm256_loadu_ps(w1 + i); a1 = _mm256_fmadd_ps(wv, xa, a1); b1 = _mm256_fmadd_ps(wv, xb, b1); c1 = _mm256_fmadd_ps(wv, xc, c1);
        wv = _mm256_loadu_ps(w2 + i); a2 = _mm256_fmadd_ps(wv, xa, a2); b2 = _mm256_fmadd_ps(wv, xb, b2); c2 = _mm256_fmadd_ps(wv, xc, c2);
        wv = _mm256_loadu_ps(w3 + i); a3 = _mm256_fmadd_ps(wv, xa, a3); b3 = _mm256_fmadd_ps(wv, xb, b3); c3 = _mm256_fmadd_ps(wv, xc, c3);
    }
    float s[12] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3), hsum8(b0), hsum8(b1), hsum8(b2), hsum8(b3),
                   hsum8(c0), hsum8(c1), hsum8(c2), hsum8(c3)};
    const float *x[3] = {x0, x1, x2};
    for (; i < k; i++)
        for (int t = 0; t < 3; t++)
            for (int q = 0; q < 4; q++) s[4 * t + q] += x[t][i] * w[(size_t)q * k + i];
    for (int q = 0; q < 4; q++) { o0[q] = s[q]; o1[q] = s[4 + q]; o2[q] = s[8 + q]; }
}

// One block of MM_ROWS rows starting at row j0 (nr of them real; a short last block repeats
// its last row) for every token. Few tokens (decode): read the weights in place. A batch:
// widen the rows to f32 once into `buf`, then reuse them for every token.
AVX_TARGET static inline __attribute__((always_inline))
void block_avx(float *out, const float *x, const void *w, DType wt, int n, int k, int d, int j0, float *buf) {
    int nr = d - j0 < MM_ROWS ? d - j0 : MM_ROWS;
    size_t r[MM_ROWS];
    float o[MM_ROWS];
    if (n < 4) {
        for (int q = 0; q < MM_ROWS; q++) r[q] = (size_t)(j0 + (q < nr ? q : nr - 1)) * k;
        const char *next = j0 + 2 * MM_ROWS <= d ? (const char *)w + (size_t)(j0 + MM_ROWS) * k * dtype_size(wt) : NULL;
        for (int t = 0; t < n; t++) {
            dot4_avx(o, x + (size_t)t * k, w, wt, r, k, t == 0 ? next : NULL);
            for (int q = 0; q < nr; q++) out[(size_t)t * d + j0 + q] = o[q];
        }
        return;
    }
    for (int q = 0; q < MM_ROWS; q++) {
        row_to_f32_avx(buf + (size_t)q * k, w, wt, (size_t)(j0 + (q < nr ? q : nr - 1)) * k, k);
        r[q] = (size_t)q * k;
    }
    int t = 0;
    for (; t + 3 <= n; t += 3) {
        float o1[MM_ROWS], o2[MM_ROWS];
        const float *xt = x + (size_t)t * k;
        dot4x3_f32(o, o1, o2, xt, xt + k, xt + 2 * (size_t)k, buf, k);
        float *ot = out + (size_t)t * d + j0;
        for (int q = 0; q < nr; q++) { ot[q] = o[q]; ot[d + q] = o1[q]; ot[2 * (size_t)d + q] = o2[q]; }
    }
    for (; t < n; t++) {
        dot4_avx(o, x + (size_t)t * k, buf, DTYPE_F32, r, k, NULL);
        for (int q = 0; q < nr; q++) out[(size_t)t * d + j0 + q] = o[q];
    }
}

AVX_TARGET static void matmul_avx(const float *x, DType wt, int n, int k, const MatmulOut *outs, int count) {
    int nblocks;
    int64_t work = multi_work(n, k, outs, count, &nblocks);
    #pragma omp parallel if (work >= MM_PARALLEL_MIN)
    {
        float *buf = n < 4 ? NULL : xmalloc((size_t)MM_ROWS * k * sizeof(float));
        #pragma omp for schedule(static)
        for (int b = 0; b < nblocks; b++) {
            int j0;
            const MatmulOut *o = multi_block(outs, b, &j0);
            // a switch on the dtype so that each case compiles to its own inner loop
            if (wt == DTYPE_F16) block_avx(o->out, x, o->w, DTYPE_F16, n, k, o->d, j0, buf);
            else if (wt == DTYPE_BF16) block_avx(o->out, x, o->w, DTYPE_BF16, n, k, o->d, j0, buf);
            else block_avx(o->out, x, o->w, DTYPE_F32, n, k, o->d, j0, buf);
        }
        free(buf);
    }
}

#endif

// Each answer is asked of the CPU once, then kept.
int cpu_has_avx2(void) {
#ifdef KVT_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return cached;
#else
    return 0;
#endif
}

int cpu_has_avx512vnni(void) {
#ifdef KVT_X86
    static int cached = -1;
    if (cached < 0)
        cached = cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512vnni");
    return cached;
#else
    return 0;
#endif
}

void matmul_multi(const float *x, DType wt, int n, int k, const MatmulOut *outs, int count) {
    if (wt == DTYPE_Q8_0) { matmul_q8_0_multi(q8_variant_best(), x, n, k, outs, count); return; }   // integer dot products
#ifdef KVT_X86
    if (cpu_has_avx2()) { matmul_avx(x, wt, n, k, outs, count); return; }
#endif
    matmul_portable(x, wt, n, k, outs, count);
}

void matmul(float *out, const float *x, const void *w, DType wt, int n, int k, int d) {
    MatmulOut o = {out, w, d};
    matmul_multi(x, wt, n, k, &o, 1);
}

// ---- normalisation, activations --------------------------------------------------------

void rmsnorm(float *o, const float *x, const float *weight, int n, int dim, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * dim;
        float *ot = o + (size_t)t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
        float r = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++) ot[i] = weight[i] * (xt[i] * r);
    }
}

void softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void swiglu(float *h, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void embed(float *out, const void *table, DType wt, int dim, int token) {
    if (wt == DTYPE_Q8_0) q8_0_dequantize_row(out, (const BlockQ8_0 *)table + (size_t)token * (dim / Q8_0_BLOCK), dim);
    else row_to_f32(out, table, wt, (size_t)token, dim);
}

// ---- RoPE --------------------------------------------------------------------------------

// inv_freq_i = theta^(-2i/d). Llama-3.1 scaling (as transformers' _compute_llama3_parameters):
// wavelengths longer than orig_ctx/low_freq_factor are divided by `factor`, those shorter than
// orig_ctx/high_freq_factor are kept, and the band between is interpolated smoothly.
void rope_freqs(float *freqs, const Config *c) {
    int hd = c->head_dim;
    for (int i = 0; i < hd / 2; i++) {
        // transformers computes base ** (2i/d as float32) in float32; the exponent is formed
        // the same way so the two agree to rounding.
        float e = (float)(2 * i) / (float)hd;
        double f = 1.0 / pow((double)c->rope_theta, (double)e);
        if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
            double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
            double orig = c->rope_orig_ctx;
            double low_wavelen = orig / lo, high_wavelen = orig / hi;
            double wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) f = f / factor;                      // low frequency
            else if (wavelen >= high_wavelen) {                              // medium: interpolate
                double smooth = (orig / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }                                                                // high: unchanged
        }
        freqs[i] = (float)f;
    }
}

// Angles as transformers forms them: the f32 product pos * inv_freq, then cos and sin.
void rope(float *x, int n_heads, int head_dim, int pos, const float *freqs) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * freqs[i];
        float c = cosf(angle), s = sinf(angle);
        for (int h = 0; h < n_heads; h++) {
            float *p = x + (size_t)h * head_dim + 2 * i;
            float a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}
