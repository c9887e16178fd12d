// matmul_q8.h: matrices with Q8_0 weights (config.h BlockQ8_0: GGUF's Q8_0 block, an fp16
// scale and 32 int8 codes along a row). matmul() and matmul_multi() (kernels.h) call
// matmul_q8_0_multi for DTYPE_Q8_0; the pieces are exposed here so that tests/test_kernels.c can check every
// instruction-set variant against a plain reference, and the exporter can quantize weights.
#ifndef KVT_MATMUL_Q8_H
#define KVT_MATMUL_Q8_H

#include <stdint.h>
#include "../model/config.h"
#include "kernels.h"

// ---- weights (the exporter's quantizer and the embedding lookup) -------------------------

// Quantize one row of k values (k a multiple of 32) to k/32 blocks: per block d = amax/127
// rounded to fp16, q = round(x / d) (to nearest, ties to even) clamped to [-127, 127], with
// the stored (fp16) d, so each weight is within d/2 of d*q. Returns 0, or -1 if a value is
// not finite or a scale overflows fp16 (the row is then left partly written).
int q8_0_quantize_row(BlockQ8_0 *out, const float *x, uint64_t k);
// out[i] = d * q[i] for the k values of blocks in[0 .. k/32).
void q8_0_dequantize_row(float *out, const BlockQ8_0 *in, uint64_t k);

// ---- the matmul ------------------------------------------------------------------------

// The activations of one token, quantized per block of 32 for the integer dot products:
// xd[b] = amax_b / 127 (f32), xq[i] = round(x[i] / xd[b]) computed as x[i] * (1 / xd[b]),
// rounded to nearest, ties to even; |xq| <= 127. A block whose scale is below FLT_MIN gets
// codes 0. k is a multiple of 32.
void q8_quantize_act_ref(int8_t *xq, float *xd, const float *x, int k);

// The instruction-set variants; all give bit-identical results (matmul_q8.c says why).
typedef enum { Q8_PORTABLE = 0, Q8_AVX2 = 1, Q8_AVX512_VNNI = 2, Q8_VARIANTS = 3 } Q8Variant;
const char *q8_variant_name(Q8Variant v);       // "portable", "avx2", "avx512vnni"
int q8_variant_available(Q8Variant v);          // compiled in and supported by this CPU
Q8Variant q8_variant_best(void);                // what matmul() uses

// The activation quantizer variant v uses (its SIMD copy must give q8_quantize_act_ref's bytes).
void q8_quantize_act(Q8Variant v, int8_t *xq, float *xd, const float *x, int k);

// out[n][d] = x[n][k] . W[d][k]^T with W in Q8_0 (d rows of k/32 blocks), using variant v
// (which must be available). Rows are split over OpenMP threads; a token's outputs do not
// depend on n (prefill equals decode bit for bit).
void matmul_q8_0_variant(Q8Variant v, float *out, const float *x, const void *w, int n, int k, int d);
// matmul_multi (kernels.h) with Q8_0 weights: x is quantized once for all the outputs.
void matmul_q8_0_multi(Q8Variant v, const float *x, int n, int k, const MatmulOut *outs, int count);

#endif
