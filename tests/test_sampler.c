// test_sampler.c: greedy, temperature and top-p sampling (model/sampler.c).
#include "testutil.h"
#include "../model/sampler.h"

#include <math.h>
#include <string.h>

#define V 6
static const float base_logits[V] = {1.0f, 3.0f, 0.5f, 2.0f, -1.0f, 2.9f};

static int draw(Sampler *s) {
    float l[V];
    memcpy(l, base_logits, sizeof l);
    return sample(s, l);
}

START_TEST(test_greedy) {
    Sampler s;
    build_sampler(&s, V, 0.0f, 0.9f, 1);
    for (int i = 0; i < 10; i++) ck_assert_int_eq(draw(&s), 1);
    free_sampler(&s);
    build_sampler(&s, V, 1.0f, 0.0f, 7);   // top-p 0: the nucleus is the top token alone
    for (int i = 0; i < 50; i++) ck_assert_int_eq(draw(&s), 1);
    free_sampler(&s);
}
END_TEST

START_TEST(test_frequencies) {
    // top-p 1 at temperature 1: frequencies follow softmax(logits)
    double p[V], z = 0;
    for (int i = 0; i < V; i++) z += p[i] = exp(base_logits[i]);
    int count[V] = {0}, n = 40000;
    Sampler s;
    build_sampler(&s, V, 1.0f, 1.0f, 12345);
    for (int i = 0; i < n; i++) count[draw(&s)]++;
    for (int i = 0; i < V; i++) {
        double want = p[i] / z, got = (double)count[i] / n, sd = sqrt(want * (1 - want) / n);
        ck_assert_msg(fabs(got - want) < 5 * sd + 1e-3, "token %d: %.4f vs %.4f", i, got, want);
    }
    free_sampler(&s);
}
END_TEST

START_TEST(test_topp_nucleus) {
    // probabilities (sorted): 1 0.40, 5 0.36, 3 0.15, 0 0.05, ...: top-p 0.6 keeps {1, 5} only
    int seen[V] = {0};
    Sampler s;
    build_sampler(&s, V, 1.0f, 0.6f, 99);
    for (int i = 0; i < 5000; i++) seen[draw(&s)]++;
    ck_assert(seen[1] > 0 && seen[5] > 0);
    ck_assert_int_eq(seen[0] + seen[2] + seen[3] + seen[4], 0);
    // ... in proportion 0.40 : 0.36 within the nucleus
    double r = (double)seen[1] / (seen[1] + seen[5]), want = exp(3.0) / (exp(3.0) + exp(2.9));
    ck_assert_msg(fabs(r - want) < 0.03, "nucleus share %.3f vs %.3f", r, want);
    free_sampler(&s);
}
END_TEST

START_TEST(test_seeded) {
    Sampler a, b, c;
    build_sampler(&a, V, 1.3f, 0.95f, 42);
    build_sampler(&b, V, 1.3f, 0.95f, 42);
    build_sampler(&c, V, 1.3f, 0.95f, 43);
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 64; i++) {
        int x = draw(&a), y = draw(&b), z = draw(&c);
        same_ab &= x == y;
        same_ac &= x == z;
    }
    ck_assert(same_ab && !same_ac);
    for (int i = 0; i < 1000; i++) { float r = sampler_random(&a); ck_assert(r >= 0.0f && r < 1.0f); }
    free_sampler(&a); free_sampler(&b); free_sampler(&c);
}
END_TEST

static Suite *sampler_suite(void) {
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("sampler");
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_frequencies);
    tcase_add_test(tc, test_topp_nucleus);
    tcase_add_test(tc, test_seeded);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(sampler_suite)
