// test_golden.c: the golden model test (issue 2). The C runner against Hugging Face
// transformers loading the same GGUF in fp32 (tests/golden/smollm2/, made by
// tests/reference/make_golden.py; format and the figures behind the bounds in
// tests/golden/README.md).
//
//   f32 export: max |dlogit| <= 5e-3 over the full last-position logits and over the golden
//               top-20 at every prompt position; greedy continuation token-identical.
//   f16 export: figures printed; a looser bound (F16_MAX_DLOGIT below), and the continuation
//               may leave the golden one only at a near tie.
// Both run with the fp16 KV cache, the runner's baseline.
#include "testutil.h"
#include "golden.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_DIR "tests/golden/smollm2"
#define F32_MODEL  "models/smollm2-135m-instruct-f32.bin"
#define F32_MAX_DLOGIT 5e-3   // issue 2

// f16 weights round every matrix element to 11 significant bits (relative error <= 2^-11).
// transformers run with the same rounding applied to its weights moves these logits by at most
// ~0.05-0.08 (tests/golden/README.md, make_golden.py's closing figures); the C runner adds its
// own fp32 summation order on top. 0.25 is ~3x that: loose enough for any correct f16 path,
// tight enough that a wrong conversion (bf16 read as f16, a swapped row, a missed tensor)
// — which moves logits by whole units — fails.
#define F16_MAX_DLOGIT 0.25

static char **names;
static int n_cases;

static void need(const char *path) {
    ck_assert_msg(file_exists(path), "%s missing: run `make test` (it builds it)", path);
}

START_TEST(test_golden_files) {
    // The golden set is what issue 2 asks for: >= 3 prompts, a ChatML one among them, each
    // with top-20 at every position, full last logits and a continuation.
    ck_assert_int_ge(n_cases, 3);
    int chatml = 0;
    for (int i = 0; i < n_cases; i++) {
        GoldenCase g;
        read_golden_case(&g, GOLDEN_DIR, names[i]);
        ck_assert_int_eq(g.topk, 20);
        ck_assert_int_gt(g.n_gen, 0);
        ck_assert_int_eq(g.vocab, 49152);
        chatml += strstr(g.prompt, "<|im_start|>") != NULL;
        // the last top-20 row is the head of the full last logits
        ck_assert(g.top_logits[(size_t)(g.n_prompt - 1) * g.topk] == g.last_logits[g.top_ids[(size_t)(g.n_prompt - 1) * g.topk]]);
        free_golden_case(&g);
    }
    ck_assert_int_ge(chatml, 1);
}
END_TEST

START_TEST(test_prompt_ids) {
    // The C tokenizer (embedded in model.bin) gives transformers' ids for every golden prompt.
    // Special tokens are parsed, as transformers does: the ChatML prompt holds <|im_start|>.
    need(DEFAULT_MODEL);
    Model m;
    load_model(&m, DEFAULT_MODEL);
    for (int i = 0; i < n_cases; i++) {
        GoldenCase g;
        read_golden_case(&g, GOLDEN_DIR, names[i]);
        int *ids;
        int n = tokenizer_encode(&m.tokenizer, g.prompt, g.prompt_len, 1, &ids);
        ck_assert_msg(n == g.n_prompt, "%s: %d ids, transformers %d", g.name, n, g.n_prompt);
        for (int k = 0; k < n; k++)
            ck_assert_msg(ids[k] == g.prompt_ids[k], "%s: id %d is %d, transformers %d", g.name, k, ids[k], g.prompt_ids[k]);
        free(ids);
        free_golden_case(&g);
    }
    free_model(&m);
}
END_TEST

// One prompt of the golden set through one export; prints the figures, returns them.
static GoldenResult run_case(const char *model_path, DType want, const char *tag, int i, GoldenCase *g) {
    need(model_path);
    Model m;
    load_model(&m, model_path);
    ck_assert_int_eq(m.config.wdtype, want);
    read_golden_case(g, GOLDEN_DIR, names[i]);
    GoldenResult r = golden_run(&m, g);
    printf("golden %s %-12s max|dlogit| last %.3e top20 %.3e  top1 %d/%d  continuation %d/%d\n", tag, g->name,
           r.max_last, r.max_topk, r.top1_agree, g->n_prompt, r.gen_agree, g->n_gen);
    fflush(stdout);
    free_model(&m);
    return r;
}

// Loop tests: _i is the prompt's index in tests/golden/smollm2/index.txt.
START_TEST(test_f32_matches_transformers) {
    GoldenCase g;
    GoldenResult r = run_case(F32_MODEL, DTYPE_F32, "f32", _i, &g);
    ck_assert_msg(r.max_last <= F32_MAX_DLOGIT, "%s: last-position max|dlogit| %.3e > %.0e", g.name, r.max_last, F32_MAX_DLOGIT);
    ck_assert_msg(r.max_topk <= F32_MAX_DLOGIT, "%s: top-20 max|dlogit| %.3e > %.0e", g.name, r.max_topk, F32_MAX_DLOGIT);
    ck_assert_msg(r.gen_agree == g.n_gen, "%s: continuation differs at token %d (transformers' margin there %.3f)",
                  g.name, r.first_diff, r.first_diff >= 0 ? g.gen_margin[r.first_diff] : 0.0);
    free_golden_case(&g);
}
END_TEST

START_TEST(test_f16_close_to_transformers) {
    GoldenCase g;
    GoldenResult r = run_case(DEFAULT_MODEL, DTYPE_F16, "f16", _i, &g);
    ck_assert_msg(r.max_last <= F16_MAX_DLOGIT, "%s: f16 last-position max|dlogit| %.3e > %g", g.name, r.max_last, F16_MAX_DLOGIT);
    ck_assert_msg(r.max_topk <= F16_MAX_DLOGIT, "%s: f16 top-20 max|dlogit| %.3e > %g", g.name, r.max_topk, F16_MAX_DLOGIT);
    // The continuation may only leave the golden one where transformers' own top-2 were
    // within twice the bound (a near tie that f16 rounding can legitimately flip).
    if (r.first_diff >= 0)
        ck_assert_msg(g.gen_margin[r.first_diff] <= 2 * F16_MAX_DLOGIT,
                      "%s: f16 continuation differs at token %d where transformers' top-1 led by %.3f",
                      g.name, r.first_diff, g.gen_margin[r.first_diff]);
    free_golden_case(&g);
}
END_TEST

static Suite *golden_suite(void) {
    n_cases = golden_index(GOLDEN_DIR, &names);
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 300);   // per prompt; sanitizer builds run the 135M model several times slower
    tcase_add_test(tc, test_golden_files);
    tcase_add_test(tc, test_prompt_ids);
    tcase_add_loop_test(tc, test_f32_matches_transformers, 0, n_cases);
    tcase_add_loop_test(tc, test_f16_close_to_transformers, 0, n_cases);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(golden_suite)
