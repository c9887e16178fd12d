// quantize.h: the vanilla group quantizer of KVTuner's seed code (docs/DESIGN.md §3), with real
// bit packing. A group x_1..x_n at `bits` in {2, 4, 8} becomes n unsigned codes u in
// [0, 2^bits) plus one fp16 scale s and one fp16 offset m, so that x̂ = u·s + m.
//
//   asymmetric: s = max(max - min, 1e-5) / (2^n - 1),  z = round(min / s) - q_min,
//               q = clamp(round(x / s - z), q_min, q_max),  m = (z + q_min)·s
//   symmetric:  s = max(absmax, 1e-5) / q_max,  q = clamp(round(x / s), q_min, q_max),
//               m = q_min·s
//   with q_min = -2^(bits-1), q_max = 2^(bits-1) - 1, u = q - q_min, and round = round half
//   to even (torch.round in the seed). Codes are computed in float64 from the inputs.
//
// Inputs the cache can hold: finite values whose scale and offset fit fp16. A group with a
// NaN or ±inf, or whose s or m would overflow fp16 (|x| beyond about 3·10^4), is refused
// (quantize_group returns -1): the cache reports it as a fatal error naming layer, head and
// position, because silently storing inf would poison every later attention score.
// Denormal inputs need no special case: the 1e-5 floor on the range makes their group a
// constant group (u = 0, x̂ = m ≈ 0).
#ifndef KVT_QUANTIZE_H
#define KVT_QUANTIZE_H

#include <stdint.h>

// Bytes that n packed codes of `bits` occupy (a group always starts on a byte boundary).
static inline int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

// Quantize x[0..n) into codes u[0..n) (one code per byte, unpacked) and the fp16 scale and
// offset. Returns 0, or -1 if the group cannot be represented (see above).
int quantize_group(const float *x, int n, int bits, int symmetric,
                   uint8_t *u, uint16_t *scale, uint16_t *offset);

// x̂[i] = u[i]·s + m, with s and m the fp16 scale and offset.
void dequantize_group(const uint8_t *u, int n, uint16_t scale, uint16_t offset, float *out);

// Bit packing, little-endian within a byte: code i lives in bits [(i·bits) mod 8, +bits) of
// byte (i·bits)/8. bits in {2, 4, 8} divides 8, so no code straddles two bytes. Pack writes
// packed_bytes(n, bits) bytes, zeroing the unused high bits of the last one.
void pack_codes(const uint8_t *u, int n, int bits, uint8_t *packed);
void unpack_codes(const uint8_t *packed, int n, int bits, uint8_t *u);

#endif
