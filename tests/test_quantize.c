// test_quantize.c: the group quantizer against a float64 evaluation of docs/DESIGN.md §3's formula,
// and bit packing round trips.
#include "testutil.h"
#include "../quant/quantize.h"
#include "../util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const int widths[] = { 2, 4, 8 };
static const int sizes[] = { 1, 2, 3, 5, 7, 8, 16, 31, 32, 64, 128 };

// The formula, written out in float64 with round half to even (torch.round in the seed).
static void ref_quant(const float *x, int n, int bits, int sym, uint8_t *u, double *s, double *m) {
    double qmin = -ldexp(1.0, bits - 1), qmax = ldexp(1.0, bits - 1) - 1.0, z = 0.0;
    double lo = INFINITY, hi = -INFINITY, amax = 0.0;
    for (int i = 0; i < n; i++) { lo = fmin(lo, x[i]); hi = fmax(hi, x[i]); amax = fmax(amax, fabs(x[i])); }
    if (sym) *s = fmax(amax, 1e-5) / qmax;
    else { *s = fmax(hi - lo, 1e-5) / (ldexp(1.0, bits) - 1.0); z = rint(lo / *s) - qmin; }
    for (int i = 0; i < n; i++) {
        double q = rint(x[i] / *s - z);
        u[i] = (uint8_t)(fmin(fmax(q, qmin), qmax) - qmin);
    }
    *m = (z + qmin) * *s;
}

// Half an fp16 ulp at v (the most fp16 rounding can move v).
static double half_ulp16(double v) {
    v = fabs(v);
    if (v < ldexp(1.0, -14)) return ldexp(1.0, -25);
    return ldexp(1.0, (int)floor(log2(v)) - 11);
}

static uint64_t rng = 88172645463325252ULL;
static double uniform(void) {          // xorshift64 in [0, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

// Quantize x with both the library and the reference; codes must match exactly, s and m
// must be the fp16 roundings of the float64 values, and x̂ within fp16 rounding of (q+z)s.
static void check_group(const float *x, int n, int bits, int sym) {
    uint8_t u[256], ur[256];
    uint16_t s16, m16;
    double s, m;
    ck_assert_int_eq(quantize_group(x, n, bits, sym, u, &s16, &m16), 0);
    ref_quant(x, n, bits, sym, ur, &s, &m);
    for (int i = 0; i < n; i++)
        ck_assert_msg(u[i] == ur[i], "bits %d sym %d n %d: code %d is %d, formula says %d (x=%g)",
                      bits, sym, n, i, u[i], ur[i], (double)x[i]);
    ck_assert_uint_eq(s16, fp32_to_fp16((float)s));
    ck_assert_uint_eq(m16, fp32_to_fp16((float)m));
    float xh[256];
    dequantize_group(u, n, s16, m16, xh);
    for (int i = 0; i < n; i++) {
        double exact = ur[i] * s + m;                       // (q + z)·s
        double tol = ur[i] * half_ulp16(s) + half_ulp16(m) + 1e-6 * fabs(exact) + 1e-30;
        ck_assert_msg(fabs(xh[i] - exact) <= tol, "bits %d: x̂ %g vs formula %g", bits, (double)xh[i], exact);
        ck_assert(u[i] < (1u << bits));
    }
    // Quantization error is at most about half a step (plus clamping at the ends for sym).
    if (!sym)
        for (int i = 0; i < n; i++) ck_assert(fabs(xh[i] - x[i]) <= 0.51 * s + 2 * half_ulp16(m) + ur[i] * half_ulp16(s) + 1e-7);
}

START_TEST(test_random_groups) {
    float x[256];
    for (int wi = 0; wi < 3; wi++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            for (int sym = 0; sym < 2; sym++)
                for (int trial = 0; trial < 20; trial++) {
                    int n = sizes[si];
                    double scale = ldexp(1.0, (int)(uniform() * 16) - 8), shift = (uniform() - 0.5) * 4 * scale;
                    for (int i = 0; i < n; i++) x[i] = (float)((uniform() * 2 - 1) * scale + shift);
                    check_group(x, n, widths[wi], sym);
                }
}
END_TEST

START_TEST(test_edge_groups) {
    float x[64];
    for (int wi = 0; wi < 3; wi++)
        for (int sym = 0; sym < 2; sym++) {
            int b = widths[wi];
            for (int i = 0; i < 64; i++) x[i] = 3.25f;                     // constant group
            check_group(x, 64, b, sym);
            for (int i = 0; i < 64; i++) x[i] = 0.0f;                      // all zero
            check_group(x, 64, b, sym);
            for (int i = 0; i < 64; i++) x[i] = -1.0f - (float)i * 0.37f;  // negative only
            check_group(x, 64, b, sym);
            for (int i = 0; i < 64; i++) x[i] = (i % 2 ? 1e-40f : -3e-39f) * (float)i; // denormals
            check_group(x, 64, b, sym);
            for (int i = 0; i < 64; i++) x[i] = (float)((i * 7919) % 64 - 32) * 500.0f; // wide range
            check_group(x, 64, b, sym);
            for (int i = 0; i < 64; i++) x[i] = (float)(i % 4) * 0.5f;     // ties at half steps
            check_group(x, 64, b, sym);
            check_group(x, 1, b, sym);                                      // single element
        }
}
END_TEST

START_TEST(test_rejected_groups) {
    float x[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    uint8_t u[8];
    uint16_t s, m;
    for (int wi = 0; wi < 3; wi++) {
        x[3] = NAN;
        ck_assert_int_eq(quantize_group(x, 8, widths[wi], 0, u, &s, &m), -1);
        x[3] = INFINITY;
        ck_assert_int_eq(quantize_group(x, 8, widths[wi], 1, u, &s, &m), -1);
        x[3] = -INFINITY;
        ck_assert_int_eq(quantize_group(x, 8, widths[wi], 0, u, &s, &m), -1);
        x[3] = 4;
        ck_assert_int_eq(quantize_group(x, 8, widths[wi], 0, u, &s, &m), 0);
    }
    // Offsets beyond fp16: the 2-bit symmetric offset is -2·absmax/1.
    float big[2] = { -40000.0f, 40000.0f };
    ck_assert_int_eq(quantize_group(big, 2, 2, 1, u, &s, &m), -1);
    ck_assert_int_eq(quantize_group(big, 2, 8, 0, u, &s, &m), 0);
}
END_TEST

START_TEST(test_pack_roundtrip) {
    uint8_t u[300], back[300], packed[300];
    for (int wi = 0; wi < 3; wi++) {
        int b = widths[wi];
        for (int n = 1; n <= 257; n++) {
            for (int i = 0; i < n; i++) u[i] = (uint8_t)(uniform() * (1 << b));
            memset(packed, 0xAB, sizeof packed);
            pack_codes(u, n, b, packed);
            int64_t nb = packed_bytes(n, b);
            ck_assert_int_eq(nb, (n * b + 7) / 8);
            ck_assert_uint_eq(packed[nb], 0xAB);                         // wrote nothing beyond
            int used = (n * b) % 8;
            if (used) ck_assert_uint_eq(packed[nb - 1] >> used, 0);       // padding bits zero
            unpack_codes(packed, n, b, back);
            ck_assert(memcmp(u, back, (size_t)n) == 0);
            // The documented bit order: code i in bits (i*b) % 8 of byte i*b/8.
            for (int i = 0; i < n; i++)
                ck_assert_uint_eq((packed[i * b / 8] >> ((i * b) % 8)) & ((1 << b) - 1), u[i]);
        }
    }
}
END_TEST

static Suite *quantize_suite(void) {
    Suite *s = suite_create("quantize");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);                 // generous: shared machines, sanitizers
    tcase_add_test(tc, test_random_groups);
    tcase_add_test(tc, test_edge_groups);
    tcase_add_test(tc, test_rejected_groups);
    tcase_add_test(tc, test_pack_roundtrip);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(quantize_suite)
