// test_llama3_hf.c: the Hugging Face export path proven on a Llama-3-shaped model.
// tests/reference/make_llama3_tiny.py writes a random-weight LlamaForCausalLM checkpoint
// (GQA 4/2 heads, rope theta 500000, Llama-3.1 rope scaling, untied lm_head, two
// safetensors shards with F16/BF16/F32 tensors, the real Llama-3 tokenizer) in plain Python;
// `make` exports it to models/llama3-tiny-f32.bin. transformers' logits for it are committed in
// tests/golden/llama3_tiny/. One test covers the safetensors reader, the tokenizer.json loader,
// the rotate_half -> interleaved un-permutation of GQA Q/K rows and the rope scaling together:
// the reference script checks that getting either of the last two wrong moves the logits by > 18.
#include "testutil.h"
#include "golden.h"
#include "../kernels/kernels.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_DIR "tests/golden/llama3_tiny"
#define L3_MODEL   "models/llama3-tiny-f32.bin"
#define MAX_DLOGIT 5e-3   // the f32 golden bound (tests/golden/README.md)
#define FP32_REF_MAX_DLOGIT 0.1

static Model model;
static char **names;
static int n_cases;

static void setup(void) {
    ck_assert_msg(file_exists(L3_MODEL), "%s missing: run `make test` (it builds it)", L3_MODEL);
    load_model(&model, L3_MODEL);
}
static void teardown(void) { free_model(&model); }

START_TEST(test_config_exported) {
    // config.json of make_llama3_tiny.py, as export read it
    const Config *c = &model.config;
    ck_assert_int_eq(c->dim, 64);
    ck_assert_int_eq(c->hidden_dim, 128);
    ck_assert_int_eq(c->n_layers, 2);
    ck_assert_int_eq(c->n_heads, 4);
    ck_assert_int_eq(c->n_kv_heads, 2);
    ck_assert_int_eq(c->head_dim, 16);
    ck_assert_int_eq(c->vocab_size, 128256);
    ck_assert_int_eq(c->tied_classifier, 0);
    ck_assert_int_eq(c->wdtype, DTYPE_F32);
    ck_assert(c->rope_theta == 500000.0f);
    ck_assert_int_eq(c->rope_scaling, ROPE_SCALING_LLAMA3);
    ck_assert(c->rope_factor == 8.0f && c->rope_low_freq_factor == 1.0f && c->rope_high_freq_factor == 4.0f);
    ck_assert_int_eq(c->rope_orig_ctx, 64);
    ck_assert(fabsf(c->norm_eps - 1e-5f) < 1e-12f);
    // the Llama-3 tokenizer came along from tokenizer.json
    ck_assert_int_eq(model.tokenizer.vocab_size, 128256);
    ck_assert_int_eq(model.tokenizer.bos_id, 128000);
    ck_assert_int_eq(model.tokenizer.pretok, PRETOK_LLAMA3);
    ck_assert_int_eq(model.tokenizer.chat, CHAT_LLAMA3);
}
END_TEST

START_TEST(test_rope_inv_freq) {
    // kernels' rope_freqs for this config against transformers' LlamaRotaryEmbedding.inv_freq
    char *text = read_file(GOLDEN_DIR "/inv_freq.txt", NULL), *p = text;
    while (*p == '#') p = strchr(p, '\n') + 1;
    int n = 0, used = 0;
    ck_assert_int_eq(sscanf(p, "inv_freq %d%n", &n, &used), 1);
    p += used;
    ck_assert_int_eq(n, model.config.head_dim / 2);
    float *got = xmalloc((size_t)n * sizeof(float));
    rope_freqs(got, &model.config);
    int scaled = 0, smooth = 0;
    for (int i = 0; i < n; i++) {
        float want = strtof(p, &p);
        ck_assert_msg(fabsf(got[i] - want) <= 1e-6f * want, "inv_freq[%d] %.9e, transformers %.9e", i, got[i], want);
        float plain = powf(model.config.rope_theta, -2.0f * i / model.config.head_dim);
        scaled += fabsf(want - plain / 8) <= 1e-6f * want;           // low band: divided by factor
        smooth += want < plain * 0.999f && want > plain / 8 * 1.001f;  // medium band: interpolated
    }
    ck_assert_msg(scaled > 0 && smooth > 0, "the golden config does not exercise every scaling band");
    free(got);
    free(text);
}
END_TEST

START_TEST(test_prompt_ids) {
    // the C Llama-3 tokenizer (from tokenizer.json, via model.bin) gives transformers' ids;
    // the prompts hold <|begin_of_text|> and the chat headers, so specials are parsed
    GoldenCase g;
    read_golden_case(&g, GOLDEN_DIR, names[_i], NULL);
    int *ids;
    int n = tokenizer_encode(&model.tokenizer, g.prompt, g.prompt_len, 1, &ids);
    ck_assert_msg(n == g.n_prompt, "%s: %d ids, transformers %d", g.name, n, g.n_prompt);
    for (int k = 0; k < n; k++)
        ck_assert_msg(ids[k] == g.prompt_ids[k], "%s: id %d is %d, transformers %d", g.name, k, ids[k], g.prompt_ids[k]);
    free(ids);
    free_golden_case(&g);
}
END_TEST

START_TEST(test_matches_transformers) {
    // Main reference: transformers with K/V rounded to fp16 where the runner's cache rounds
    // them (tests/golden/README.md). Also the plain fp32 run, within the bound the fp16 cache
    // alone needs (2.7e-2 measured on these prompts; 0.1 as in test_golden.c).
    GoldenCase g, g32;
    read_golden_case(&g, GOLDEN_DIR, names[_i], NULL);
    read_golden_case(&g32, GOLDEN_DIR, names[_i], "fp32");
    GoldenRun run;
    golden_generate(&model, g.prompt_ids, g.n_prompt, g.n_gen > g32.n_gen ? g.n_gen : g32.n_gen, &run);
    GoldenResult r = golden_compare(&g, &run), r32 = golden_compare(&g32, &run);
    free_golden_run(&run);
    printf("llama3-tiny f32 %-6s vs fp16kv max|dlogit| last %.3e top20 %.3e  top1 %d/%d  continuation %d/%d (positions to %d)\n",
           g.name, r.max_last, r.max_topk, r.top1_agree, g.n_prompt, r.gen_agree, g.n_gen, g.n_prompt + g.n_gen - 1);
    printf("llama3-tiny f32 %-6s vs fp32   max|dlogit| top20 %.3e  top1 %d/%d  continuation %d/%d\n",
           g.name, r32.max_topk, r32.top1_agree, g.n_prompt, r32.gen_agree, g32.n_gen);
    fflush(stdout);
    ck_assert_msg(r.max_last <= MAX_DLOGIT, "%s: last-position max|dlogit| %.3e > %.0e", g.name, r.max_last, MAX_DLOGIT);
    ck_assert_msg(r.max_topk <= MAX_DLOGIT, "%s: top-20 max|dlogit| %.3e > %.0e", g.name, r.max_topk, MAX_DLOGIT);
    ck_assert_msg(r.gen_agree == g.n_gen, "%s: continuation differs at token %d (transformers' margin there %.4f)",
                  g.name, r.first_diff, r.first_diff >= 0 ? g.gen_margin[r.first_diff] : 0.0);
    ck_assert_msg(r32.max_topk <= FP32_REF_MAX_DLOGIT, "%s: vs plain fp32, top-20 max|dlogit| %.3e > %g", g.name,
                  r32.max_topk, FP32_REF_MAX_DLOGIT);
    ck_assert_msg(r32.first_diff < 0 || g32.gen_margin[r32.first_diff] <= 2 * FP32_REF_MAX_DLOGIT,
                  "%s: continuation leaves the plain fp32 one at token %d where transformers' top-1 led by %.4f",
                  g.name, r32.first_diff, r32.first_diff >= 0 ? g32.gen_margin[r32.first_diff] : 0.0);
    free_golden_case(&g);
    free_golden_case(&g32);
}
END_TEST

static Suite *llama3_hf_suite(void) {
    n_cases = golden_index(GOLDEN_DIR, &names);
    Suite *s = suite_create("llama3_hf");
    TCase *tc = tcase_create("llama3_hf");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_config_exported);
    tcase_add_test(tc, test_rope_inv_freq);
    tcase_add_loop_test(tc, test_prompt_ids, 0, n_cases);
    tcase_add_loop_test(tc, test_matches_transformers, 0, n_cases);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(llama3_hf_suite)
