// fuzz_quantize.c: the KV-cache group quantizer (quant/quantize.c). Input: one byte of
// options (bits 2/4/8, symmetric or not), then the group's values as raw float32.
//
// A group is refused (-1) exactly when it holds a NaN or an infinity, or when its scale or
// offset would not fit fp16 (quantize.h). A group it takes dequantizes within half a step of
// every input: the codes are chosen on the float64 grid u·s + m, where that holds exactly
// (up to float64 rounding); storing s and m in fp16 then moves each value by at most half an
// fp16 ulp of s per code step and half an ulp of m, which quantize.h documents. Codes fit
// their bits, and pack/unpack gives them back.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../quant/quantize.h"
#include "../../util/util.h"

static double half_ulp16(double v) {         // the most rounding to fp16 moves v (normal range)
    v = fabs(v);
    return v < ldexp(1.0, -14) ? ldexp(1.0, -25) : ldexp(1.0, (int)floor(log2(v)) - 11);
}

static void run(const uint8_t *data, size_t size) {
    if (size < 5) return;
    int bits = (int[]){ 2, 4, 8 }[data[0] % 3], sym = (data[0] >> 2) & 1;
    int n = (int)((size - 1) / 4);
    if (n > 256) n = 256;
    float x[256];
    memcpy(x, data + 1, (size_t)n * 4);
    uint8_t u[256], packed[256], back[256];
    uint16_t s16, m16;
    int rc = quantize_group(x, n, bits, sym, u, &s16, &m16);

    // The seed's formula in float64 (quantize.h), for the refusal rule and the exact grid.
    double lo = INFINITY, hi = -INFINITY, amax = 0;
    int finite = 1;
    for (int i = 0; i < n; i++) {
        finite &= isfinite(x[i]) != 0;
        lo = fmin(lo, x[i]); hi = fmax(hi, x[i]); amax = fmax(amax, fabs(x[i]));
    }
    double qmin = -ldexp(1, bits - 1), qmax = ldexp(1, bits - 1) - 1, s, m;
    if (sym) { s = fmax(amax, 1e-5) / qmax; m = qmin * s; }
    else { s = fmax(hi - lo, 1e-5) / (ldexp(1, bits) - 1); m = nearbyint(lo / s) * s; }
    int fits = finite && s <= 65504.0 && fabs(m) <= 65504.0;
    if ((rc == 0) != fits)
        fuzz_fail("%d-bit %s group of %d: quantize_group returned %d, but the group %s", bits, sym ? "sym" : "asym", n,
                  rc, fits ? "fits fp16" : "does not fit fp16");
    if (rc) return;

    float xh[256];
    dequantize_group(u, n, s16, m16, xh);
    for (int i = 0; i < n; i++) {
        if (u[i] >> bits) fuzz_fail("code %d of %d-bit group is %d", i, bits, u[i]);
        double exact = u[i] * s + m, err = fabs(exact - x[i]);
        if (err > 0.5 * s * (1 + 1e-12) + 1e-12 * fabs(x[i]))
            fuzz_fail("%d-bit %s: x[%d] = %.9g is %.9g from its grid value, more than half the step %.9g", bits,
                      sym ? "sym" : "asym", i, (double)x[i], err, s);
        double stored = u[i] * half_ulp16(s) + half_ulp16(m) + ldexp(fabs(exact) + u[i] * s, -22);
        if (fabs(xh[i] - exact) > stored)
            fuzz_fail("%d-bit: x̂[%d] = %.9g, the grid says %.9g (fp16 storage allows %.3g)", bits, i, (double)xh[i],
                      exact, stored);
    }
    pack_codes(u, n, bits, packed);
    unpack_codes(packed, n, bits, back);
    if (memcmp(u, back, (size_t)n)) fuzz_fail("pack/unpack of %d %d-bit codes differs", n, bits);
}

FUZZ_TARGET(quantize)
