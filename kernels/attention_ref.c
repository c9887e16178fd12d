// attention_ref.c: attention as the textbook writes it, over the cache as it is stored. Read
// this before kernels/attention.c, which computes the same thing fast, and which the tests
// hold to this within ATTN_TOLERANCE (tests/test_attention.c).
//
// For one query head q (head_dim d) and its KV head's key and value streams, tokens 0..T-1,
// and the position's own key and value as token T (the seed's timing, docs/DESIGN.md §3.3: a
// position sees itself as computed, rounded to fp16, and is quantized when it is stored):
//   k̂_t, v̂_t   the token's key and value: its fp16 row, or, where it is quantized, for each
//               element x̂ = u·s + m, with u the element's code and s, m the fp16 scale and
//               offset of its group (KVTuner arXiv 2502.04420 §3; keys grouped per channel
//               as in KIVI arXiv 2402.02750)
//   a_t = q·k̂_t / √d                          the scores, t = 0..T
//   p_t = exp(a_t − max a) / Σ_τ exp(a_τ − max a)   softmax (the max keeps exp finite)
//   out = Σ_t p_t v̂_t
// No SIMD, no tiling, sums in double: the slow and obvious version.
#include <math.h>
#include <stdlib.h>
#include "attention.h"
#include "../util/util.h"

// x[c] for every channel c of token t of stream s.
static void dequantize_token(const KVStreamView *s, int64_t t, float *x) {
    for (int c = 0; c < s->head_dim; c++) {
        if (!kv_is_quantized(s, t)) {                          // sink, window or fp16 stream
            x[c] = fp16_to_fp32(kv_fp16(s, t)[c]);
            continue;
        }
        int i;
        int64_t g = kv_group_of(s, t, c, &i);                  // its group, and its place in it
        unsigned u = kv_code(s->codes + g * s->group_bytes, i, s->bits);
        x[c] = (float)u * fp16_to_fp32(s->sm[2 * g]) + fp16_to_fp32(s->sm[2 * g + 1]);   // x̂ = u·s + m
    }
}

// x[c] for every channel c of token t, where token T = s->r.len is the position's own row.
static void token_row(const KVStreamView *s, const float *own, int64_t t, float *x) {
    if (t == s->r.len)
        for (int c = 0; c < s->head_dim; c++) x[c] = own[c];
    else
        dequantize_token(s, t, x);
}

void attention_ref_head(const KVStreamView *k, const KVStreamView *v, const float *own_k, const float *own_v,
                        const float *q, float *out) {
    int d = k->head_dim;
    int64_t T = k->r.len + (own_k ? 1 : 0);                    // tokens attended to
    float *a = xmalloc(sizeof(float) * (size_t)(T > 0 ? T : 1)), x[d], mx = -INFINITY;
    for (int64_t t = 0; t < T; t++) {                          // a_t = q·k̂_t / √d
        token_row(k, own_k, t, x);
        double dot = 0.0;
        for (int c = 0; c < d; c++) dot += (double)q[c] * x[c];
        a[t] = (float)(dot / sqrt((double)d));
        if (a[t] > mx) mx = a[t];
    }
    double total = 0.0, o[d];
    for (int64_t t = 0; t < T; t++) {                          // softmax numerators and their sum
        a[t] = expf(a[t] - mx);
        total += a[t];
    }
    for (int c = 0; c < d; c++) o[c] = 0.0;
    for (int64_t t = 0; t < T; t++) {                          // Σ_t p_t v̂_t
        token_row(v, own_v, t, x);
        for (int c = 0; c < d; c++) o[c] += (double)a[t] * x[c];
    }
    for (int c = 0; c < d; c++) out[c] = T > 0 ? (float)(o[c] / total) : 0.0f;
    free(a);
}
