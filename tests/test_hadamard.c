// test_hadamard.c: the fast Walsh–Hadamard transform against the plain matrix
// H[i][j] = (-1)^popcount(i & j) / √n (Sylvester's construction, evaluated in float64), and the
// properties the rotated cache relies on: H is its own inverse and keeps dot products.
#include <math.h>
#include <stdlib.h>
#include "testutil.h"
#include "../quant/hadamard.h"
#include "../quant/kvrotate.h"

static float rnd(unsigned *s) { *s = *s * 1103515245u + 12345u; return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f; }

START_TEST(test_matches_matrix) {
    unsigned seed = 7;
    for (int n = 1; n <= 256; n *= 2) {
        float x[256], y[256];
        for (int i = 0; i < n; i++) x[i] = y[i] = rnd(&seed) * 10.0f;
        hadamard_transform(y, n);
        for (int i = 0; i < n; i++) {
            double want = 0;
            for (int j = 0; j < n; j++) want += (__builtin_popcount(i & j) & 1 ? -1.0 : 1.0) * x[j];
            want /= sqrt((double)n);
            ck_assert_msg(fabs(y[i] - want) <= 1e-5 * (1 + fabs(want)), "n %d row %d: %g vs %g", n, i, y[i], want);
        }
    }
}
END_TEST

START_TEST(test_orthonormal) {
    unsigned seed = 11;
    for (int n = 2; n <= 128; n *= 2) {
        float q[128], k[128], x[128];
        double dot = 0, dot_rot = 0;
        for (int i = 0; i < n; i++) { q[i] = rnd(&seed); k[i] = rnd(&seed); x[i] = q[i]; dot += (double)q[i] * k[i]; }
        hadamard_transform(q, n);
        hadamard_transform(k, n);
        for (int i = 0; i < n; i++) dot_rot += (double)q[i] * k[i];
        ck_assert_msg(fabs(dot - dot_rot) < 1e-5, "n %d: q.k %g, (Hq).(Hk) %g", n, dot, dot_rot);
        hadamard_transform(q, n);                    // H·H = I
        for (int i = 0; i < n; i++) ck_assert_msg(fabs(q[i] - x[i]) < 1e-6, "n %d: H(Hq)[%d] %g vs %g", n, i, q[i], x[i]);
    }
}
END_TEST

START_TEST(test_spreads_an_outlier) {
    // One huge channel (SmolLM2's keys have a few) becomes n channels of equal magnitude.
    float x[64] = { 0 };
    x[5] = 64.0f;
    hadamard_transform(x, 64);
    for (int i = 0; i < 64; i++) ck_assert_float_eq_tol(fabsf(x[i]), 8.0f, 1e-6f);
}
END_TEST

START_TEST(test_sizes) {
    ck_assert(hadamard_size_ok(1) && hadamard_size_ok(64) && hadamard_size_ok(128));
    ck_assert(!hadamard_size_ok(0) && !hadamard_size_ok(96) && !hadamard_size_ok(-4));
}
END_TEST

// Per-token key groups smaller than head_dim: keys (and their queries) go to the seed's
// rotate-half order, so the first group of 32 at head_dim 64 holds channels 0, 2, ..., 62 (the
// first element of every RoPE pair). Scores are unchanged, values untouched.
START_TEST(test_seed_channel_order) {
    KVSpec s;
    build_kvspec_uniform(&s, 1, 1, 64, 4, 4);
    float q[2][64], k[64], v[64], q0[2][64], k0[64];
    for (int c = 0; c < 64; c++) { k[c] = k0[c] = (float)c; v[c] = (float)-c; q[0][c] = q0[0][c] = 1.0f / (c + 1); q[1][c] = q0[1][c] = c % 3; }
    kv_transform_qkv(&s, 0, &q[0][0], k, v, 1, 2);                       // G = -1: nothing to do
    ck_assert(!kv_layer_transforms(&s, 0) && k[1] == 1.0f);
    s.group = 32;
    ck_assert(kv_keys_rotate_half(&s) && kv_layer_transforms(&s, 0));
    kv_transform_qkv(&s, 0, &q[0][0], k, v, 1, 2);
    for (int c = 0; c < 32; c++) { ck_assert_float_eq(k[c], 2.0f * c); ck_assert_float_eq(k[32 + c], 2.0f * c + 1); }
    for (int c = 0; c < 64; c++) ck_assert_float_eq(v[c], (float)-c);
    for (int h = 0; h < 2; h++) {
        double a = 0, b = 0;
        for (int c = 0; c < 64; c++) { a += (double)q0[h][c] * k0[c]; b += (double)q[h][c] * k[c]; }
        ck_assert_msg(fabs(a - b) < 1e-9 * fabs(a), "head %d: q.k %g became %g", h, a, b);
    }
    s.key_axis = KEY_AXIS_CHANNEL;                                       // KIVI keys: no reordering
    ck_assert(!kv_keys_rotate_half(&s));
    free_kvspec(&s);
}
END_TEST

static Suite *hadamard_suite(void) {
    Suite *s = suite_create("hadamard");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_matches_matrix);
    tcase_add_test(tc, test_orthonormal);
    tcase_add_test(tc, test_spreads_an_outlier);
    tcase_add_test(tc, test_sizes);
    tcase_add_test(tc, test_seed_channel_order);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(hadamard_suite)
