// attention_avx2.c: the inner loops of the fast attention for AVX2 + FMA + F16C, the same
// arithmetic as the plain C loops at the end of kernels/attention.c (read those first);
// kernels/attention.c picks this table at run time when the CPU has the instructions.
//
// Key codes are widened to 16-bit lanes and multiplied with the int16 query by vpmaddwd
// (_mm256_madd_epi16: 16 products, summed in pairs into 8 int32 lanes). Unpacking 4- and 2-bit
// codes is cheapest if the lanes are not in channel order: 4-bit codes come out even channels
// first, then odd (lane_perm below); the query is put in the same order once (order_query), and
// a dot product does not care about the order. KIVI keys hold one channel of 32 tokens per
// group, so there the lanes are tokens and vpmaddwd pairs two channels. Value codes are
// converted to float and weighted with FMA: their weights p·s are probabilities, whose range
// needs floats.
//
// Shapes: head_dim a multiple of 32 up to 256, and groups of 32·k channels (per token) or tokens (per
// channel, KIVI). Other shapes go to the plain C loops.
#include "attention_kernels.h"

#ifdef KVT_ATTN_AVX2
#include <immintrin.h>
#include <math.h>
#include <string.h>

// kernels/attention_vnni.c compiles this file a second time with ATTN_VNNI defined: the same
// loops, for CPUs with AVX-512 VNNI, where vpdpwssd multiplies int16 pairs and adds them to
// the accumulator in one instruction (vpmaddwd + vpaddd here). Integer sums are exact, so both
// variants give the same scores, bit for bit.
#ifdef ATTN_VNNI
#define TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define ATTN_TABLE attn_vnni
#define ATTN_TABLE_NAME "fast (avx512vnni)"
#else
#define TARGET __attribute__((target("avx2,fma,f16c")))
#define ATTN_TABLE attn_avx2
#define ATTN_TABLE_NAME "fast (avx2)"
#endif
#define INLINE static inline __attribute__((always_inline))
// Loops over the (at most 4) heads of a set are unrolled, so that their accumulators stay in registers.
#define HEADS _Pragma("GCC unroll 4")

enum { HD_MAX = 256 };     // (fixed-size buffers below; Llama-3 has 128)
static int simd_shape(const KVStreamView *s) {
    return s->head_dim % 32 == 0 && s->head_dim <= HD_MAX && s->group % 32 == 0;
}

// ---- reading ahead -------------------------------------------------------------------------

// In a decode step the matmuls stream the weights through the caches between two layers'
// attentions, so a layer's cached tokens come from DRAM, and the hardware prefetcher alone
// leaves the loops waiting on them (the profile shows the stall at each token's first load).
// So each loop asks for the bytes it will read PREFETCH_AHEAD bytes further on in its stream
// (a few hundred cycles of work ahead). Near a stream's end that address lies past it: a
// prefetch never faults, and the address is formed as an integer, since a pointer past the end
// of its array would be undefined behaviour in C.
enum { PREFETCH_AHEAD = 2048 };
TARGET INLINE void prefetch_ahead(const void *p, int64_t bytes) {
    for (int64_t o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)((uintptr_t)p + PREFETCH_AHEAD + (uintptr_t)o), _MM_HINT_T0);
}

// ---- unpacking codes ----------------------------------------------------------------------

// A slice is 32 consecutive codes of a group, unpacked into two vectors of 16 int16 lanes
// (codes16 with half 0 and 1). A byte holds 8/bits codes and the lanes take them byte by
// byte, so lane l holds code lane_perm[bits][l]: 8-bit codes in order, 4-bit ones the even
// codes then the odd, 2-bit ones every fourth code from 0, then from 1, 2 and 3.
#define P4(x) x, x + 2, x + 4, x + 6
#define P8(x) P4(x), P4(x + 8)
#define Q4(x) x, x + 4, x + 8, x + 12
static const uint8_t lane_perm[9][32] = {
    [2] = { Q4(0), Q4(16), Q4(1), Q4(17), Q4(2), Q4(18), Q4(3), Q4(19) },
    [4] = { P8(0), P8(16), P8(1), P8(17) },
    [8] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31 },
};

// Lanes 16·half .. 16·half + 15 of the slice whose codes start at byte p.
TARGET INLINE __m256i codes16(const uint8_t *p, int bits, int half) {
    if (bits == 8) return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 16 * half)));
    if (bits == 4) {                                                    // 16 bytes, 2 codes each
        __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
        return half ? _mm256_srli_epi16(w, 4) : _mm256_and_si256(w, _mm256_set1_epi16(15));
    }
    __m128i w = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p)), m = _mm_set1_epi16(3);   // 8 bytes, 4 each
    return half ? _mm256_set_m128i(_mm_srli_epi16(w, 6), _mm_and_si128(_mm_srli_epi16(w, 4), m))
                : _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(w, 2), m), _mm_and_si128(w, m));
}

// 16 codes of a token (channels [16σ, 16σ + 16) of a group, starting at byte p) as floats:
// f0 and f1 hold 8 channels each. 4-bit: f0 the even channels, f1 the odd (add16 restores
// the order); 8- and 2-bit: channels in order.
TARGET INLINE void codes16_ps(const uint8_t *p, int bits, __m256 *f0, __m256 *f1) {
    if (bits == 8) {
        *f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
        *f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))));
    } else if (bits == 4) {
        __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));   // 8 bytes
        *f0 = _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(15)));
        *f1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(x, 4));
    } else {
        uint32_t word;                                   // 16 codes of 2 bits: code l at bits 2l
        memcpy(&word, p, 4);
        __m256i x = _mm256_set1_epi32((int)word), m = _mm256_set1_epi32(3);
        *f0 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(x, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)), m));
        *f1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(x, _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)), m));
    }
}

// acc + the products of a and b (16 int16 lanes each), summed in pairs into 8 int32 lanes.
TARGET INLINE __m256i madd_acc(__m256i acc, __m256i a, __m256i b) {
#ifdef ATTN_VNNI
    return _mm256_dpwssd_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

// Sums of 4 vectors: [Σa, Σb, Σc, Σd].
TARGET INLINE __m128i hsum4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i x = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
}
TARGET INLINE __m128 hsum4_ps(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
}

// The fp16 (scale, offset) pair of group gi as floats [s, m, 0, 0].
TARGET INLINE __m128 scale_offset(const uint16_t *sm, int64_t gi) {
    int32_t pair;
    memcpy(&pair, sm + 2 * gi, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(pair));
}

// Store lanes h < nh of x to s[(h0 + h) * ATTN_CHUNK + j].
TARGET INLINE void store_heads(__m128 x, float *s, int64_t j, int nh) {
    float v[4];
    _mm_storeu_ps(v, x);
    HEADS for (int h = 0; h < nh; h++) s[h * ATTN_CHUNK + j] = v[h];
}

// ---- keys ------------------------------------------------------------------------------------

// The arguments of one head set's key loop: heads h0 .. h0 + nh - 1 (nh <= 4) of q.
typedef struct {
    const Query *q;
    const KVStreamView *k;
    int64_t t, n;
    float *s;                // s[(h - h0) * ATTN_CHUNK + j] for token t + j
    const int16_t *qs;       // per-token keys: [hd / 32][nh][32] the set's q16 slice by slice, in lane_perm order
    int h0;
} KeyArgs;

// The int32 dot products of the nh heads' query slices qs ([ns][nh][32]) with the ns code
// slices of one token from byte u: [h0, h1, h2, h3].
TARGET INLINE __m128i token_dots(const int16_t *qs, const uint8_t *u, int ns, const int nh, const int bits) {
    __m256i acc[4] = { _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256() };
    _Pragma("GCC unroll 2") for (int sl = 0; sl < ns; sl++, u += 4 * bits, qs += 32 * nh) {
        __m256i lo = codes16(u, bits, 0), hi = codes16(u, bits, 1);
        HEADS for (int h = 0; h < nh; h++) {
            acc[h] = madd_acc(acc[h], lo, _mm256_loadu_si256((const __m256i *)(qs + 32 * h)));
            acc[h] = madd_acc(acc[h], hi, _mm256_loadu_si256((const __m256i *)(qs + 32 * h + 16)));
        }
    }
    return hsum4_epi32(acc[0], acc[1], acc[2], acc[3]);
}

// Per-token keys: score = s·alpha·dot + m·Σq per group. One group per token (the pertoken
// preset): four tokens at a time, their dots transposed to [head][token] so that the scales
// apply to four tokens at once and each head's four scores are one store.
TARGET INLINE void key_tokens(const KeyArgs *a, const int nh, const int bits) {
    const KVStreamView *k = a->k;
    int hd = a->q->hd, G = k->group, gpt = k->groups_per_token, ns = G / 32;
    int64_t tb = (int64_t)hd * bits / 8, j = 0;              // bytes per token
    const uint8_t *u = k->codes + (a->t - k->sink) * gpt * k->group_bytes;
    const uint16_t *sm = k->sm + 2 * (a->t - k->sink) * gpt;
    float al[4] = { 0 }, gs[4 * HD_MAX / 32] = { 0 };
    HEADS for (int h = 0; h < nh; h++) {
        al[h] = a->q->alpha[a->h0 + h];
        for (int g = 0; g < gpt; g++) gs[4 * g + h] = a->q->gsum[(a->h0 + h) * hd + g];
    }
    __m128 alpha = _mm_loadu_ps(al);
    if (gpt == 1)
        for (; j + 4 <= a->n; j += 4, u += 4 * tb, sm += 8) {
            prefetch_ahead(u, 4 * tb);
            __m128 d0 = _mm_cvtepi32_ps(token_dots(a->qs, u, ns, nh, bits));
            __m128 d1 = _mm_cvtepi32_ps(token_dots(a->qs, u + tb, ns, nh, bits));
            __m128 d2 = _mm_cvtepi32_ps(token_dots(a->qs, u + 2 * tb, ns, nh, bits));
            __m128 d3 = _mm_cvtepi32_ps(token_dots(a->qs, u + 3 * tb, ns, nh, bits));
            _MM_TRANSPOSE4_PS(d0, d1, d2, d3);                  // d_h = head h's dots of the 4 tokens
            __m256 smv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sm));   // s0 m0 s1 m1 ..
            __m128 lo = _mm256_castps256_ps128(smv), hi = _mm256_extractf128_ps(smv, 1);
            __m128 sc = _mm_shuffle_ps(lo, hi, 0x88), m = _mm_shuffle_ps(lo, hi, 0xdd);
            __m128 d[4] = { d0, d1, d2, d3 };
            HEADS for (int h = 0; h < nh; h++) {
                __m128 r = _mm_mul_ps(m, _mm_set1_ps(gs[h]));
                r = _mm_fmadd_ps(d[h], _mm_mul_ps(sc, _mm_set1_ps(al[h])), r);
                _mm_storeu_ps(a->s + h * ATTN_CHUNK + j, r);
            }
        }
    for (; j < a->n; j++, u += tb, sm += 2 * gpt) {          // the rest, and several groups per token
        prefetch_ahead(u, tb);
        __m128 score = _mm_setzero_ps();
        for (int g = 0; g < gpt; g++) {
            __m128 dot = _mm_cvtepi32_ps(token_dots(a->qs + g * ns * 32 * nh, u + g * k->group_bytes, ns, nh, bits));
            __m128 smv = scale_offset(sm, g);
            __m128 sa = _mm_mul_ps(_mm_shuffle_ps(smv, smv, 0x00), alpha), m = _mm_shuffle_ps(smv, smv, 0x55);
            score = _mm_fmadd_ps(dot, sa, _mm_fmadd_ps(m, _mm_loadu_ps(gs + 4 * g), score));
        }
        store_heads(score, a->s, j, nh);
    }
}

// The codes of channels c (bytes from p) and c + 1 (from q) for 16 tokens of a 32-token slice,
// as two vectors of 8 int32 lanes, each lane the pair (u_c, u_c+1) of one token, as vpmaddwd
// takes them: the two channels' bytes are interleaved, widened, and each byte's codes shifted
// out. Which tokens: 8-bit, half 0 gives tokens 0-3, 8-11 and 4-7, 12-15 (half 1: 16-31 alike);
// 4-bit (byte i holds tokens 2i, 2i + 1), half 0 tokens 0, 2, .., 14 and 1, 3, .., 15 (half 1:
// 16-31 alike); 2-bit (byte i holds tokens 4i .. 4i + 3), half 0 tokens 4i and 4i + 1, half 1
// tokens 4i + 2 and 4i + 3.
TARGET INLINE void channel_pairs(const uint8_t *p, const uint8_t *q, const int bits, const int half, __m256i *lo, __m256i *hi) {
    if (bits == 8) {
        __m256i x = codes16(p, 8, half), y = codes16(q, 8, half);
        *lo = _mm256_unpacklo_epi16(x, y);
        *hi = _mm256_unpackhi_epi16(x, y);
    } else if (bits == 4) {
        __m128i x = _mm_loadl_epi64((const __m128i *)(p + 8 * half)), y = _mm_loadl_epi64((const __m128i *)(q + 8 * half));
        __m256i w = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x, y));
        *lo = _mm256_and_si256(w, _mm256_set1_epi16(15));
        *hi = _mm256_srli_epi16(w, 4);
    } else {
        __m256i w = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)p), _mm_loadl_epi64((const __m128i *)q)));
        __m256i m = _mm256_set1_epi16(3);
        *lo = _mm256_and_si256(_mm256_srli_epi16(w, 4 * half), m);
        *hi = _mm256_and_si256(_mm256_srli_epi16(w, 4 * half + 2), m);
    }
}

// Per-channel (KIVI) keys of one 32-token slice of block b: for each channel pair (c, c+1)
// the two channels' codes are interleaved into (c, c+1) pairs of 16-bit lanes, one lane pair
// per token, so vpmaddwd with the folded query pair (q'_c, q'_c+1) adds both channels' terms
// of 8 tokens at once. d[h][0..3]: the int32 dots of the slice's 32 tokens, in the order the
// unpacking leaves them (natural32 restores it). qf: [nh][hd] the folded int16 queries.
TARGET INLINE void key_block_slice(const KeyArgs *a, const int16_t *qf, int64_t b, int slice, __m256i d[4][4],
                                 const int nh, const int bits) {
    const KVStreamView *k = a->k;
    int hd = a->q->hd;
    HEADS for (int h = 0; h < nh; h++) d[h][0] = d[h][1] = d[h][2] = d[h][3] = _mm256_setzero_si256();
    const uint8_t *p0 = k->codes + b * hd * k->group_bytes + slice * 4 * bits;
    for (int half = 0; half < 2; half++) {                  // 16 tokens per pass: 2·nh accumulators
        const uint8_t *p = p0;
        for (int c = 0; c < hd; c += 2, p += 2 * k->group_bytes) {
            __m256i lo, hi;
            channel_pairs(p, p + k->group_bytes, bits, half, &lo, &hi);
            HEADS for (int h = 0; h < nh; h++) {
                int32_t pair;
                memcpy(&pair, qf + h * hd + c, 4);
                __m256i w = _mm256_set1_epi32(pair);
                d[h][2 * half] = madd_acc(d[h][2 * half], lo, w);
                d[h][2 * half + 1] = madd_acc(d[h][2 * half + 1], hi, w);
            }
        }
    }
}

// The 32 scores of a slice, f[0..3] in the token order channel_pairs leaves (half 0: f[0],
// f[1]; half 1: f[2], f[3]), stored in token order.
TARGET INLINE void natural32(__m256 f[4], const int bits, float *out) {
    if (bits == 4) {                           // even and odd tokens of each half: interleave
        for (int k = 0; k < 4; k += 2) {
            __m256 lo = _mm256_unpacklo_ps(f[k], f[k + 1]), hi = _mm256_unpackhi_ps(f[k], f[k + 1]);
            _mm256_storeu_ps(out + 8 * k, _mm256_permute2f128_ps(lo, hi, 0x20));
            _mm256_storeu_ps(out + 8 * k + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        }
        return;
    }
    if (bits == 2) {                           // tokens 4i + s in f[s]: transpose
        __m256 x[4], a = _mm256_unpacklo_ps(f[0], f[1]), b = _mm256_unpacklo_ps(f[2], f[3]);
        __m256 c = _mm256_unpackhi_ps(f[0], f[1]), d = _mm256_unpackhi_ps(f[2], f[3]);
        x[0] = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));   // 0-3, 16-19
        x[1] = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));   // 4-7, 20-23
        x[2] = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(c), _mm256_castps_pd(d)));   // 8-11, 24-27
        x[3] = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(c), _mm256_castps_pd(d)));   // 12-15, 28-31
        _mm256_storeu_ps(out, _mm256_permute2f128_ps(x[0], x[1], 0x20));
        _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(x[2], x[3], 0x20));
        _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(x[0], x[1], 0x31));
        _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(x[2], x[3], 0x31));
        return;
    }
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(f[0], f[1], 0x20));   // 8-bit: f[0] 0-3, 8-11, f[1] 4-7, 12-15
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(f[0], f[1], 0x31));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(f[2], f[3], 0x20));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(f[2], f[3], 0x31));
}

// The scales s and offsets m of `count` consecutive groups from index gi, as floats.
TARGET INLINE void scales_offsets(const uint16_t *sm, int64_t gi, int count, float *s, float *m) {
    int i = 0;
    for (; i + 8 <= count; i += 8) {                            // 8 (s, m) pairs: deinterleave
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sm + 2 * (gi + i))));
        __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sm + 2 * (gi + i) + 8)));
        __m256 sv = _mm256_shuffle_ps(x, y, 0x88), mv = _mm256_shuffle_ps(x, y, 0xdd);   // lanes 0 1 4 5 | 2 3 6 7
        _mm256_storeu_ps(s + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(sv), 0xd8)));
        _mm256_storeu_ps(m + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(mv), 0xd8)));
    }
    for (; i < count; i++) {
        __m128 x = scale_offset(sm, gi + i);
        s[i] = _mm_cvtss_f32(x);
        m[i] = _mm_cvtss_f32(_mm_shuffle_ps(x, x, 0x55));
    }
}

// Per-channel keys, nh heads: per block, fold the channel scales into the query (q_c·s_c,
// rounded to int16 with alpha'), and the offsets into a constant (Σ q_c·m_c); then
// score_j = alpha'·Σ_c q'_c u_cj + constant, 32 tokens at a time.
TARGET INLINE void key_blocks(const KeyArgs *a, const int nh, const int bits) {
    const KVStreamView *k = a->k;
    int hd = a->q->hd, G = k->group;
    int16_t qf[4 * HD_MAX];
    float alpha[4], off[4], sc[HD_MAX], mc[HD_MAX], v[32];
    for (int64_t b = (a->t - k->sink) / G; k->sink + b * G < a->t + a->n; b++) {
        int64_t b0 = k->sink + b * G;
        prefetch_ahead(k->codes + b * hd * k->group_bytes, hd * k->group_bytes);
        scales_offsets(k->sm, b * hd, hd, sc, mc);
        HEADS for (int h = 0; h < nh; h++) {                 // fold: q'_c = q_c·s_c, and Σ q_c·m_c
            const float *qh = a->q->q + (a->h0 + h) * hd;
            __m256 mx = _mm256_setzero_ps(), o = _mm256_setzero_ps();
            for (int c = 0; c < hd; c += 8) {
                __m256 x = _mm256_loadu_ps(qh + c), y = _mm256_mul_ps(x, _mm256_loadu_ps(sc + c));
                mx = _mm256_max_ps(mx, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), y));
                o = _mm256_fmadd_ps(x, _mm256_loadu_ps(mc + c), o);
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
            off[h] = _mm_cvtss_f32(hsum4_ps(o, _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()));
            alpha[h] = amax / 32767.0f;
            __m256 inv = _mm256_set1_ps(amax > 0.0f ? 32767.0f / amax : 0.0f);
            for (int c = 0; c < hd; c += 16) {
                __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(qh + c), _mm256_loadu_ps(sc + c)), inv));
                __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(qh + c + 8), _mm256_loadu_ps(sc + c + 8)), inv));
                __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), 0xd8);   // packs works per 128-bit lane
                _mm256_storeu_si256((__m256i *)(qf + h * hd + c), p);
            }
        }
        for (int slice = 0; slice < G / 32; slice++) {
            int64_t s0 = b0 + 32 * slice, j0 = s0 > a->t ? s0 : a->t, j1 = s0 + 32 < a->t + a->n ? s0 + 32 : a->t + a->n;
            if (j0 >= j1) continue;
            __m256i d[4][4];
            key_block_slice(a, qf, b, slice, d, nh, bits);
            HEADS for (int h = 0; h < nh; h++) {
                __m256 al = _mm256_set1_ps(alpha[h]), of = _mm256_set1_ps(off[h]), f[4];
                for (int i = 0; i < 4; i++) f[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[h][i]), al, of);
                float *out = a->s + h * ATTN_CHUNK + (s0 - a->t);
                if (j0 == s0 && j1 == s0 + 32) natural32(f, bits, out);
                else {
                    natural32(f, bits, v);
                    for (int64_t j = j0; j < j1; j++) out[j - s0] = v[j - s0];
                }
            }
        }
    }
}

// One head set: nh and the bit width known at compile time, so that the accumulators stay
// in registers and the unpacking has no branches.
#define KEY_CASE(nh) \
    case nh: \
        if (pc && a->k->bits == 8) key_blocks(a, nh, 8); \
        else if (pc && a->k->bits == 4) key_blocks(a, nh, 4); \
        else if (pc) key_blocks(a, nh, 2); \
        else if (a->k->bits == 8) key_tokens(a, nh, 8); \
        else if (a->k->bits == 4) key_tokens(a, nh, 4); \
        else key_tokens(a, nh, 2); \
        break;
TARGET static void key_codes_set(const KeyArgs *a, int nh) {
    int pc = a->k->per_channel;
    switch (nh) { KEY_CASE(1) KEY_CASE(2) KEY_CASE(3) default: KEY_CASE(4) }
}

// Per-token keys: q16 of each set of up to 4 heads, slice by slice, [hd / 32][nh][32], in the
// lane order of codes16 (lane_perm) for the stream's bits; per-channel keys fold their query per block.
static void order_query_simd(const Query *q, const KVStreamView *k, int16_t *out) {
    int hd = q->hd;
    if (!simd_shape(k) || k->per_channel || k->bits == 16) return;
    for (int h0 = 0; h0 < q->gq; h0 += 4) {
        int nh = q->gq - h0 < 4 ? q->gq - h0 : 4;
        for (int sl = 0; sl < hd / 32; sl++)
            for (int h = 0; h < nh; h++)
                for (int l = 0; l < 32; l++)
                    out[h0 * hd + (sl * nh + h) * 32 + l] = q->q16[(h0 + h) * hd + sl * 32 + lane_perm[k->bits][l]];
    }
}

TARGET static void key_codes_simd(const Query *q, const KVStreamView *k, int64_t t, int64_t n, float *s) {
    if (!simd_shape(k)) { attn_portable.key_codes(q, k, t, n, s); return; }
    for (int h0 = 0; h0 < q->gq; h0 += 4) {
        KeyArgs a = { q, k, t, n, s + h0 * ATTN_CHUNK, q->qk + h0 * q->hd, h0 };
        key_codes_set(&a, q->gq - h0 < 4 ? q->gq - h0 : 4);
    }
}

// fp16 key rows: two tokens at a time (eight FMA chains with four heads).
TARGET INLINE void key_rows_set(const Query *q, const uint16_t *rows, int64_t n, float *s, int h0, const int nh) {
    int hd = q->hd;
    int64_t j = 0;
    for (; j < n; j += 2) {
        const uint16_t *r0 = rows + j * hd, *r1 = j + 1 < n ? r0 + hd : r0;
        prefetch_ahead(r0, 4 * hd);
        __m256 a0[4], a1[4];
        HEADS for (int h = 0; h < 4; h++) a0[h] = a1[h] = _mm256_setzero_ps();
        for (int c = 0; c < hd; c += 8) {
            __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r0 + c)));
            __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r1 + c)));
            HEADS for (int h = 0; h < nh; h++) {
                __m256 qv = _mm256_loadu_ps(q->q + (h0 + h) * hd + c);
                a0[h] = _mm256_fmadd_ps(x0, qv, a0[h]);
                a1[h] = _mm256_fmadd_ps(x1, qv, a1[h]);
            }
        }
        store_heads(hsum4_ps(a0[0], a0[1], a0[2], a0[3]), s, j, nh);
        if (j + 1 < n) store_heads(hsum4_ps(a1[0], a1[1], a1[2], a1[3]), s, j + 1, nh);
    }
}

TARGET static void key_rows_simd(const Query *q, const uint16_t *rows, int64_t n, float *s) {
    if (q->hd % 8) { attn_portable.key_rows(q, rows, n, s); return; }
    for (int h0 = 0; h0 < q->gq; h0 += 4) {
        float *sh = s + h0 * ATTN_CHUNK;
        switch (q->gq - h0) {
        case 1: key_rows_set(q, rows, n, sh, h0, 1); break;
        case 2: key_rows_set(q, rows, n, sh, h0, 2); break;
        case 3: key_rows_set(q, rows, n, sh, h0, 3); break;
        default: key_rows_set(q, rows, n, sh, h0, 4); break;
        }
    }
}

// ---- softmax -------------------------------------------------------------------------------

// attn_exp (attention_kernels.h), 8 at a time, with FMA.
TARGET INLINE __m256 exp8(__m256 x) {
    __m256 valid = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_MIN), _CMP_GE_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), valid);
}

// Each head's row is padded with -inf to a multiple of 8 (the rows are ATTN_CHUNK long), so
// every element goes through the same vector code; the pad lanes become 0.
TARGET static void softmax_simd(float *s, int gq, int64_t n, float *st) {
    int64_t n8 = (n + 7) / 8 * 8;
    for (int h = 0; h < gq; h++) {
        float *x = s + h * ATTN_CHUNK;
        for (int64_t j = n; j < n8; j++) x[j] = -INFINITY;
        __m256 mx = _mm256_set1_ps(-INFINITY), sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < n8; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + j));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        __m256 m = _mm256_broadcastss_ps(m4);
        for (int64_t j = 0; j < n8; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), m));
            _mm256_storeu_ps(x + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        st[2 * h] = _mm_cvtss_f32(m4);
        st[2 * h + 1] = _mm_cvtss_f32(hsum4_ps(sum, _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()));
    }
}

// ---- values --------------------------------------------------------------------------------

// o[0..16) += the 16 channels of acc (f0/f1 layout of codes16_ps) and `add`.
TARGET INLINE void add16(float *o, __m256 a0, __m256 a1, int unzip, float add) {
    if (unzip) {                       // a0 even channels, a1 odd: interleave back
        __m256 lo = _mm256_unpacklo_ps(a0, a1), hi = _mm256_unpackhi_ps(a0, a1);
        a0 = _mm256_permute2f128_ps(lo, hi, 0x20);
        a1 = _mm256_permute2f128_ps(lo, hi, 0x31);
    }
    __m256 c = _mm256_set1_ps(add);
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), _mm256_add_ps(a0, c)));
    _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_loadu_ps(o + 8), _mm256_add_ps(a1, c)));
}

// The arguments of one head set's value loop.
typedef struct {
    const KVStreamView *v;
    int64_t t, n, ld;        // tokens [t, t + n); ld: the rows of w (n rounded up)
    float *o;                // o[h * hd + c], heads h0..
    const float *w;          // w[(h·gpt + g)·ld + j] = p_hj·s_jg, heads h0..
    const float *moff;       // moff[h·gpt + g] = Σ_j p_hj·m_jg
} ValueArgs;

// Per-token value codes, nh heads: per 16-channel slice, o += Σ_j (p_j s_j) u_j over the
// tokens (two accumulators per head), then the offsets Σ_j p_j m_j.
TARGET INLINE void value_tokens(const ValueArgs *a, const int nh, const int bits) {
    const KVStreamView *v = a->v;
    int hd = v->head_dim, G = v->group, gpt = v->groups_per_token;
    int64_t tb = (int64_t)hd * bits / 8, n = a->n;              // bytes per token
    const uint8_t *u0 = v->codes + (a->t - v->sink) * gpt * v->group_bytes;
    for (int c = 0; c < hd; c += 16) {
        int g = c / G;
        const float *w[4];
        HEADS for (int h = 0; h < nh; h++) w[h] = a->w + ((int64_t)h * gpt + g) * a->ld;
        const uint8_t *u = u0 + c * bits / 8;
        __m256 acc[4][2];
        HEADS for (int h = 0; h < 4; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
        _Pragma("GCC unroll 2") for (int64_t j = 0; j < n; j++, u += tb) {
            if (c == 0) prefetch_ahead(u, tb);               // the first slice's pass reads every line
            __m256 f0, f1;
            codes16_ps(u, bits, &f0, &f1);
            HEADS for (int h = 0; h < nh; h++) {
                __m256 wv = _mm256_broadcast_ss(w[h] + j);
                acc[h][0] = _mm256_fmadd_ps(wv, f0, acc[h][0]);
                acc[h][1] = _mm256_fmadd_ps(wv, f1, acc[h][1]);
            }
        }
        HEADS for (int h = 0; h < nh; h++) add16(a->o + h * hd + c, acc[h][0], acc[h][1], bits == 4, a->moff[h * gpt + g]);
    }
}

#define VALUE_CASE(nh) \
    case nh: \
        if (v->bits == 8) value_tokens(a, nh, 8); \
        else if (v->bits == 4) value_tokens(a, nh, 4); \
        else value_tokens(a, nh, 2); \
        break;
TARGET static void value_codes_set(const ValueArgs *a, int nh) {
    const KVStreamView *v = a->v;
    switch (nh) { VALUE_CASE(1) VALUE_CASE(2) VALUE_CASE(3) default: VALUE_CASE(4) }
}

// o[h] += Σ_j (p_hj s_jg) u_j + p_hj m_jg for quantized tokens [t, t + n): first the groups'
// scales and offsets, per group [g][j] (zero past n); then, 8 tokens at a time, the weights
// w = p·s per (head, group, token) and the offset sums Σ_j p·m per (head, group); then the
// codes (value_tokens).
TARGET static void value_codes_simd(const float *p, int gq, const KVStreamView *v, int64_t t, int64_t n, float *o) {
    if (!simd_shape(v)) { attn_portable.value_codes(p, gq, v, t, n, o); return; }
    int hd = v->head_dim, gpt = v->groups_per_token;
    int64_t n8 = (n + 7) / 8 * 8;
    float sm[2 * n8 * gpt], sg[gpt * n8], mg[gpt * n8], w[gq * gpt * n8], moff[gq * gpt];
    if (gpt == 1)                                            // already [g][j]
        scales_offsets(v->sm, t - v->sink, (int)n, sg, mg);
    else
        scales_offsets(v->sm, (t - v->sink) * gpt, (int)(n * gpt), sm, sm + n8 * gpt);   // [j][g] order
    if (gpt == 2)                                            // even entries group 0, odd group 1
        for (int64_t j = 0; j < n8; j += 8)
            for (int x = 0; x < 2; x++) {
                const float *src = sm + x * n8 * gpt + 2 * j;
                __m256 a = _mm256_loadu_ps(src), b = _mm256_loadu_ps(src + 8);
                __m256 e = _mm256_shuffle_ps(a, b, 0x88), d = _mm256_shuffle_ps(a, b, 0xdd);   // 0 1 4 5 | 2 3 6 7
                float *dst = x ? mg : sg;
                _mm256_storeu_ps(dst + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8)));
                _mm256_storeu_ps(dst + n8 + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(d), 0xd8)));
            }
    else if (gpt > 2)
        for (int64_t j = 0; j < n; j++)
            for (int g = 0; g < gpt; g++) {
                sg[g * n8 + j] = sm[j * gpt + g];
                mg[g * n8 + j] = sm[n8 * gpt + j * gpt + g];
            }
    for (int g = 0; g < gpt; g++)
        for (int64_t j = n; j < n8; j++) sg[g * n8 + j] = mg[g * n8 + j] = 0.0f;
    __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - (n8 - 8))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int h = 0; h < gq; h++)
        for (int g = 0; g < gpt; g++) {
            __m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };   // two FMA chains
            const float *sv = sg + g * n8, *mv = mg + g * n8, *ph = p + h * ATTN_CHUNK;
            float *wv = w + ((int64_t)h * gpt + g) * n8;
            _Pragma("GCC unroll 2") for (int64_t j = 0; j < n8; j += 8) {   // the last 8 are masked: p is not written past n
                __m256 pv = j + 8 < n8 ? _mm256_loadu_ps(ph + j) : _mm256_maskload_ps(ph + j, live);
                _mm256_storeu_ps(wv + j, _mm256_mul_ps(pv, _mm256_loadu_ps(sv + j)));
                acc[(j >> 3) & 1] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(mv + j), acc[(j >> 3) & 1]);
            }
            moff[h * gpt + g] = _mm_cvtss_f32(hsum4_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()));
        }
    for (int h0 = 0; h0 < gq; h0 += 4) {
        ValueArgs a = { v, t, n, n8, o + h0 * hd, w + (int64_t)h0 * gpt * n8, moff + h0 * gpt };
        value_codes_set(&a, gq - h0 < 4 ? gq - h0 : 4);
    }
}

// fp16 value rows, nh heads, 16 channels at a time.
TARGET INLINE void value_rows_set(const float *p, const uint16_t *rows, int64_t n, int hd, float *o, const int nh) {
    for (int c = 0; c < hd; c += 16) {
        __m256 acc[4][2];
        HEADS for (int h = 0; h < 4; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j++) {
            if (c == 0) prefetch_ahead(rows + j * hd, 2 * hd);
            __m256 f0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rows + j * hd + c)));
            __m256 f1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rows + j * hd + c + 8)));
            HEADS for (int h = 0; h < nh; h++) {
                __m256 w = _mm256_broadcast_ss(p + h * ATTN_CHUNK + j);
                acc[h][0] = _mm256_fmadd_ps(w, f0, acc[h][0]);
                acc[h][1] = _mm256_fmadd_ps(w, f1, acc[h][1]);
            }
        }
        HEADS for (int h = 0; h < nh; h++) add16(o + h * hd + c, acc[h][0], acc[h][1], 0, 0.0f);
    }
}

TARGET static void value_rows_simd(const float *p, int gq, const uint16_t *rows, int64_t n, int hd, float *o) {
    if (hd % 16) { attn_portable.value_rows(p, gq, rows, n, hd, o); return; }
    for (int h0 = 0; h0 < gq; h0 += 4) {
        const float *ph = p + h0 * ATTN_CHUNK;
        float *oh = o + h0 * hd;
        switch (gq - h0) {
        case 1: value_rows_set(ph, rows, n, hd, oh, 1); break;
        case 2: value_rows_set(ph, rows, n, hd, oh, 2); break;
        case 3: value_rows_set(ph, rows, n, hd, oh, 3); break;
        default: value_rows_set(ph, rows, n, hd, oh, 4); break;
        }
    }
}

const AttnKernels ATTN_TABLE = { ATTN_TABLE_NAME, order_query_simd, key_rows_simd, key_codes_simd, softmax_simd, value_rows_simd, value_codes_simd };

#endif
