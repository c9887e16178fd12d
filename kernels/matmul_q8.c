// matmul_q8.c: y = W x with Q8_0 weights (matmul_q8.h; the block format is GGUF's Q8_0,
// config.h BlockQ8_0).
//
// Decode reads every weight once per token, so bytes per weight set the floor of its time:
// Q8_0 takes 34 bytes per 32 weights (8.5 bits), about half of f16. It also needs no per-weight
// conversion, which is what limits the f16 kernel on few cores: the activations are quantized
// too, per token in blocks of 32, and each block's dot product is a sum of 32 int8 x int8
// products, exact in int32. The float work is one step per block:
//
//     s = 0;  for each block b:  s = fmaf((float)isum_b, d_w[b] * x_d[b], s);
//
// with d_w the weight block's fp16 scale and x_d the activation block's f32 scale. Every
// variant does exactly these float operations in this order (the integer sums are exact in any
// order), so all of them give the bits of the portable C one, and a token's result does not
// depend on the batch: a batched prefill reproduces decoding.
//
// How the variants form the integer sums (x86 has no signed x signed byte multiply-add):
//   AVX2: vpmaddubsw multiplies unsigned by signed bytes, so the sign of w is moved onto x:
//         |w| (u8) x sign(x, w) (s8), adjacent pairs summed to int16 (at most 2 * 128 * 127 in
//         magnitude: no saturation), then vpmaddwd with ones: 8 int32 sums of 4 products.
//   AVX-512 VNNI: vpdpbusd (u8 x s8, each group of 4 products summed into an int32) does both
//         steps in one instruction, on the same |w| and sign(x, w). It runs at 256 bits: one
//         block's codes are 32 bytes, and the fp16 scales between blocks would make a 64-byte
//         load straddle two blocks.
// Four rows are done at once: each activation load is shared by them, and their 4 x 8 partial
// sums reduce with three vphaddd to one int32 per row, combined in one 4-wide FMA. In a prompt
// two tokens go through the four rows together, sharing each weight load (15% faster prefill).
#include "matmul_q8.h"
#include "kernels.h"
#include "../util/util.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KVT_PORTABLE)
#define KVT_X86 1
#include <immintrin.h>
#endif

#define MM_ROWS 4                  // rows per block of work, as in kernels.c
#define MM_PARALLEL_MIN (1 << 16)  // below this many multiply-adds, one thread (kernels.c says why)

// ---- weights -----------------------------------------------------------------------------

int q8_0_quantize_row(BlockQ8_0 *out, const float *x, uint64_t k) {
    for (uint64_t b = 0; b < k / Q8_0_BLOCK; b++) {
        const float *xb = x + b * Q8_0_BLOCK;
        float amax = 0.0f;
        for (int i = 0; i < Q8_0_BLOCK; i++) {
            if (!isfinite(xb[i])) return -1;
            if (fabsf(xb[i]) > amax) amax = fabsf(xb[i]);
        }
        // The codes are rounded against the scale as stored (fp16), not the exact amax/127,
        // so each weight is within d/2 of d * q whatever rounding the scale took.
        uint16_t dh = fp32_to_fp16(amax / 127.0f);
        float d = fp16_to_fp32(dh);
        if (isinf(d)) return -1;
        out[b].d = dh;
        for (int i = 0; i < Q8_0_BLOCK; i++) {
            long q = d > 0.0f ? lrintf(xb[i] / d) : 0;
            out[b].q[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
        }
    }
    return 0;
}

void q8_0_dequantize_row(float *out, const BlockQ8_0 *in, uint64_t k) {
    for (uint64_t b = 0; b < k / Q8_0_BLOCK; b++) {
        float d = fp16_to_fp32(in[b].d);
        for (int i = 0; i < Q8_0_BLOCK; i++) out[b * Q8_0_BLOCK + i] = d * (float)in[b].q[i];
    }
}

// ---- activations -------------------------------------------------------------------------

// One block's codes and scale from its amax. A block holding inf or NaN gets scale NaN (so
// the outputs it feeds are NaN, as with float weights) and codes 0.
static float act_scale(float amax, int finite, float *inv) {
    if (!finite) { *inv = 0.0f; return NAN; }
    float d = amax / 127.0f;
    *inv = d >= FLT_MIN ? 1.0f / d : 0.0f;
    return d;
}

void q8_quantize_act_ref(int8_t *xq, float *xd, const float *x, int k) {
    for (int b = 0; b < k / Q8_0_BLOCK; b++) {
        const float *xb = x + (size_t)b * Q8_0_BLOCK;
        float amax = 0.0f, inv;
        int finite = 1;
        for (int i = 0; i < Q8_0_BLOCK; i++) {
            float a = fabsf(xb[i]);
            finite &= a <= FLT_MAX;
            if (a > amax) amax = a;
        }
        xd[b] = act_scale(amax, finite, &inv);
        for (int i = 0; i < Q8_0_BLOCK; i++) xq[(size_t)b * Q8_0_BLOCK + i] = (int8_t)(finite ? lrintf(xb[i] * inv) : 0);
    }
}

// ---- the portable kernel -----------------------------------------------------------------

// Four rows r[0..3] (nb blocks each) against one token's codes xq[k] and scales xd[nb] into
// o[0], or, if `two`, against two tokens (xq[2][k], xd[2][nb]) into o[0] and o[1]. `next` (or
// NULL) is where the next four rows start, row_bytes apart, for the SIMD kernels to prefetch.
typedef void Dot4Fn(float o[2][MM_ROWS], const BlockQ8_0 *const r[MM_ROWS], const int8_t *xq, const float *xd,
                    int nb, int two, const char *next, size_t row_bytes);
typedef void QuantFn(int8_t *xq, float *xd, const float *x, int k);

static float dot_q8_0(const BlockQ8_0 *w, const int8_t *xq, const float *xd, int nb) {
    float s = 0.0f;
    for (int b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int i = 0; i < Q8_0_BLOCK; i++) isum += (int32_t)w[b].q[i] * xq[(size_t)b * Q8_0_BLOCK + i];
        s = fmaf((float)isum, fp16_to_fp32(w[b].d) * xd[b], s);
    }
    return s;
}

static void dot4_portable(float o[2][MM_ROWS], const BlockQ8_0 *const r[MM_ROWS], const int8_t *xq, const float *xd,
                          int nb, int two, const char *next, size_t row_bytes) {
    (void)next; (void)row_bytes;
    for (int t = 0; t <= two; t++)
        for (int q = 0; q < MM_ROWS; q++) o[t][q] = dot_q8_0(r[q], xq + (size_t)t * nb * Q8_0_BLOCK, xd + (size_t)t * nb, nb);
}

// ---- x86: AVX2 and AVX-512 VNNI ----------------------------------------------------------
#ifdef KVT_X86
#define AVX_TARGET __attribute__((target("avx2,fma,f16c")))
#define VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define INLINE static inline __attribute__((always_inline))

// The activation quantizer with the reference's operations: the same amax (a max is exact in
// any order), the same scale and inverse, and vcvtps2dq rounds to nearest even, like lrintf.
AVX_TARGET static void quantize_act_avx2(int8_t *xq, float *xd, const float *x, int k) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), big = _mm256_set1_ps(FLT_MAX);
    for (int b = 0; b < k / Q8_0_BLOCK; b++) {
        const float *xb = x + (size_t)b * Q8_0_BLOCK;
        __m256 v[4], m = _mm256_setzero_ps();
        int finite = 0xff;
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(xb + 8 * j);
            __m256 a = _mm256_and_ps(v[j], absmask);
            finite &= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ));   // false for inf, NaN
            m = _mm256_max_ps(m, a);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float inv;
        xd[b] = act_scale(_mm_cvtss_f32(h), finite == 0xff, &inv);
        __m256 vi = _mm256_set1_ps(inv);
        __m256i i[4];
        for (int j = 0; j < 4; j++) i[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], vi));
        // Pack 4 x 8 int32 to 32 int8 (values are within +-127: no saturation); the packs work
        // per 128-bit lane, so the 4-byte groups come out in the order 0 2 4 6 1 3 5 7.
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        if (finite != 0xff) p = _mm256_setzero_si256();
        _mm256_storeu_si256((__m256i *)(xq + (size_t)b * Q8_0_BLOCK), p);
    }
}

// 8 int32 sums of 4 products each, of one weight block (w, and |w| as unsigned bytes) and one
// activation block x.
INLINE AVX_TARGET __m256i idot_avx2(__m256i aw, __m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
}
INLINE VNNI_TARGET __m256i idot_vnni(__m256i aw, __m256i w, __m256i x) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(x, w));
}

// Row q's block (codes wq) against the token blocks x0 (and x1): s0[q] (and s1[q]).
INLINE AVX_TARGET void row_avx2(__m256i s0[MM_ROWS], __m256i s1[MM_ROWS], int q, const int8_t *wq, __m256i x0,
                                __m256i x1, int two) {
    __m256i w = _mm256_loadu_si256((const __m256i *)wq), aw = _mm256_sign_epi8(w, w);
    s0[q] = idot_avx2(aw, w, x0);
    if (two) s1[q] = idot_avx2(aw, w, x1);
}
INLINE VNNI_TARGET void row_vnni(__m256i s0[MM_ROWS], __m256i s1[MM_ROWS], int q, const int8_t *wq, __m256i x0,
                                 __m256i x1, int two) {
    __m256i w = _mm256_loadu_si256((const __m256i *)wq), aw = _mm256_sign_epi8(w, w);
    s0[q] = idot_vnni(aw, w, x0);
    if (two) s1[q] = idot_vnni(aw, w, x1);
}

// Four rows' 8 partial sums each, reduced to one int32 per row.
INLINE AVX_TARGET __m128i reduce4(const __m256i s[MM_ROWS]) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
// The fp16 scales of block b of the four rows, as f32.
INLINE AVX_TARGET __m128 scales4(const BlockQ8_0 *const r[MM_ROWS], int b) {
    return _mm_cvtph_ps(_mm_setr_epi16((short)r[0][b].d, (short)r[1][b].d, (short)r[2][b].d, (short)r[3][b].d, 0, 0, 0, 0));
}
// The per-block float step of four rows at once: acc = fma(isum, d_w * x_d, acc).
INLINE AVX_TARGET __m128 block_step(__m128 acc, __m128i isum, __m128 dw, float xd) {
    return _mm_fmadd_ps(_mm_cvtepi32_ps(isum), _mm_mul_ps(dw, _mm_set1_ps(xd)), acc);
}

// Rows of a small model are short (SmolLM2: 612 bytes), too short for the hardware prefetcher
// to ramp up within one, so the next four rows are fetched while these are summed (as the
// f16 kernel does). Every cache line holds the start of some 34-byte block.
INLINE AVX_TARGET void prefetch_block(const char *next, size_t row_bytes, int b) {
    for (int q = 0; q < MM_ROWS; q++) _mm_prefetch(next + q * row_bytes + (size_t)b * sizeof(BlockQ8_0), _MM_HINT_T0);
}

// The kernels: four rows against one token, or against two (a prompt), each weight block loaded
// once for both. With two, each token's sums and steps are exactly those it gets alone. The
// AVX2 and VNNI bodies differ only in the idot they call.
INLINE AVX_TARGET void dot4_body_avx2(float o[2][MM_ROWS], const BlockQ8_0 *const r[MM_ROWS], const int8_t *xq,
                                      const float *xd, int nb, const int two, const char *next, size_t row_bytes) {
    __m128 acc0 = _mm_setzero_ps(), acc1 = _mm_setzero_ps();
    for (int b = 0; b < nb; b++) {
        if (next) prefetch_block(next, row_bytes, b);
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq + (size_t)b * Q8_0_BLOCK)), s0[MM_ROWS], s1[MM_ROWS];
        __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)(xq + ((size_t)nb + b) * Q8_0_BLOCK)) : x0;
        row_avx2(s0, s1, 0, r[0][b].q, x0, x1, two);   // written out: s0, s1 stay in registers
        row_avx2(s0, s1, 1, r[1][b].q, x0, x1, two);
        row_avx2(s0, s1, 2, r[2][b].q, x0, x1, two);
        row_avx2(s0, s1, 3, r[3][b].q, x0, x1, two);
        __m128 dw = scales4(r, b);
        acc0 = block_step(acc0, reduce4(s0), dw, xd[b]);
        if (two) acc1 = block_step(acc1, reduce4(s1), dw, xd[nb + b]);
    }
    _mm_storeu_ps(o[0], acc0);
    if (two) _mm_storeu_ps(o[1], acc1);
}
INLINE VNNI_TARGET void dot4_body_vnni(float o[2][MM_ROWS], const BlockQ8_0 *const r[MM_ROWS], const int8_t *xq,
                                       const float *xd, int nb, const int two, const char *next, size_t row_bytes) {
    __m128 acc0 = _mm_setzero_ps(), acc1 = _mm_setzero_ps();
    for (int b = 0; b < nb; b++) {
        if (next) prefetch_block(next, row_bytes, b);
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq + (size_t)b * Q8_0_BLOCK)), s0[MM_ROWS], s1[MM_ROWS];
        __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)(xq + ((size_t)nb + b) * Q8_0_BLOCK)) : x0;
        row_vnni(s0, s1, 0, r[0][b].q, x0, x1, two);   // written out: s0, s1 stay in registers
        row_vnni(s0, s1, 1, r[1][b].q, x0, x1, two);
        row_vnni(s0, s1, 2, r[2][b].q, x0, x1, two);
        row_vnni(s0, s1, 3, r[3][b].q, x0, x1, two);
        __m128 dw = scales4(r, b);
        acc0 = block_step(acc0, reduce4(s0), dw, xd[b]);
        if (two) acc1 = block_step(acc1, reduce4(s1), dw, xd[nb + b]);
    }
    _mm_storeu_ps(o[0], acc0);
    if (two) _mm_storeu_ps(o[1], acc1);
}

// `two` is a constant in each call of the bodies, so each compiles to its own loop.
AVX_TARGET static void dot4_avx2(float o[2][MM_ROWS], const BlockQ8_0 *const r[MM_ROWS], const int8_t *xq,
                                 const float *xd, int nb, int two, const char *next, size_t row_bytes) {
    if (two) dot4_body_avx2(o, r, xq, xd, nb, 1, next, row_bytes);
    else dot4_body_avx2(o, r, xq, xd, nb, 0, next, row_bytes);
}
VNNI_TARGET static void dot4_vnni(float o[2][MM_ROWS], const BlockQ8_0 *const r[MM_ROWS], const int8_t *xq,
                                  const float *xd, int nb, int two, const char *next, size_t row_bytes) {
    if (two) dot4_body_vnni(o, r, xq, xd, nb, 1, next, row_bytes);
    else dot4_body_vnni(o, r, xq, xd, nb, 0, next, row_bytes);
}
#endif

// ---- dispatch and the driver -------------------------------------------------------------

const char *q8_variant_name(Q8Variant v) {
    return v == Q8_PORTABLE ? "portable" : v == Q8_AVX2 ? "avx2" : v == Q8_AVX512_VNNI ? "avx512vnni" : "?";
}

int q8_variant_available(Q8Variant v) {
    if (v == Q8_PORTABLE) return 1;
#ifdef KVT_X86
    return v == Q8_AVX2 ? cpu_has_avx2() : v == Q8_AVX512_VNNI ? cpu_has_avx512vnni() : 0;
#else
    return 0;
#endif
}

Q8Variant q8_variant_best(void) {
    return q8_variant_available(Q8_AVX512_VNNI) ? Q8_AVX512_VNNI : q8_variant_available(Q8_AVX2) ? Q8_AVX2 : Q8_PORTABLE;
}

// Quantize the n tokens' activations once, then split the rows of all the outputs over threads
// in blocks of four (each weight byte is read by one thread only) and run every token through
// each block while its rows are in L1. A short last block repeats its last row.
static void matmul_q8_with(Dot4Fn *dot4, QuantFn *quant, const float *x, int n, int k, const MatmulOut *outs,
                           int count) {
    if (k % Q8_0_BLOCK) fatal("matmul: q8_0 weights need an input size that is a multiple of %d, not %d", Q8_0_BLOCK, k);
    int nb = k / Q8_0_BLOCK, nblocks = 0;
    size_t row_bytes = (size_t)nb * sizeof(BlockQ8_0);
    int64_t work = 0;
    for (int i = 0; i < count; i++) { work += (int64_t)n * k * outs[i].d; nblocks += (outs[i].d + MM_ROWS - 1) / MM_ROWS; }
    (void)work;                                    // (unused without OpenMP)
    int8_t *xq = xmalloc((size_t)n * k);
    float *xd = xmalloc((size_t)n * nb * sizeof(float));
    for (int t = 0; t < n; t++) quant(xq + (size_t)t * k, xd + (size_t)t * nb, x + (size_t)t * k, k);
    #pragma omp parallel for schedule(static) if (work >= MM_PARALLEL_MIN)
    for (int blk = 0; blk < nblocks; blk++) {
        const MatmulOut *o = outs;
        int b = blk;
        while (b >= (o->d + MM_ROWS - 1) / MM_ROWS) b -= (o++->d + MM_ROWS - 1) / MM_ROWS;
        int d = o->d, j0 = b * MM_ROWS, nr = d - j0 < MM_ROWS ? d - j0 : MM_ROWS;
        const BlockQ8_0 *W = o->w, *r[MM_ROWS];
        for (int q = 0; q < MM_ROWS; q++) r[q] = W + (size_t)(j0 + (q < nr ? q : nr - 1)) * nb;
        const char *next = j0 + 2 * MM_ROWS <= d ? (const char *)(W + (size_t)(j0 + MM_ROWS) * nb) : NULL;
        for (int t = 0; t < n; t += 2) {   // tokens in pairs (a lone last one alone)
            float res[2][MM_ROWS];
            int two = t + 1 < n;
            dot4(res, r, xq + (size_t)t * k, xd + (size_t)t * nb, nb, two, t == 0 ? next : NULL, row_bytes);
            for (int u = 0; u <= two; u++)
                for (int q = 0; q < nr; q++) o->out[(size_t)(t + u) * d + j0 + q] = res[u][q];
        }
    }
    free(xq);
    free(xd);
}

void q8_quantize_act(Q8Variant v, int8_t *xq, float *xd, const float *x, int k) {
    if (!q8_variant_available(v)) fatal("matmul: the %s q8_0 kernel is not available on this CPU", q8_variant_name(v));
#ifdef KVT_X86
    if (v != Q8_PORTABLE) { quantize_act_avx2(xq, xd, x, k); return; }
#endif
    q8_quantize_act_ref(xq, xd, x, k);
}

void matmul_q8_0_multi(Q8Variant v, const float *x, int n, int k, const MatmulOut *outs, int count) {
    if (!q8_variant_available(v)) fatal("matmul: the %s q8_0 kernel is not available on this CPU", q8_variant_name(v));
#ifdef KVT_X86
    if (v == Q8_AVX512_VNNI) { matmul_q8_with(dot4_vnni, quantize_act_avx2, x, n, k, outs, count); return; }
    if (v == Q8_AVX2) { matmul_q8_with(dot4_avx2, quantize_act_avx2, x, n, k, outs, count); return; }
#endif
    matmul_q8_with(dot4_portable, q8_quantize_act_ref, x, n, k, outs, count);
}

void matmul_q8_0_variant(Q8Variant v, float *out, const float *x, const void *w, int n, int k, int d) {
    MatmulOut o = {out, w, d};
    matmul_q8_0_multi(v, x, n, k, &o, 1);
}
