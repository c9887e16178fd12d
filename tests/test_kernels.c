// test_kernels.c: every CPU kernel against a plain double-precision reference, and
// rope_freqs against inverse frequencies computed by transformers
// (tests/golden/rope_freqs.txt, made by tests/reference/make_rope_golden.py).
#include "testutil.h"
#include "../kernels/kernels.h"
#include "../kernels/matmul_q8.h"
#include "../util/util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Deterministic values in [-1, 1).
static uint32_t rng_state = 12345;
static float frand(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 17; rng_state ^= rng_state << 5;
    return (float)((rng_state >> 8) / 8388608.0 - 1.0);
}
static void fill(float *x, size_t n, float scale) { for (size_t i = 0; i < n; i++) x[i] = scale * frand(); }

// ---- matmul ----------------------------------------------------------------------------

// Store w (f32) in dtype wt; return the weights as the kernel will see them (rounded) in wr.
static void *encode_weights(const float *w, float *wr, size_t n, DType wt) {
    void *out = xmalloc(n * (size_t)dtype_size(wt));
    for (size_t i = 0; i < n; i++) {
        if (wt == DTYPE_F32) { ((float *)out)[i] = w[i]; wr[i] = w[i]; }
        else if (wt == DTYPE_F16) { uint16_t h = fp32_to_fp16(w[i]); ((uint16_t *)out)[i] = h; wr[i] = fp16_to_fp32(h); }
        else { uint16_t b = fp32_to_bf16(w[i]); ((uint16_t *)out)[i] = b; wr[i] = bf16_to_fp32(b); }
    }
    return out;
}

static BlockQ8_0 *random_q8_0(int d, int k);   // with the Q8_0 tests below

static void check_matmul(DType wt, int n, int k, int d) {
    float *x = xmalloc((size_t)n * k * sizeof(float)), *w = xmalloc((size_t)d * k * sizeof(float));
    float *wr = xmalloc((size_t)d * k * sizeof(float)), *out = xmalloc((size_t)n * d * sizeof(float));
    fill(x, (size_t)n * k, 1.0f);
    fill(w, (size_t)d * k, 0.5f);
    void *wq = encode_weights(w, wr, (size_t)d * k, wt);
    for (size_t i = 0; i < (size_t)n * d; i++) out[i] = NAN;   // every output must be written
    matmul(out, x, wq, wt, n, k, d);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < d; j++) {
            double ref = 0, mag = 0;
            for (int i = 0; i < k; i++) {
                ref += (double)x[(size_t)t * k + i] * wr[(size_t)j * k + i];
                mag += fabs((double)x[(size_t)t * k + i] * wr[(size_t)j * k + i]);
            }
            double got = out[(size_t)t * d + j];
            ck_assert_msg(fabs(got - ref) <= 1e-5 * mag + 1e-6,
                          "matmul %s n=%d k=%d d=%d: out[%d][%d] = %.8g, reference %.8g",
                          dtype_name(wt), n, k, d, t, j, got, ref);
        }
    free(x); free(w); free(wr); free(out); free(wq);
}

START_TEST(test_matmul_all_dtypes) {
    const int ns[] = {1, 2, 3, 4, 5, 9}, ks[] = {1, 7, 8, 33, 64, 200}, ds[] = {1, 3, 4, 13};
    for (DType wt = DTYPE_F32; wt <= DTYPE_BF16; wt++)
        for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
            for (size_t b = 0; b < sizeof ks / sizeof *ks; b++)
                for (size_t c = 0; c < sizeof ds / sizeof *ds; c++) check_matmul(wt, ns[a], ks[b], ds[c]);
}
END_TEST

START_TEST(test_matmul_model_sizes) {
    // SmolLM2 shapes: decode (n=1) and a prefill batch, q projection and FFN down projection.
    for (DType wt = DTYPE_F32; wt <= DTYPE_BF16; wt++) {
        check_matmul(wt, 1, 576, 576);
        check_matmul(wt, 7, 576, 192);
        check_matmul(wt, 3, 1536, 577);
    }
}
END_TEST

START_TEST(test_matmul_batched_equals_single) {
    // A batch of n tokens must give exactly the same rows as n separate calls: prefill and
    // decode sum in the same order (kernels.c), so a batched prefill reproduces decoding.
    int n = 6, k = 128, d = 37;
    float *x = xmalloc((size_t)n * k * 4), *w = xmalloc((size_t)d * k * 4), *wr = xmalloc((size_t)d * k * 4);
    float *ob = xmalloc((size_t)n * d * 4), *o1 = xmalloc((size_t)d * 4);
    fill(x, (size_t)n * k, 1.0f);
    fill(w, (size_t)d * k, 1.0f);
    for (DType wt = DTYPE_F32; wt <= DTYPE_Q8_0; wt++) {
        void *wq = wt == DTYPE_Q8_0 ? random_q8_0(d, k) : encode_weights(w, wr, (size_t)d * k, wt);
        matmul(ob, x, wq, wt, n, k, d);
        for (int t = 0; t < n; t++) {
            matmul(o1, x + (size_t)t * k, wq, wt, 1, k, d);
            for (int j = 0; j < d; j++)
                ck_assert_msg(o1[j] == ob[(size_t)t * d + j],
                              "%s token %d row %d: batched %g single %g", dtype_name(wt), t, j, ob[(size_t)t * d + j], o1[j]);
        }
        free(wq);
    }
    free(x); free(w); free(wr); free(ob); free(o1);
}
END_TEST

START_TEST(test_matmul_multi_equals_single) {
    // matmul_multi (three outputs of one input, one parallel region) gives each output exactly
    // what its own matmul call gives, for every dtype, in decode and in a batch.
    int k = 96;
    const int ds[3] = {37, 8, 131}, ns[2] = {1, 7};
    float *x = xmalloc(7 * (size_t)k * 4), *w = xmalloc((131 * (size_t)k + 2) * 4), *wr = xmalloc(131 * (size_t)k * 4);
    fill(x, 7 * (size_t)k, 1.0f);
    fill(w, 131 * (size_t)k + 2, 1.0f);              // output i's weights start at w + i
    for (DType wt = DTYPE_F32; wt <= DTYPE_Q8_0; wt++)
        for (int a = 0; a < 2; a++) {
            int n = ns[a];
            void *wq[3];
            MatmulOut o[3];
            float *one = xmalloc((size_t)n * 131 * 4);
            for (int i = 0; i < 3; i++) {
                wq[i] = wt == DTYPE_Q8_0 ? random_q8_0(ds[i], k) : encode_weights(w + i, wr, (size_t)ds[i] * k, wt);
                o[i] = (MatmulOut){xmalloc((size_t)n * ds[i] * 4), wq[i], ds[i]};
                for (size_t e = 0; e < (size_t)n * ds[i]; e++) o[i].out[e] = NAN;
            }
            matmul_multi(x, wt, n, k, o, 3);
            for (int i = 0; i < 3; i++) {
                matmul(one, x, wq[i], wt, n, k, ds[i]);
                for (size_t e = 0; e < (size_t)n * ds[i]; e++)
                    ck_assert_msg(o[i].out[e] == one[e], "%s n=%d output %d [%zu]: multi %g, single %g", dtype_name(wt), n, i, e,
                                  o[i].out[e], one[e]);
                free(o[i].out);
                free(wq[i]);
            }
            free(one);
        }
    free(x); free(w); free(wr);
}
END_TEST

// ---- Q8_0 weights (kernels/matmul_q8.c) ---------------------------------------------------
//
// The plain reference below is the definition of the Q8_0 matmul, written out with nothing
// shared with kernels/matmul_q8.c: activations quantized per block of 32 (d = amax/127,
// codes x * (1/d) rounded to nearest even), an exact integer dot per block, and per block
// s = fmaf(isum, d_w * d_x, s) in block order. Every variant must give its bits exactly
// (asserted with ==: the integer sums are exact and the float steps are the same, in the
// same order). A second check holds the reference itself to the exact sum of x * dequantized
// w (in double): the only difference is the rounding of x to its codes, at most d_x/2 per
// element, so |ref - exact| <= sum_b (d_x[b]/2) * sum_i |w_i| + 1e-5 * sum |x_i w_i|.

static void ref_quantize_act(int8_t *xq, float *xd, const float *x, int k) {
    for (int b = 0; b < k / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[32 * b + i]));
        float d = amax / 127.0f, id = d >= FLT_MIN ? 1.0f / d : 0.0f;
        xd[b] = d;
        for (int i = 0; i < 32; i++) xq[32 * b + i] = (int8_t)lrintf(x[32 * b + i] * id);
    }
}

static float ref_dot_q8_0(const BlockQ8_0 *w, const int8_t *xq, const float *xd, int nb) {
    float s = 0;
    for (int b = 0; b < nb; b++) {
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += w[b].q[i] * xq[32 * b + i];
        s = fmaf((float)isum, fp16_to_fp32(w[b].d) * xd[b], s);
    }
    return s;
}

// Random Q8_0 weights [d][k]: scales of varied size (some zero, some fp16 subnormal), codes in
// [-127, 127], a few -128 (GGUF files may hold them; the kernels must not overflow on them).
static BlockQ8_0 *random_q8_0(int d, int k) {
    size_t nb = (size_t)d * (k / 32);
    BlockQ8_0 *w = xmalloc(nb * sizeof *w);
    for (size_t b = 0; b < nb; b++) {
        float scale = b % 17 == 5 ? 0.0f : b % 13 == 3 ? 3e-6f : 0.02f * (1.5f + frand());
        w[b].d = fp32_to_fp16(scale);
        for (int i = 0; i < 32; i++) w[b].q[i] = (int8_t)lrintf(127.0f * frand());
        if (b % 7 == 2) w[b].q[b % 32] = -128;
    }
    return w;
}

static void check_matmul_q8(int n, int k, int d) {
    int nb = k / 32;
    float *x = xmalloc((size_t)n * k * 4), *out = xmalloc((size_t)n * d * 4), *ref = xmalloc((size_t)n * d * 4);
    fill(x, (size_t)n * k, 2.0f);
    if (k >= 64) for (int i = 32; i < 64; i++) x[i] = 0.0f;            // an all-zero block
    x[k - 1] *= 50.0f;                                                // one outlier
    BlockQ8_0 *w = random_q8_0(d, k);
    int8_t *xq = xmalloc((size_t)k);
    float *xd = xmalloc((size_t)nb * 4), *wrow = xmalloc((size_t)k * 4);
    for (int t = 0; t < n; t++) {
        ref_quantize_act(xq, xd, x + (size_t)t * k, k);
        for (int j = 0; j < d; j++) {
            const BlockQ8_0 *row = w + (size_t)j * nb;
            float r = ref_dot_q8_0(row, xq, xd, nb);
            ref[(size_t)t * d + j] = r;
            double exact = 0, mag = 0, bound = 0;
            for (int b = 0; b < nb; b++) {
                double wabs = 0;
                for (int i = 0; i < 32; i++) {
                    double wv = (double)fp16_to_fp32(row[b].d) * row[b].q[i], xv = x[(size_t)t * k + 32 * b + i];
                    exact += wv * xv;
                    mag += fabs(wv * xv);
                    wabs += fabs(wv);
                }
                bound += xd[b] / 2 * wabs;
            }
            ck_assert_msg(fabs(r - exact) <= bound + 1e-5 * mag + 1e-30, "reference n=%d k=%d d=%d [%d][%d]: %.8g vs exact %.8g (bound %g)",
                          n, k, d, t, j, r, exact, bound);
        }
    }
    for (Q8Variant v = Q8_PORTABLE; v < Q8_VARIANTS; v++) {
        if (!q8_variant_available(v)) continue;   // test_matmul_q8_0 says which were skipped
        for (size_t i = 0; i < (size_t)n * d; i++) out[i] = NAN;   // every output must be written
        matmul_q8_0_variant(v, out, x, w, n, k, d);
        for (size_t i = 0; i < (size_t)n * d; i++)
            ck_assert_msg(out[i] == ref[i], "q8_0 %s n=%d k=%d d=%d: out[%zu] = %.9g, reference %.9g", q8_variant_name(v), n, k,
                          d, i, out[i], ref[i]);
    }
    free(x); free(out); free(ref); free(w); free(xq); free(xd); free(wrow);
}

START_TEST(test_matmul_q8_0) {
    const int ns[] = {1, 2, 3, 5}, ks[] = {32, 64, 96, 576}, ds[] = {1, 3, 4, 13};
    for (Q8Variant v = Q8_PORTABLE; v < Q8_VARIANTS; v++)
        if (!q8_variant_available(v)) printf("q8_0 %s kernel: skipped (not supported by this CPU)\n", q8_variant_name(v));
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++)
            for (size_t c = 0; c < 4; c++) check_matmul_q8(ns[a], ks[b], ds[c]);
    check_matmul_q8(1, 1536, 577);   // SmolLM2's w_down, decode, rows not a multiple of 4
    check_matmul_q8(7, 576, 192);    // a prefill batch of the k/v projections
    ck_assert(q8_variant_available(Q8_PORTABLE));
    printf("q8_0 matmul: matmul() uses the %s kernel\n", q8_variant_name(q8_variant_best()));
}
END_TEST

START_TEST(test_q8_0_activations) {
    // Every variant's activation quantizer gives the reference's codes and scales, byte for
    // byte; codes are within +-127, the block maximum maps to +-127, each x within d/2 of d*q.
    int k = 32 * 40;
    float *x = xmalloc((size_t)k * 4), xd[40], rd[40];
    int8_t xq[32 * 40], rq[32 * 40];
    fill(x, (size_t)k, 3.0f);
    for (int i = 0; i < 32; i++) x[32 + i] = 0.0f;                          // zero block
    for (int i = 0; i < 32; i++) x[64 + i] = 1e-39f * (float)(i - 16);       // subnormal block: scale below FLT_MIN
    for (int i = 0; i < 32; i++) x[96 + i] = i ? (float)(i - 16) + 0.5f : 127.0f;   // d = 1: exact halves, ties to even
    x[200] = 1e30f;                                                          // huge outlier
    ref_quantize_act(rq, rd, x, k);
    for (int b = 0; b < 40; b++) {
        int qmax = 0;
        for (int i = 0; i < 32; i++) {
            ck_assert(rq[32 * b + i] >= -127 && rq[32 * b + i] <= 127);
            qmax = abs(rq[32 * b + i]) > qmax ? abs(rq[32 * b + i]) : qmax;
            ck_assert(fabsf(x[32 * b + i] - rd[b] * rq[32 * b + i]) <= rd[b] * 0.5f * (1 + 1e-5f) || rd[b] < FLT_MIN);
        }
        ck_assert_int_eq(qmax, rd[b] >= FLT_MIN ? 127 : 0);
    }
    for (Q8Variant v = Q8_PORTABLE; v < Q8_VARIANTS; v++) {
        if (!q8_variant_available(v)) continue;
        memset(xq, 0x55, sizeof xq);
        q8_quantize_act(v, xq, xd, x, k);
        ck_assert_msg(memcmp(xq, rq, sizeof xq) == 0, "%s: codes differ from the reference", q8_variant_name(v));
        ck_assert_msg(memcmp(xd, rd, sizeof xd) == 0, "%s: scales differ from the reference", q8_variant_name(v));
        // A non-finite value gives its block a NaN scale (so the outputs are NaN) and codes 0.
        float keep = x[40];
        x[40] = INFINITY;
        q8_quantize_act(v, xq, xd, x, k);
        ck_assert(isnan(xd[1]) && xd[0] == rd[0]);
        for (int i = 32; i < 64; i++) ck_assert_int_eq(xq[i], 0);
        x[40] = keep;
    }
    free(x);
}
END_TEST

START_TEST(test_q8_0_weight_rows) {
    // The exporter's quantizer: within d/2 of each weight with the stored fp16 d, block max at
    // +-127, zero blocks stay zero, dequantize_row gives d * q; a non-finite weight is refused.
    int k = 32 * 6;
    float x[32 * 6], y[32 * 6];
    fill(x, (size_t)k, 0.1f);
    for (int i = 0; i < 32; i++) x[32 + i] = 0.0f;
    for (int i = 0; i < 32; i++) x[64 + i] = 1e-4f * (float)(i - 16);      // scale becomes an fp16 subnormal
    BlockQ8_0 b[6];
    ck_assert_int_eq(q8_0_quantize_row(b, x, (uint64_t)k), 0);
    q8_0_dequantize_row(y, b, (uint64_t)k);
    for (int blk = 0; blk < 6; blk++) {
        float d = fp16_to_fp32(b[blk].d);
        int qmax = 0;
        for (int i = 0; i < 32; i++) {
            ck_assert(y[32 * blk + i] == d * b[blk].q[i]);
            ck_assert_msg(fabsf(y[32 * blk + i] - x[32 * blk + i]) <= 0.5f * d * (1 + 1e-6f), "block %d [%d]", blk, i);
            qmax = abs(b[blk].q[i]) > qmax ? abs(b[blk].q[i]) : qmax;
        }
        ck_assert_int_eq(qmax, blk == 1 ? 0 : 127);
    }
    x[100] = NAN;
    ck_assert_int_eq(q8_0_quantize_row(b, x, (uint64_t)k), -1);
    x[100] = 1e38f;                                                         // scale would overflow fp16
    ck_assert_int_eq(q8_0_quantize_row(b, x, (uint64_t)k), -1);
}
END_TEST

// ---- rmsnorm, softmax, swiglu, embed ----------------------------------------------------

START_TEST(test_rmsnorm) {
    const int dims[] = {1, 37, 576};
    for (size_t c = 0; c < 3; c++) {
        int n = 3, dim = dims[c];
        float *x = xmalloc((size_t)n * dim * 4), *w = xmalloc((size_t)dim * 4), *o = xmalloc((size_t)n * dim * 4);
        fill(x, (size_t)n * dim, 3.0f);
        fill(w, (size_t)dim, 2.0f);
        float eps = 1e-5f;
        rmsnorm(o, x, w, n, dim, eps);
        for (int t = 0; t < n; t++) {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[t * dim + i] * x[t * dim + i];
            double r = 1.0 / sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++) {
                double ref = w[i] * x[t * dim + i] * r;
                ck_assert_msg(fabs(o[t * dim + i] - ref) <= 1e-5 * (1 + fabs(ref)), "rmsnorm dim %d [%d][%d]: %g vs %g",
                              dim, t, i, o[t * dim + i], ref);
            }
        }
        free(x); free(w); free(o);
    }
}
END_TEST

START_TEST(test_softmax) {
    float x[301];
    double e[301];
    fill(x, 301, 30.0f);
    x[17] = 1000.0f;                         // large logits must not overflow
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < 301; i++) if (x[i] > mx) mx = x[i];
    for (int i = 0; i < 301; i++) { e[i] = exp((double)x[i] - mx); sum += e[i]; }
    softmax(x, 301);
    double total = 0;
    for (int i = 0; i < 301; i++) {
        ck_assert_msg(fabs(x[i] - e[i] / sum) <= 1e-6, "softmax[%d] %g vs %g", i, x[i], e[i] / sum);
        total += x[i];
    }
    ck_assert(fabs(total - 1.0) < 1e-5);
    float y[4] = {1, 2, 3, 4};
    softmax(y, 4);
    double z = exp(1) + exp(2) + exp(3) + exp(4);
    for (int i = 0; i < 4; i++) ck_assert(fabs(y[i] - exp(i + 1) / z) < 1e-6);
}
END_TEST

START_TEST(test_swiglu) {
    float g[50], u[50], h[50];
    fill(g, 50, 8.0f);
    fill(u, 50, 2.0f);
    swiglu(h, g, u, 50);
    for (int i = 0; i < 50; i++) {
        double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        ck_assert_msg(fabs(h[i] - ref) <= 1e-5 * (1 + fabs(ref)), "swiglu[%d] %g vs %g", i, h[i], ref);
    }
    swiglu(g, g, u, 50);                     // in place (forward.c does this)
    for (int i = 0; i < 50; i++) ck_assert(g[i] == h[i]);
}
END_TEST

START_TEST(test_embed) {
    int vocab = 5, dim = 9;
    float w[45], wr[45], out[64];
    fill(w, 45, 1.0f);
    for (DType wt = DTYPE_F32; wt <= DTYPE_BF16; wt++) {
        void *tab = encode_weights(w, wr, 45, wt);
        for (int tok = 0; tok < vocab; tok++) {
            embed(out, tab, wt, dim, tok);
            for (int i = 0; i < dim; i++) ck_assert(out[i] == wr[tok * dim + i]);
        }
        free(tab);
    }
    // q8_0: row `tok` is blocks [tok * dim/32, (tok+1) * dim/32), each d * q.
    BlockQ8_0 *tab = random_q8_0(vocab, 64);
    for (int tok = 0; tok < vocab; tok++) {
        embed(out, tab, DTYPE_Q8_0, 64, tok);
        for (int i = 0; i < 64; i++) {
            const BlockQ8_0 *b = &tab[tok * 2 + i / 32];
            ck_assert(out[i] == fp16_to_fp32(b->d) * (float)b->q[i % 32]);
        }
    }
    free(tab);
}
END_TEST

// ---- RoPE ------------------------------------------------------------------------------

START_TEST(test_rope_freqs_golden) {
    FILE *f = fopen("tests/golden/rope_freqs.txt", "r");
    ck_assert_msg(f != NULL, "tests/golden/rope_freqs.txt missing (run from the repo root)");
    char line[256];
    int cases = 0, scaled_changed = 0;
    while (fgets(line, sizeof line, f)) {
        Config c;
        memset(&c, 0, sizeof c);
        if (sscanf(line, "case %d %f %d %f %f %f %d", &c.head_dim, &c.rope_theta, &c.rope_scaling, &c.rope_factor,
                   &c.rope_low_freq_factor, &c.rope_high_freq_factor, &c.rope_orig_ctx) != 7) continue;
        int half = c.head_dim / 2;
        float got[256], plain[256];
        rope_freqs(got, &c);
        Config c0 = c;
        c0.rope_scaling = ROPE_SCALING_NONE;
        rope_freqs(plain, &c0);
        for (int i = 0; i < half; i++) {
            double want;
            ck_assert(fscanf(f, "%lf", &want) == 1);
            ck_assert_msg(fabs(got[i] - want) <= 2e-6 * want, "case %d (hd %d scaling %d) freq %d: %.9g vs transformers %.9g",
                          cases, c.head_dim, c.rope_scaling, i, got[i], want);
            if (got[i] != plain[i]) scaled_changed++;
        }
        cases++;
    }
    fclose(f);
    ck_assert_int_eq(cases, 6);
    ck_assert_msg(scaled_changed > 10, "the scaled cases must differ from plain RoPE");
}
END_TEST

START_TEST(test_rope_rotation) {
    int n_heads = 3, hd = 64;
    Config c;
    memset(&c, 0, sizeof c);
    c.head_dim = hd;
    c.rope_theta = 500000.0f;
    for (int scaled = 0; scaled <= 1; scaled++) {
        c.rope_scaling = scaled;
        c.rope_factor = 8; c.rope_low_freq_factor = 1; c.rope_high_freq_factor = 4; c.rope_orig_ctx = 2048;
        float freqs[32];
        rope_freqs(freqs, &c);
        const int positions[] = {0, 1, 7, 1000, 65535};
        for (int p = 0; p < 5; p++) {
            float x[192], x0[192];
            fill(x0, 192, 1.0f);
            memcpy(x, x0, sizeof x);
            rope(x, n_heads, hd, positions[p], freqs);
            for (int h = 0; h < n_heads; h++)
                for (int i = 0; i < hd / 2; i++) {
                    // adjacent pairs (2i, 2i+1) rotate by pos * freq_i (angle formed in f32, as transformers)
                    double ang = (double)((float)positions[p] * freqs[i]);
                    double a = x0[h * hd + 2 * i], b = x0[h * hd + 2 * i + 1];
                    double ra = a * cos(ang) - b * sin(ang), rb = a * sin(ang) + b * cos(ang);
                    ck_assert_msg(fabs(x[h * hd + 2 * i] - ra) < 1e-5 && fabs(x[h * hd + 2 * i + 1] - rb) < 1e-5,
                                  "rope pos %d head %d pair %d", positions[p], h, i);
                }
            if (positions[p] == 0) ck_assert(memcmp(x, x0, sizeof x) == 0);
        }
    }
}
END_TEST

static Suite *kernels_suite(void) {
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_matmul_all_dtypes);
    tcase_add_test(tc, test_matmul_model_sizes);
    tcase_add_test(tc, test_matmul_batched_equals_single);
    tcase_add_test(tc, test_matmul_multi_equals_single);
    tcase_add_test(tc, test_matmul_q8_0);
    tcase_add_test(tc, test_q8_0_activations);
    tcase_add_test(tc, test_q8_0_weight_rows);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_softmax);
    tcase_add_test(tc, test_swiglu);
    tcase_add_test(tc, test_embed);
    tcase_add_test(tc, test_rope_freqs_golden);
    tcase_add_test(tc, test_rope_rotation);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kernels_suite)
