// test_modelbin.c: the model.bin format (model/modelbin.c): config validation naming the
// bad field, the tensor layout, `export --random`, and the loader's answer to damaged files
// (run through build/run: exit code 1 and one line naming the problem).
#include "testutil.h"
#include "../model/modelbin.h"
#include "../tokenizer/tokenizer.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static Config good_config(void) {
    Config c = {0};
    c.dim = 64; c.hidden_dim = 128; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 16;
    c.vocab_size = 300; c.max_seq_len = 512; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_classifier = 1; c.wdtype = DTYPE_F16;
    return c;
}

// config_check must reject c and name `field` in its message.
static void expect_bad(Config c, const char *field) {
    const char *e = config_check(&c);
    ck_assert_msg(e != NULL, "config with bad %s accepted", field);
    ck_assert_msg(strstr(e, field) != NULL, "message '%s' does not name %s", e, field);
}

START_TEST(test_config_check) {
    Config c = good_config();
    ck_assert_ptr_null(config_check(&c));
    c = good_config(); c.dim = 0; expect_bad(c, "dim");
    c = good_config(); c.n_layers = -3; expect_bad(c, "n_layers");
    c = good_config(); c.hidden_dim = -1; expect_bad(c, "hidden_dim");
    c = good_config(); c.vocab_size = 0x7fffffff; expect_bad(c, "vocab_size");
    c = good_config(); c.max_seq_len = 0; expect_bad(c, "max_seq_len");
    c = good_config(); c.n_kv_heads = 3; expect_bad(c, "n_kv_heads");
    c = good_config(); c.head_dim = 15; c.n_heads = 4; c.dim = 60; expect_bad(c, "head_dim");
    c = good_config(); c.head_dim = 32; expect_bad(c, "head_dim");          // 4 * 32 != 64
    c = good_config(); c.norm_eps = 0; expect_bad(c, "norm_eps");
    c = good_config(); c.rope_theta = -1; expect_bad(c, "rope_theta");
    c = good_config(); c.rope_scaling = 7; expect_bad(c, "rope_scaling");
    c = good_config(); c.rope_scaling = ROPE_SCALING_LLAMA3; expect_bad(c, "rope_factor");
    c = good_config(); c.rope_scaling = ROPE_SCALING_LLAMA3; c.rope_factor = 8; c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4; c.rope_orig_ctx = 0; expect_bad(c, "rope_orig_ctx");
    c.rope_orig_ctx = 8192; ck_assert_ptr_null(config_check(&c));
    c = good_config(); c.wdtype = (DType)5; expect_bad(c, "wdtype");
    c = good_config(); c.tied_classifier = 2; expect_bad(c, "tied_classifier");
    // q8_0 blocks of 32 run along each matrix's input (dim; hidden_dim for w_down).
    c = good_config(); c.wdtype = DTYPE_Q8_0; ck_assert_ptr_null(config_check(&c));
    c.hidden_dim = 100; expect_bad(c, "multiples of 32");
    c = good_config(); c.wdtype = DTYPE_Q8_0; c.dim = 48; c.head_dim = 12; expect_bad(c, "q8_0");
    c.wdtype = DTYPE_F16; ck_assert_ptr_null(config_check(&c));                 // fine element-wise
    // Large but valid: the Llama-3-8B shape, whose sizes only fit in 64 bits.
    c = good_config(); c.dim = 4096; c.n_heads = 32; c.n_kv_heads = 8; c.head_dim = 128; c.hidden_dim = 14336;
    c.n_layers = 32; c.vocab_size = 128256; c.max_seq_len = 131072;
    ck_assert_ptr_null(config_check(&c));
}
END_TEST

START_TEST(test_layout) {
    Config c = good_config();
    for (int tied = 0; tied <= 1; tied++)
        for (int dt = 0; dt <= 3; dt++) {
            c.tied_classifier = tied;
            c.wdtype = (DType)dt;
            WeightLayout L;
            build_weight_layout(&L, &c);
            // Bytes of a row of 64 and of 128 inputs: q8_0 has 34-byte blocks of 32 (fp16 scale + 32 int8).
            uint64_t r64 = dt == DTYPE_Q8_0 ? 2 * 34 : 64 * (uint64_t)dtype_size((DType)dt);
            uint64_t r128 = dt == DTYPE_Q8_0 ? 4 * 34 : 128 * (uint64_t)dtype_size((DType)dt), prev_end = 0;
            // Walk the tensors in file order: each 64-aligned, after the previous one, no overlap.
            uint64_t off[1 + 9 * 2 + 2], size[1 + 9 * 2 + 2];
            int n = 0;
            off[n] = L.token_embedding; size[n++] = 300 * r64;
            for (int l = 0; l < 2; l++) {
                const LayerOffsets *o = &L.layers[l];
                uint64_t lo[9] = {o->attn_norm, o->wq, o->wk, o->wv, o->wo, o->ffn_norm, o->w_gate, o->w_down, o->w_up};
                uint64_t ls[9] = {64 * 4, 64 * r64, 32 * r64, 32 * r64, 64 * r64, 64 * 4, 128 * r64, 64 * r128, 128 * r64};
                for (int k = 0; k < 9; k++) { off[n] = lo[k]; size[n++] = ls[k]; }
            }
            off[n] = L.final_norm; size[n++] = 64 * 4;
            if (!tied) { off[n] = L.classifier; size[n++] = 300 * r64; }
            else ck_assert_uint_eq(L.classifier, L.token_embedding);
            for (int i = 0; i < n; i++) {
                ck_assert_uint_eq(off[i] % MODELBIN_TENSOR_ALIGN, 0);
                ck_assert_uint_ge(off[i], prev_end);
                ck_assert_uint_lt(off[i] - prev_end, MODELBIN_TENSOR_ALIGN);   // no gaps beyond padding
                prev_end = off[i] + size[i];
            }
            ck_assert_uint_ge(L.total, prev_end);
            ck_assert_uint_lt(L.total - prev_end, MODELBIN_TENSOR_ALIGN);
            free_weight_layout(&L);
        }
}
END_TEST

START_TEST(test_header_roundtrip) {
    Config c = good_config(), d;
    c.rope_scaling = ROPE_SCALING_LLAMA3; c.rope_factor = 8; c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4; c.rope_orig_ctx = 8192; c.tied_classifier = 0; c.wdtype = DTYPE_BF16;
    ModelHeader h;
    header_from_config(&h, &c);
    ck_assert_uint_eq(h.magic, MODELBIN_MAGIC);
    ck_assert_uint_eq(h.version, MODELBIN_VERSION);
    config_from_header(&d, &h);
    ck_assert_mem_eq(&c, &d, sizeof c);
    for (size_t i = 0; i < sizeof h.reserved; i++) ck_assert_int_eq(h.reserved[i], 0);
}
END_TEST

// ---- files made by export --random -------------------------------------------------

static const char *tiny_path(const char *name, const char *extra) {
    static char path[4][512];
    static int k;
    char *p = path[k++ % 4], cmd[1400], *err;
    snprintf(p, 512, "%s/%s", test_tmpdir(), name);
    snprintf(cmd, sizeof cmd, "%s --random tiny --tokenizer %s %s %s", export_bin(), DEFAULT_GGUF, p, extra);
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_msg(rc == 0, "export --random tiny failed (%d): %s", rc, err);
    free(err);
    return p;
}

START_TEST(test_random_tiny) {
    ck_assert_msg(file_exists(DEFAULT_GGUF), "%s missing: run `make model` first", DEFAULT_GGUF);
    const char *a = tiny_path("tiny-a.bin", "--dtype bf16 --seed 7");
    const char *b = tiny_path("tiny-b.bin", "--dtype bf16 --seed 7");
    const char *c2 = tiny_path("tiny-c.bin", "--dtype bf16 --seed 8");
    size_t na, nb, nc;
    uint8_t *fa = (uint8_t *)read_file(a, &na), *fb = (uint8_t *)read_file(b, &nb), *fc = (uint8_t *)read_file(c2, &nc);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(memcmp(fa, fb, na) == 0, "same seed, different files");
    ck_assert_uint_eq(na, nc);
    ModelHeader h;
    memcpy(&h, fa, sizeof h);
    ck_assert_ptr_null(header_check(&h, na));
    ck_assert_msg(memcmp(fa + h.wt_offset, fc + h.wt_offset, na - h.wt_offset) != 0, "seed has no effect");
    Config c;
    config_from_header(&c, &h);
    ck_assert_int_eq(c.n_layers, 2);
    ck_assert_int_eq(c.dim, 64);
    ck_assert_int_eq(c.vocab_size, 49152);      // the tokenizer's vocab
    ck_assert_int_eq(c.wdtype, DTYPE_BF16);
    ck_assert_int_eq(c.tied_classifier, 0);
    WeightLayout L;
    build_weight_layout(&L, &c);
    ck_assert_uint_eq(h.wt_size, L.total);
    ck_assert_uint_eq(h.file_size, h.wt_offset + L.total);
    // Norms are 1; matrices have std ~ 1/sqrt(fan_in) (0.125 for dim 64) and mean ~ 0.
    float norm[64];
    memcpy(norm, fa + h.wt_offset + L.layers[1].ffn_norm, sizeof norm);
    for (int i = 0; i < 64; i++) ck_assert_float_eq(norm[i], 1.0f);
    const uint16_t *wq = (const uint16_t *)(fa + h.wt_offset + L.layers[0].wq);
    double s = 0, s2 = 0;
    for (int i = 0; i < 64 * 64; i++) { double v = bf16_to_fp32(wq[i]); s += v; s2 += v * v; }
    double mean = s / 4096, sd = sqrt(s2 / 4096 - mean * mean);
    ck_assert_msg(fabs(mean) < 0.01 && sd > 0.11 && sd < 0.14, "wq mean %g std %g", mean, sd);
    Tokenizer t;
    tokenizer_from_blob(&t, fa + h.tok_offset, h.tok_size);
    ck_assert_int_eq(t.vocab_size, 49152);
    ck_assert_int_eq(t.chat, CHAT_CHATML);
    free_tokenizer(&t);
    free_weight_layout(&L);
    free(fa); free(fb); free(fc);
}
END_TEST

START_TEST(test_random_tokenizer_sources) {
    // The tokenizer can come from a model.bin; llama3-8b refuses a tokenizer of another size.
    const char *a = tiny_path("tiny-src.bin", "--dtype bf16");
    char out[512], cmd[1400], *err;
    snprintf(out, sizeof out, "%s/tiny-from-bin.bin", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s --random tiny --tokenizer %s %s --dtype bf16", export_bin(), a, out);
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 0);
    free(err);
    size_t na, nb;
    char *fa = read_file(a, &na), *fb = read_file(out, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(memcmp(fa, fb, na) == 0, "tokenizer from model.bin gave a different file");
    free(fa); free(fb);
    snprintf(cmd, sizeof cmd, "%s --random llama3-8b --tokenizer %s %s/never.bin", export_bin(), DEFAULT_GGUF, test_tmpdir());
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "128256"), "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s --random tiny --tokenizer %s x.bin --seed abc", export_bin(), DEFAULT_GGUF);
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "--seed"), "%s", err);
    free(err);
}
END_TEST

// ---- damaged files through the loader (build/run) ----------------------------------

static void expect_load_failure(const char *path, const char *want) {
    char cmd[1200], *err;
    snprintf(cmd, sizeof cmd, "%s %s -n 1 -i hi", run_bin(), path);
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_msg(rc == 1, "run exit code %d (want 1) for '%s': %s", rc, want, err);
    ck_assert_msg(strstr(err, want) != NULL, "expected '%s' in: %s", want, err);
    ck_assert_msg(strncmp(err, "error: ", 7) == 0 && strchr(err, '\n') == err + strlen(err) - 1,
                  "not one error line: %s", err);
    free(err);
}

// Write a copy of the good file with the header changed by `edit` (or cut to `keep` bytes).
static const char *damaged(const uint8_t *good, size_t n, const char *name, void (*edit)(ModelHeader *), size_t keep) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    uint8_t *copy = xmalloc(n);
    memcpy(copy, good, n);
    if (edit) {
        ModelHeader h;
        memcpy(&h, copy, sizeof h);
        edit(&h);
        memcpy(copy, &h, sizeof h);
    }
    write_bytes(path, copy, keep ? keep : n);
    free(copy);
    return path;
}

static void e_magic(ModelHeader *h) { h->magic = 0x464c457f; }
static void e_version(ModelHeader *h) { h->version = MODELBIN_VERSION + 1; }
static void e_dim0(ModelHeader *h) { h->dim = 0; }
static void e_layers_neg(ModelHeader *h) { h->n_layers = -3; }
static void e_vocab_huge(ModelHeader *h) { h->vocab_size = 0x7fffffff; }
static void e_heads_overflow(ModelHeader *h) { h->n_heads = 1 << 30; h->head_dim = 4; }
static void e_hidden_inconsistent(ModelHeader *h) { h->hidden_dim *= 2; }
static void e_layers_inconsistent(ModelHeader *h) { h->n_layers += 1; }
static void e_hidden_not_blocks(ModelHeader *h) { h->hidden_dim = 112; }   // 3.5 blocks of 32
static void e_wdtype_unknown(ModelHeader *h) { h->wdtype = 4; }

START_TEST(test_loader_rejects_damaged_files) {
    const char *good = tiny_path("tiny-good.bin", "--dtype bf16");
    char cmd[1200], *err;
    snprintf(cmd, sizeof cmd, "%s %s -n 1 -i hi", run_bin(), good);
    ck_assert_msg(run_capture(cmd, NULL, &err) == 0, "the undamaged file fails to run: %s", err);
    free(err);
    size_t n;
    uint8_t *g = (uint8_t *)read_file(good, &n);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/does-not-exist.bin", test_tmpdir());
    expect_load_failure(missing, "does-not-exist.bin");
    expect_load_failure(damaged(g, n, "magic.bin", e_magic, 0), "magic");
    expect_load_failure(damaged(g, n, "version.bin", e_version, 0), "version");
    expect_load_failure(damaged(g, n, "truncated.bin", NULL, n / 2), "truncated");
    expect_load_failure(damaged(g, n, "tiny-header.bin", NULL, 100), "tiny-header.bin");
    expect_load_failure(damaged(g, n, "dim0.bin", e_dim0, 0), "dim");
    expect_load_failure(damaged(g, n, "layers.bin", e_layers_neg, 0), "n_layers");
    expect_load_failure(damaged(g, n, "vocab.bin", e_vocab_huge, 0), "vocab_size");
    expect_load_failure(damaged(g, n, "overflow.bin", e_heads_overflow, 0), "n_heads");
    expect_load_failure(damaged(g, n, "hidden.bin", e_hidden_inconsistent, 0), "weights");
    expect_load_failure(damaged(g, n, "layers2.bin", e_layers_inconsistent, 0), "weights");
    expect_load_failure(damaged(g, n, "wdtype.bin", e_wdtype_unknown, 0), "wdtype is 4");
    free(g);
}
END_TEST

START_TEST(test_q8_0_file) {
    // A q8_0 export runs; its weights are 34-byte blocks along each row (the same seed's f32
    // export, quantized, is within half a step of them); a q8_0 header whose matrices would not
    // hold whole blocks is refused with one line.
    const char *q = tiny_path("tiny-q8.bin", "--dtype q8_0 --seed 3"), *f = tiny_path("tiny-q8-f32.bin", "--dtype f32 --seed 3");
    char cmd[1200], *err;
    snprintf(cmd, sizeof cmd, "%s %s -n 4 -i hi -t 0", run_bin(), q);
    ck_assert_msg(run_capture(cmd, NULL, &err) == 0, "the q8_0 file fails to run: %s", err);
    free(err);
    size_t nq, nf;
    uint8_t *gq = (uint8_t *)read_file(q, &nq), *gf = (uint8_t *)read_file(f, &nf);
    ModelHeader hq, hf;
    memcpy(&hq, gq, sizeof hq);
    memcpy(&hf, gf, sizeof hf);
    ck_assert_int_eq(hq.wdtype, DTYPE_Q8_0);
    Config cq, cf;
    config_from_header(&cq, &hq);
    config_from_header(&cf, &hf);
    WeightLayout Lq, Lf;
    build_weight_layout(&Lq, &cq);
    build_weight_layout(&Lf, &cf);
    // w_down [64][128]: 4 blocks per row.
    const uint8_t *bq = gq + hq.wt_offset + Lq.layers[1].w_down;
    const float *wf = (const float *)(gf + hf.wt_offset + Lf.layers[1].w_down);
    for (int blk = 0; blk < 64 * 4; blk++) {
        uint16_t dh;
        memcpy(&dh, bq + 34 * blk, 2);
        float d = fp16_to_fp32(dh);
        ck_assert(d > 0);
        for (int j = 0; j < 32; j++) {
            float got = d * (float)(int8_t)bq[34 * blk + 2 + j], want = wf[32 * blk + j];
            ck_assert_msg(fabsf(got - want) <= 0.5f * d * (1 + 1e-6f), "w_down block %d [%d]: %g vs f32 %g", blk, j, got, want);
        }
    }
    float norm[64];   // norms stay f32
    memcpy(norm, gq + hq.wt_offset + Lq.layers[0].attn_norm, sizeof norm);
    for (int i = 0; i < 64; i++) ck_assert_float_eq(norm[i], 1.0f);
    expect_load_failure(damaged(gq, nq, "q8-hidden.bin", e_hidden_not_blocks, 0), "multiples of 32");
    free_weight_layout(&Lq);
    free_weight_layout(&Lf);
    free(gq); free(gf);
}
END_TEST

static Suite *modelbin_suite(void) {
    Suite *s = suite_create("modelbin");
    TCase *tc = tcase_create("modelbin");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_config_check);
    tcase_add_test(tc, test_layout);
    tcase_add_test(tc, test_header_roundtrip);
    tcase_add_test(tc, test_random_tiny);
    tcase_add_test(tc, test_random_tokenizer_sources);
    tcase_add_test(tc, test_loader_rejects_damaged_files);
    tcase_add_test(tc, test_q8_0_file);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(modelbin_suite)
