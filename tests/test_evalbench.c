// test_evalbench.c: the evaluation benchmarks' pieces that need no model run
// (docs/DESIGN.md §5): the passkey prompt puts the key where asked, GSM8K final numbers are read
// correctly from hand-made answers, the real GSM8K file loads, kvcache_copy (the
// benchmarks' snapshot/restore) gives byte-identical caches that stay identical, and batched
// greedy decoding (bench_greedy_step) gives exactly the tokens of one sequence at a time.
#include "testutil.h"
#include "../bench/benchrun.h"
#include "../bench/evaltext.h"
#include "../quant/kvcache.h"
#include "../model/model.h"
#include "../util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- passkey ----------------------------------------------------------------------------

// The bytes of ids[0..n) (raw token bytes), xmalloc'd.
static char *detok(const Tokenizer *t, const int *ids, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += (size_t)t->token_len[ids[i]];
    char *s = xmalloc(len), *o = s;
    for (int i = 0; i < n; i++) { memcpy(o, t->token[ids[i]], (size_t)t->token_len[ids[i]]); o += t->token_len[ids[i]]; }
    *o = 0;
    return s;
}

START_TEST(test_passkey_depths) {
    ck_assert_msg(file_exists(DEFAULT_MODEL), "%s missing: run make model", DEFAULT_MODEL);
    Model m;
    load_model(&m, DEFAULT_MODEL);
    const Tokenizer *t = &m.tokenizer;
    size_t len;
    char *text = read_file(DATA_DIR "/tinyshakespeare.txt", &len);
    int *hay, n_hay = tokenizer_encode(t, text, 12000, 0, &hay);
    free(text);
    const double depths[] = {0.0, 0.25, 0.5, 0.9, 1.0};
    for (int d = 0; d < 5; d++) {
        PasskeyPrompt p;
        build_passkey_prompt(&p, t, hay, n_hay, 48213, depths[d], 1000);
        ck_assert_int_le(p.n, 1000);
        ck_assert_int_gt(p.n, 900);                        // the haystack filled the room
        char *needle = detok(t, p.ids + p.needle_at, p.needle_len);
        ck_assert_str_eq(needle, "The pass key is 48213. Remember it. 48213 is the pass key.\n");
        free(needle);
        // the needle starts a line, at the requested fraction of the text between intro and question
        int *intro_end = p.ids + p.needle_at - 1;
        ck_assert(t->token[*intro_end][t->token_len[*intro_end] - 1] == '\n');
        char *all = detok(t, p.ids, p.n);
        const char *q = strstr(all, "\n\nWhat is the pass key? The pass key is");
        ck_assert(q && q[strlen("\n\nWhat is the pass key? The pass key is")] == 0);   // ends with the question
        const char *body = strstr(all, "at the end.\n\n") + strlen("at the end.\n\n"), *nd = strstr(all, "The pass key is 48213");
        double frac = (double)(nd - body) / (double)(q - body - (ptrdiff_t)strlen("The pass key is 48213. Remember it. 48213 is the pass key.\n"));
        ck_assert_msg(fabs(frac - depths[d]) < 0.05, "depth %.2f: needle at %.3f", depths[d], frac);
        ck_assert_int_eq((int)(strstr(all, "48213") - all) == (int)(nd - all) + 16, 1);
        free(all);
        char *key = detok(t, p.key_ids, p.n_key);
        ck_assert_str_eq(key, " 48213");
        ck_assert_str_eq(p.key_text, "48213");
        free(key);
        free_passkey_prompt(&p);
    }
    free(hay);
    free_model(&m);
}
END_TEST

// ---- GSM8K ------------------------------------------------------------------------------

START_TEST(test_gsm8k_numbers) {
    char out[32];
    ck_assert(gsm8k_final_number("She makes 9 * 2 = $18 every day.\n#### 18", out, sizeof out));
    ck_assert_str_eq(out, "18");
    ck_assert(gsm8k_final_number("total 3 + 4 = 7\n#### 1,234\n", out, sizeof out));
    ck_assert_str_eq(out, "1234");                          // after ####, commas dropped
    ck_assert(gsm8k_final_number(" So she makes 9 * 2 = $18.00 a day.", out, sizeof out));
    ck_assert_str_eq(out, "18");                            // no ####: the last number, trailing zeros dropped
    ck_assert(gsm8k_final_number("It fell by 3.50 to -12 degrees", out, sizeof out));
    ck_assert_str_eq(out, "-12");
    ck_assert(gsm8k_final_number("costs 3.50.", out, sizeof out));
    ck_assert_str_eq(out, "3.5");
    ck_assert(gsm8k_final_number("from 5 to x2", out, sizeof out));
    ck_assert_str_eq(out, "5");                             // "x2" is a name, not a number
    ck_assert(!gsm8k_final_number("no numbers here. ####", out, sizeof out));
    char *s = gsm8k_strip_calc("16 - 3 - 4 = <<16-3-4=9>>9 duck eggs, <<9*2=18>>18 $");
    ck_assert_str_eq(s, "16 - 3 - 4 = 9 duck eggs, 18 $");
    free(s);
    ck_assert(gsm8k_done("He has 5.\n\n") && gsm8k_done("5 apples Question:") && !gsm8k_done("5 apples\nSo"));
}
END_TEST

START_TEST(test_gsm8k_file) {
    int n;
    GsmProblem *ps = load_gsm8k(DATA_DIR "/gsm8k_test.jsonl", &n);
    ck_assert_int_eq(n, 1319);
    ck_assert_str_eq(ps[0].number, "18");
    for (int i = 0; i < n; i++) {
        ck_assert(!strstr(ps[i].answer, "<<"));
        ck_assert(ps[i].number[0]);
    }
    char *shots = gsm8k_shots(ps + n - 4, 4), *q = gsm8k_prompt(&ps[0]);
    ck_assert(strncmp(shots, "Question: ", 10) == 0 && strstr(shots, "\n#### ") && strstr(shots + strlen(shots) - 2, "\n\n"));
    ck_assert(strncmp(q, "Question: Janet", 15) == 0 && !strcmp(q + strlen(q) - 8, "\nAnswer:"));
    free(shots); free(q);
    free_gsm8k(ps, n);
}
END_TEST

// ---- kvcache_copy -----------------------------------------------------------------------

static void append_random(KVCache *c, int n_layers, int width, int n, unsigned *seed) {
    float k[width], v[width];
    for (int i = 0; i < n; i++)
        for (int l = 0; l < n_layers; l++) {
            for (int j = 0; j < width; j++) {
                k[j] = (float)rand_r(seed) / RAND_MAX * 4 - 2;
                v[j] = (float)rand_r(seed) / RAND_MAX * 4 - 2;
            }
            kvcache_append(c, l, k, v);
        }
}

START_TEST(test_kvcache_copy) {
    // kivi (per-channel keys, R = G = 8), pertoken (R = 0), a residual window, and fp16
    const int L = 2, H = 2, D = 16;
    struct { int kb, vb, group, residual, axis; } cases[] = {
        {4, 2, 8, 8, KEY_AXIS_CHANNEL}, {2, 4, -1, 0, KEY_AXIS_TOKEN}, {8, 4, 8, 4, KEY_AXIS_TOKEN}, {16, 16, -1, 0, KEY_AXIS_TOKEN}};
    for (int ci = 0; ci < 4; ci++) {
        KVSpec s;
        build_kvspec_uniform(&s, L, H, D, cases[ci].kb, cases[ci].vb);
        s.group = cases[ci].group; s.residual = cases[ci].residual; s.key_axis = cases[ci].axis;
        KVCache *a = build_kvcache(&s, 64), *b = build_kvcache(&s, 64), *snap = build_kvcache(&s, 64);
        unsigned seed = 7u + (unsigned)ci, seed2;
        append_random(a, L, H * D, 13, &seed);              // mid-block, mid-window
        kvcache_copy(snap, a);
        ck_assert(kvcache_equal(snap, a));
        seed2 = seed;
        append_random(a, L, H * D, 20, &seed);              // crosses block and window boundaries
        ck_assert(!kvcache_equal(snap, a));
        kvcache_copy(b, snap);                              // restore, then the same continuation
        append_random(b, L, H * D, 20, &seed2);
        ck_assert_msg(kvcache_equal(a, b), "case %d: restored cache diverged", ci);
        float x[D], y[D];                                   // and attention reads the same values
        kvcache_read(a, 1, 1, 0, 30, x);
        kvcache_read(b, 1, 1, 0, 30, y);
        ck_assert(memcmp(x, y, sizeof x) == 0);
        free_kvcache(a); free_kvcache(b); free_kvcache(snap);
        free_kvspec(&s);
    }
}
END_TEST

// ---- batched greedy ----------------------------------------------------------------------

static int stop_at_100_bytes(const char *out) { return strlen(out) >= 100; }

// Three prompts of different lengths decoded together must give, sequence by sequence, the
// text, token count and final cache of bench_greedy run alone. The sequences stop at
// different steps (the stop function, a nearly full cache, --max-new), and there are two
// slots for three sequences, so the third starts in the slot of the first to stop, as in
// bench/gsm8k.c. For fp16, pertoken k4v2 and KIVI k4v2 (per-channel keys; groups shrunk to
// fit tiny's head_dim of 16, so blocks are quantized during the decode).
START_TEST(test_greedy_rows) {
    ck_assert_msg(file_exists(TINY_MODEL), "%s missing: run `make test` (it builds it)", TINY_MODEL);
    Model m;
    load_model(&m, TINY_MODEL);
    const Config *c = &m.config;
    enum { N = 3, CAP = 200, MAX_NEW = 14, OUT = 512 };
    const char *prompts[N] = {
        "The quick brown fox jumps over the lazy dog, and then it runs far away into the deep green forest.",
        "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and "
        "arrows of outrageous fortune, or to take arms against a sea of troubles.",
        "Once upon a time there was a little cat who liked to sleep in the sun all day long and dream of fish, "
        "of birds, of mice and of the wide blue sea beyond the hills; and every evening it came home."};
    const char *kvs[] = {"fp16", "k4v2", "k4v2"}, *presets[] = {"pertoken", "pertoken", "kivi"};
    RunState s;
    build_runstate(&s, c, BENCH_BATCH, CAP);
    int *ids[N], n_ids[N];
    for (int i = 0; i < N; i++) n_ids[i] = tokenizer_encode(&m.tokenizer, prompts[i], strlen(prompts[i]), 0, &ids[i]);
    ck_assert(n_ids[0] < n_ids[1] && n_ids[1] < n_ids[2]);
    float *last = xmalloc((size_t)N * c->vocab_size * sizeof(float));
    for (int ci = 0; ci < 3; ci++) {
        KVSpec spec;
        if (strcmp(presets[ci], "kivi")) bench_spec(&spec, c, kvs[ci], presets[ci]);
        else {                          // the kivi preset's groups of 32 do not fit head_dim 16
            bench_spec(&spec, c, kvs[ci], "pertoken");
            spec.group = 8; spec.residual = 8; spec.key_axis = KEY_AXIS_CHANNEL;
            kvspec_validate(&spec, "test kivi");
        }
        KVCache *ref[N], *bat[N];
        char ref_out[N][OUT], bat_buf[N][OUT], *bat_out[N];
        int ref_n[N], bat_n[N];
        int64_t pos[N];
        for (int i = 0; i < N; i++) {
            int cap = i == 1 ? n_ids[i] + 7 : CAP;            // sequence 1 fills its cache
            ref[i] = build_kvcache(&spec, cap);
            bat[i] = build_kvcache(&spec, cap);
            float *lg = last + (size_t)i * c->vocab_size;
            bench_prefill(&m, &s, ref[i], ids[i], n_ids[i], 0, lg);
            ref_n[i] = bench_greedy(&m, &s, ref[i], lg, n_ids[i], MAX_NEW, stop_at_100_bytes, ref_out[i], OUT);
            bench_prefill(&m, &s, bat[i], ids[i], n_ids[i], 0, lg);
            pos[i] = n_ids[i];
            bat_out[i] = bat_buf[i];
        }
        GreedySeq slot[2];                                  // sequence 2 waits for a free slot
        int in_slot[2] = {-1, -1}, next = 0;
        memset(slot, 0, sizeof slot);
        for (;;) {
            int running = 0;
            for (int j = 0; j < 2; j++) {
                if (in_slot[j] >= 0 && !slot[j].live) { bat_n[in_slot[j]] = slot[j].n; in_slot[j] = -1; }
                if (in_slot[j] < 0 && next < N) {
                    bench_greedy_start(&slot[j], &m, bat[next], last + (size_t)next * c->vocab_size, pos[next], MAX_NEW,
                                       stop_at_100_bytes, bat_out[next], OUT);
                    in_slot[j] = next++;
                }
                running += in_slot[j] >= 0;
            }
            if (!running) break;
            bench_greedy_step(&m, &s, slot, 2);
        }
        for (int i = 0; i < N; i++) {
            ck_assert_msg(bat_n[i] == ref_n[i], "%s %s seq %d: %d tokens batched, %d alone", presets[ci], kvs[ci], i,
                          bat_n[i], ref_n[i]);
            ck_assert_str_eq(bat_out[i], ref_out[i]);
            ck_assert_msg(kvcache_equal(bat[i], ref[i]), "%s %s seq %d: caches differ", presets[ci], kvs[ci], i);
        }
        ck_assert_int_eq(ref_n[1], 8);                      // stopped by its full cache
        ck_assert(ref_n[0] != ref_n[2] || ref_n[0] != ref_n[1]);
        for (int i = 0; i < N; i++) { free_kvcache(ref[i]); free_kvcache(bat[i]); }
        free_kvspec(&spec);
    }
    for (int i = 0; i < N; i++) free(ids[i]);
    free(last);
    free_runstate(&s);
    free_model(&m);
}
END_TEST

static Suite *evalbench_suite(void) {
    Suite *s = suite_create("evalbench");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_passkey_depths);
    tcase_add_test(tc, test_gsm8k_numbers);
    tcase_add_test(tc, test_gsm8k_file);
    tcase_add_test(tc, test_kvcache_copy);
    tcase_add_test(tc, test_greedy_rows);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(evalbench_suite)
