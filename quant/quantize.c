// quantize.c: the group quantizer and bit packing (see quantize.h for the formulas).
#include <math.h>
#include "quantize.h"
#include "../util/util.h"

// fp16 cannot hold a scale or offset beyond its largest finite value.
#define FP16_MAX 65504.0

int quantize_group(const float *x, int n, int bits, int symmetric,
                   uint8_t *u, uint16_t *scale, uint16_t *offset) {
    double lo = x[0], hi = x[0];
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) return -1;
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    const double q_min = -(double)(1 << (bits - 1)), q_max = (double)((1 << (bits - 1)) - 1);
    double s, z;      // scale and zero point of the seed's formula; x̂ = (q + z)·s
    if (symmetric) {
        double absmax = fmax(fabs(lo), fabs(hi));
        s = fmax(absmax, 1e-5) / q_max;
        z = 0.0;
    } else {
        s = fmax(hi - lo, 1e-5) / (double)((1 << bits) - 1);
        z = nearbyint(lo / s) - q_min;          // nearbyint: round half to even, as torch.round
    }
    double m = (z + q_min) * s;                  // offset so that x̂ = u·s + m with u = q - q_min
    if (s > FP16_MAX || fabs(m) > FP16_MAX) return -1;
    for (int i = 0; i < n; i++) {
        double q = nearbyint(x[i] / s - z);
        q = q < q_min ? q_min : q > q_max ? q_max : q;
        u[i] = (uint8_t)(q - q_min);
    }
    *scale = fp32_to_fp16((float)s);
    *offset = fp32_to_fp16((float)m);
    return 0;
}

void dequantize_group(const uint8_t *u, int n, uint16_t scale, uint16_t offset, float *out) {
    float s = fp16_to_fp32(scale), m = fp16_to_fp32(offset);
    for (int i = 0; i < n; i++) out[i] = (float)u[i] * s + m;
}

void pack_codes(const uint8_t *u, int n, int bits, uint8_t *packed) {
    int per_byte = 8 / bits;
    int64_t nbytes = packed_bytes(n, bits);
    for (int64_t b = 0; b < nbytes; b++) packed[b] = 0;
    for (int i = 0; i < n; i++)
        packed[i / per_byte] |= (uint8_t)(u[i] << ((i % per_byte) * bits));
}

void unpack_codes(const uint8_t *packed, int n, int bits, uint8_t *u) {
    int per_byte = 8 / bits;
    uint8_t mask = (uint8_t)((1u << bits) - 1);
    for (int i = 0; i < n; i++)
        u[i] = (uint8_t)((packed[i / per_byte] >> ((i % per_byte) * bits)) & mask);
}
