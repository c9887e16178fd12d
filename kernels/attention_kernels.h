// attention_kernels.h: the inner loops of the fast attention (private to kernels/attention*.c).
// kernels/attention.c holds the plain C version of each, kernels/attention_avx2.c the AVX2
// one (compiled again with AVX-512 VNNI by kernels/attention_vnni.c); a table of function
// pointers, chosen for the CPU as kernels.c chooses its matmul, says which runs. Every loop
// works on a run of tokens held the same way (kv_run).
//
// The arithmetic, for one query head q (already scaled by 1/√d) and a quantized token with
// codes u, scales s_g and offsets m_g per group g (x̂ = u·s + m):
//   score  q·x̂ = Σ_g s_g (q_g·u_g) + m_g Σ_{c∈g} q_c
//          q·u is an integer dot product: q ≈ α·q16 with q16 = round(q/α) in int16, α =
//          max|q| / 32767, so q_g·u_g ≈ α (q16_g·u_g), exact in int32.
//   KIVI keys (per channel): in a block of G tokens channel c has one (s_c, m_c), so the scales
//          fold into the query once per block: q·x̂_j = Σ_c (q_c s_c) u_cj + Σ_c q_c m_c.
//   values Σ_j p_j x̂_j = Σ_j (p_j s_j) u_j + Σ_j p_j m_j, per group of each token.
#ifndef KVT_ATTENTION_KERNELS_H
#define KVT_ATTENTION_KERNELS_H

#include <math.h>
#include <stdint.h>
#include "attention.h"

// Tokens per work item: the cache is cut at fixed multiples of ATTN_CHUNK, so that a result
// depends only on the data, never on how the work was split (batched prefill reproduces
// decoding bit for bit).
enum { ATTN_CHUNK = 128 };

// The query heads that share one KV head, prepared for its key stream (prepare_query).
typedef struct {
    const float *q;         // [gq][hd]: the query heads times 1/√hd
    const int16_t *q16;     // [gq][hd]: round(q / alpha), channels in natural order
    const float *alpha;     // [gq]: q ≈ alpha · q16
    const float *gsum;      // [gq][groups_per_token]: Σ q over the channels of each key group
    const int16_t *qk;      // [gq][hd]: q16 in the order the variant's key loop reads it (order_query), or NULL
    int gq, hd;
} Query;

// Scores and probabilities live in s[h * ATTN_CHUNK + j], j the token's index in the run.
typedef struct {
    const char *name;       // as attention_name says it: "fast (avx2)"
    // Lay q->q16 out in out[gq][hd] as key_codes wants it for the key stream k (NULL: as is).
    void (*order_query)(const Query *q, const KVStreamView *k, int16_t *out);
    // s[h][j] = q_h · k_j for fp16 key rows [n][hd] / for quantized tokens [t, t + n) of k.
    void (*key_rows)(const Query *q, const uint16_t *rows, int64_t n, float *s);
    void (*key_codes)(const Query *q, const KVStreamView *k, int64_t t, int64_t n, float *s);
    // For each head: s[h][0..n) := exp(s - max), st[h] = {max, Σ exp}.
    void (*softmax)(float *s, int gq, int64_t n, float *st);
    // o[h] += Σ_j p[h][j] v_j for fp16 value rows / for quantized tokens [t, t + n) of v.
    void (*value_rows)(const float *p, int gq, const uint16_t *rows, int64_t n, int hd, float *o);
    void (*value_codes)(const float *p, int gq, const KVStreamView *v, int64_t t, int64_t n, float *o);
} AttnKernels;

extern const AttnKernels attn_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KVT_PORTABLE)
#define KVT_ATTN_AVX2 1
extern const AttnKernels attn_avx2;
extern const AttnKernels attn_vnni;    // the same loops with vpdpwssd (kernels/attention_vnni.c)
#endif

// exp(x) for x <= 0 (softmax arguments), the same polynomial in every variant: 2^n·e^r with
// n = round(x·log2 e), |r| <= ln2/2, e^r by its Taylor series to r⁶ (relative error < 2e-7);
// 0 below -87 (where 2^n leaves the normal floats).
#define EXP_LOG2E 1.44269504f
#define EXP_LN2_HI 0.693145752f    // ln 2 split in two so that n·ln2_hi is exact
#define EXP_LN2_LO 1.42860677e-6f
#define EXP_MIN -87.0f
static inline float attn_exp(float x) {
    if (!(x >= EXP_MIN)) return 0.0f;
    float n = (x * EXP_LOG2E + 0x1.8p23f) - 0x1.8p23f;    // round to nearest (|x·log2 e| < 2^22)
    float r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120; p = p * r + 1.0f / 24; p = p * r + 1.0f / 6;
    p = p * r + 0.5f; p = p * r + 1.0f; p = p * r + 1.0f;
    union { uint32_t u; float f; } two_n = { (uint32_t)((int)n + 127) << 23 };
    return p * two_n.f;
}

#endif
