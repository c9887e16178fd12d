// test_golden.c: the golden model test. The C runner against Hugging Face
// transformers loading the same GGUF in fp32 (tests/golden/smollm2/, made by
// tests/reference/make_golden.py; format and figures in tests/golden/README.md).
//
// The runner always keeps K/V in its fp16 cache (the baseline), and on SmolLM2 that rounding
// is not small: in transformers itself it moves the logits by 1.1e-2..3.8e-2. Worse, it is
// chaotic: K elements sitting near an fp16 rounding boundary round one way or the other on
// last-bit fp32 differences, and SmolLM2's large K channels turn one such flip into ~1e-2 of
// logit. So two references: transformers with K/V rounded to fp16 where the runner rounds them
// ("fp16kv", which the runner matches to ~1e-3 over the first positions), and plain fp32.
//
//   f32 export: at position 0 (a token attending only to itself: the cache rounding is V's
//     alone, and deterministic) max |dlogit| <= 5e-3 over the top-20, against both
//     references; at every prompt position and over the full last-position logits, within
//     F32_MAX_DLOGIT of fp16kv and of fp32; greedy continuation token-identical to both.
//   f16 export: figures printed; within F16_MAX_DLOGIT of fp16kv; continuation may differ
//     only at a near tie.
#include "testutil.h"
#include "golden.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_DIR "tests/golden/smollm2"
#define F32_MODEL  "models/smollm2-135m-instruct-f32.bin"
#define POS0_MAX_DLOGIT 5e-3   // the target bound, where the fp16 cache cannot blur it

// Elsewhere: the fp16 cache alone moves transformers' own logits by up to 3.8e-2 on these
// prompts (make_golden.py prints it per prompt), and the runner lands within ~4e-2 of either
// reference (tests/golden/README.md). 0.1 is ~2.5x that and still fails on any modelling error
// (a wrong RoPE order, norm or dequantization moves logits by whole units).
#define F32_MAX_DLOGIT 0.1

// f16 weights round every matrix element to 11 significant bits; in transformers that (with
// the fp16 cache) moves the logits by up to 3.0e-2 (make_golden.py --measure-f16), the runner's
// f16 export lands within 4.0e-2. 0.25 is ~6x that: loose enough for any correct f16 path, tight enough that a wrong conversion (bf16 read
// as f16, a swapped row, a missed tensor), which moves logits by units, fails.
#define F16_MAX_DLOGIT 0.25

static char **names;
static int n_cases;

static void need(const char *path) {
    ck_assert_msg(file_exists(path), "%s missing: run `make test` (it builds it)", path);
}

START_TEST(test_golden_files) {
    // The golden set: >= 3 prompts, a ChatML one among them, each
    // with top-20 at every position, full last logits and a continuation.
    ck_assert_int_ge(n_cases, 3);
    int chatml = 0;
    for (int i = 0; i < n_cases; i++) {
        GoldenCase g;
        read_golden_case(&g, GOLDEN_DIR, names[i], NULL);
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
        read_golden_case(&g, GOLDEN_DIR, names[i], NULL);
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

static void print_result(const char *tag, const char *ref, const GoldenCase *g, GoldenResult r) {
    char last[32] = "n/a";
    if (r.max_last >= 0) snprintf(last, sizeof last, "%.2e", r.max_last);
    printf("golden %s %-11s vs %-6s max|dlogit| pos0 %.2e top20 %.2e last %-8s top1 %d/%d  continuation %d/%d\n", tag,
           g->name, ref, r.max_pos0, r.max_topk, last, r.top1_agree, g->n_prompt, r.gen_agree, g->n_gen);
    fflush(stdout);
}

// The continuation may leave the golden one only where transformers' own top-2 were within
// `tie` (a near tie that a legitimate rounding difference can flip).
static void assert_continuation(const GoldenCase *g, GoldenResult r, double tie, const char *what) {
    if (r.first_diff < 0) return;
    ck_assert_msg(g->gen_margin[r.first_diff] <= tie, "%s %s: continuation differs at token %d where transformers' top-1 led by %.3f",
                  what, g->name, r.first_diff, g->gen_margin[r.first_diff]);
}

// One prompt of the golden set (loop tests: _i indexes tests/golden/smollm2/index.txt) through
// one export; both references are read, the model runs once.
static void run_case(const char *model_path, DType want, int i, GoldenCase *ref, GoldenCase *ref32,
                     GoldenResult *r, GoldenResult *r32) {
    need(model_path);
    Model m;
    load_model(&m, model_path);
    ck_assert_int_eq(m.config.wdtype, want);
    read_golden_case(ref, GOLDEN_DIR, names[i], NULL);
    read_golden_case(ref32, GOLDEN_DIR, names[i], "fp32");
    GoldenRun run;
    golden_generate(&m, ref->prompt_ids, ref->n_prompt, ref->n_gen > ref32->n_gen ? ref->n_gen : ref32->n_gen, &run);
    *r = golden_compare(ref, &run);
    *r32 = golden_compare(ref32, &run);
    const char *tag = want == DTYPE_F32 ? "f32" : "f16";
    print_result(tag, "fp16kv", ref, *r);
    print_result(tag, "fp32", ref32, *r32);
    free_golden_run(&run);
    free_model(&m);
}

START_TEST(test_f32_matches_transformers) {
    GoldenCase g, g32;
    GoldenResult r, r32;
    run_case(F32_MODEL, DTYPE_F32, _i, &g, &g32, &r, &r32);
    ck_assert_msg(r.max_pos0 <= POS0_MAX_DLOGIT, "%s: position 0 max|dlogit| vs fp16kv %.3e > %.0e", g.name, r.max_pos0, POS0_MAX_DLOGIT);
    ck_assert_msg(r32.max_pos0 <= POS0_MAX_DLOGIT, "%s: position 0 max|dlogit| vs fp32 %.3e > %.0e", g.name, r32.max_pos0, POS0_MAX_DLOGIT);
    ck_assert_msg(r.max_last <= F32_MAX_DLOGIT, "%s: last-position max|dlogit| %.3e > %g", g.name, r.max_last, F32_MAX_DLOGIT);
    ck_assert_msg(r.max_topk <= F32_MAX_DLOGIT, "%s: top-20 max|dlogit| vs fp16kv %.3e > %g", g.name, r.max_topk, F32_MAX_DLOGIT);
    ck_assert_msg(r32.max_topk <= F32_MAX_DLOGIT, "%s: top-20 max|dlogit| vs fp32 %.3e > %g", g.name, r32.max_topk, F32_MAX_DLOGIT);
    ck_assert_msg(r.gen_agree == g.n_gen, "%s: continuation differs from fp16kv at token %d (transformers' margin there %.3f)",
                  g.name, r.first_diff, r.first_diff >= 0 ? g.gen_margin[r.first_diff] : 0.0);
    ck_assert_msg(r32.gen_agree == g32.n_gen, "%s: continuation differs from fp32 at token %d (transformers' margin there %.3f)",
                  g.name, r32.first_diff, r32.first_diff >= 0 ? g32.gen_margin[r32.first_diff] : 0.0);
    free_golden_case(&g);
    free_golden_case(&g32);
}
END_TEST

START_TEST(test_f16_close_to_transformers) {
    GoldenCase g, g32;
    GoldenResult r, r32;
    run_case(DEFAULT_MODEL, DTYPE_F16, _i, &g, &g32, &r, &r32);
    ck_assert_msg(r.max_last <= F16_MAX_DLOGIT, "%s: f16 last-position max|dlogit| %.3e > %g", g.name, r.max_last, F16_MAX_DLOGIT);
    ck_assert_msg(r.max_topk <= F16_MAX_DLOGIT, "%s: f16 top-20 max|dlogit| %.3e > %g", g.name, r.max_topk, F16_MAX_DLOGIT);
    assert_continuation(&g, r, 2 * F16_MAX_DLOGIT, "f16");
    free_golden_case(&g);
    free_golden_case(&g32);
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
