// test_safetensors.c: the safetensors reader and the Hugging Face folder -> model.bin
// conversion on small checkpoints this test writes itself: sharded (index.json) and single
// file, F32/F16/BF16 tensors, the rotate_half -> interleaved Q/K row permutation, Llama-3.1
// rope scaling from config.json, and malformed inputs.
#include "testutil.h"
#include "../export/safetensors.h"
#include "../model/modelbin.h"
#include "../tokenizer/tokenizer.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { DIM = 64, HID = 128, NL = 2, NH = 4, NKV = 2, HD = 16, NVOCAB = 261 };

typedef struct {
    char name[64];
    const char *dtype;      // "F32", "F16", "BF16" (or a bad one)
    uint64_t rows, cols;    // rows == 0: a vector [cols]
    float *val;             // [rows or 1][cols], the values the file holds (already rounded to dtype)
} Tensor;

static uint64_t rng = 42;
static float rnd_float(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 33) % 20001) / 10000.0f - 1.0f;
}

static uint64_t numel(const Tensor *t) { return (t->rows ? t->rows : 1) * t->cols; }
static int esize(const char *dt) { return strcmp(dt, "F32") == 0 ? 4 : 2; }

static void fill(Tensor *t, const char *name, const char *dtype, uint64_t rows, uint64_t cols) {
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->rows = rows;
    t->cols = cols;
    t->val = xmalloc(numel(t) * sizeof(float));
    for (uint64_t i = 0; i < numel(t); i++) {
        float f = rnd_float();
        if (!strcmp(dtype, "F16")) f = fp16_to_fp32(fp32_to_fp16(f));
        if (!strcmp(dtype, "BF16")) f = bf16_to_fp32(fp32_to_bf16(f));
        t->val[i] = f;
    }
}

// Write a .safetensors file holding tensors t[0..n). header_override replaces the JSON.
static void write_st(const char *path, Tensor *t, int n, const char *header_override, uint64_t len_override) {
    size_t cap = 65536, hl = 0;
    char *h = xmalloc(cap);
    uint64_t off = 0;
    hl += (size_t)snprintf(h + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        uint64_t nb = numel(&t[i]) * (uint64_t)esize(t[i].dtype);
        if (t[i].rows)
            hl += (size_t)snprintf(h + hl, cap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu,%llu],\"data_offsets\":[%llu,%llu]}",
                                   t[i].name, t[i].dtype, (unsigned long long)t[i].rows, (unsigned long long)t[i].cols,
                                   (unsigned long long)off, (unsigned long long)(off + nb));
        else
            hl += (size_t)snprintf(h + hl, cap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}",
                                   t[i].name, t[i].dtype, (unsigned long long)t[i].cols, (unsigned long long)off,
                                   (unsigned long long)(off + nb));
        off += nb;
    }
    hl += (size_t)snprintf(h + hl, cap - hl, "}");
    if (header_override) hl = (size_t)snprintf(h, cap, "%s", header_override);
    while (hl % 8) h[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    uint64_t len = len_override ? len_override : hl;
    for (int i = 0; i < 8; i++) fputc((int)(len >> (8 * i)) & 0xff, f);
    fwrite(h, 1, hl, f);
    for (int i = 0; i < n; i++)
        for (uint64_t e = 0; e < numel(&t[i]); e++) {
            uint16_t v16 = !strcmp(t[i].dtype, "F16") ? fp32_to_fp16(t[i].val[e]) : fp32_to_bf16(t[i].val[e]);
            if (!strcmp(t[i].dtype, "F32")) fwrite(&t[i].val[e], 4, 1, f);
            else fwrite(&v16, 2, 1, f);
        }
    fclose(f);
    free(h);
}

// GPT-2's byte -> unicode map, as a JSON-escaped string.
static void byte_token_json(int byte, char *out) {
    int printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255);
    int cp = byte, k = 0;
    if (!printable) {
        for (int b = 0; b < byte; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) k++;
        cp = 256 + k;
    }
    if (cp == '"' || cp == '\\') sprintf(out, "\\%c", cp);
    else if (cp < 128) sprintf(out, "%c", cp);
    else sprintf(out, "\\u%04x", cp);
}

static void write_tokenizer_json(const char *path) {
    FILE *f = fopen(path, "w");
    fputs("{\"version\":\"1.0\",\"normalizer\":null,\"added_tokens\":[", f);
    const char *added[4] = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    for (int i = 0; i < 4; i++)
        fprintf(f, "%s{\"id\":%d,\"content\":\"%s\",\"special\":true}", i ? "," : "", 257 + i, added[i]);
    fputs("],\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},", f);
    fputs("\"model\":{\"type\":\"BPE\",\"dropout\":null,\"vocab\":{", f);
    char tok[16];
    for (int i = 0; i < 256; i++) { byte_token_json(i, tok); fprintf(f, "%s\"%s\":%d", i ? "," : "", tok, i); }
    fputs(",\"he\":256},\"merges\":[\"h e\"]}}", f);
    fclose(f);
}

typedef struct {
    int tied, sharded;
    const char *rope_type;        // NULL: no rope_scaling
    const char *bad_dtype;        // dtype of blk 0 q_proj
    const char *omit;             // tensor left out
    int v5;                       // transformers 5.x config: "rope_parameters" holding rope_theta
} HFOpts;

static const char *tmpdir_named(const char *name) {
    static char p[8][256];
    static int k;
    char *s = p[k++ % 8];
    snprintf(s, 256, "%s/%s", test_tmpdir(), name);
    mkdir(s, 0755);
    return s;
}

// Writes the folder; returns the tensors (model.bin order: embed, per layer 9, norm, head).
static int make_hf(const char *dir, HFOpts o, Tensor *t) {
    int n = 0;
    const char *dts[3] = {"F32", "F16", "BF16"};
    fill(&t[n++], "model.embed_tokens.weight", "BF16", NVOCAB, DIM);
    const struct { const char *name; uint64_t rows, cols; } layer[9] = {
        {"input_layernorm", 0, DIM}, {"self_attn.q_proj", NH * HD, DIM}, {"self_attn.k_proj", NKV * HD, DIM},
        {"self_attn.v_proj", NKV * HD, DIM}, {"self_attn.o_proj", DIM, NH * HD}, {"post_attention_layernorm", 0, DIM},
        {"mlp.gate_proj", HID, DIM}, {"mlp.down_proj", DIM, HID}, {"mlp.up_proj", HID, DIM}};
    for (int l = 0; l < NL; l++)
        for (int k = 0; k < 9; k++) {
            char name[64];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, layer[k].name);
            fill(&t[n], name, dts[(l * 9 + k) % 3], layer[k].rows, layer[k].cols);
            if (o.bad_dtype && l == 0 && k == 1) t[n].dtype = o.bad_dtype;
            n++;
        }
    fill(&t[n++], "model.norm.weight", "F32", 0, DIM);
    if (!o.tied) fill(&t[n++], "lm_head.weight", "F16", NVOCAB, DIM);

    char path[512], rope[256] = "null";
    if (o.rope_type)
        snprintf(rope, sizeof rope, "{\"rope_type\":\"%s\",\"factor\":8.0,\"low_freq_factor\":1.0,"
                 "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}", o.rope_type);
    if (o.v5)
        snprintf(rope, sizeof rope, "{\"rope_type\":\"%s\",\"rope_theta\":500000.0,\"factor\":8.0,\"low_freq_factor\":1.0,"
                 "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}", o.rope_type);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":%d,"
            "\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,\"num_key_value_heads\":%d,"
            "\"vocab_size\":%d,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-05,%s\"%s\":%s,"
            "\"tie_word_embeddings\":%s,\"torch_dtype\":\"bfloat16\"}",
            DIM, HID, NL, NH, NKV, NVOCAB, o.v5 ? "" : "\"rope_theta\":500000.0,",
            o.v5 ? "rope_parameters" : "rope_scaling", rope, o.tied ? "true" : "false");
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_tokenizer_json(path);

    // Keep the omitted tensor out of the files (and the index).
    Tensor keep[32];
    int nk = 0;
    for (int i = 0; i < n; i++)
        if (!o.omit || strcmp(o.omit, t[i].name)) keep[nk++] = t[i];
    if (!o.sharded) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        write_st(path, keep, nk, NULL, 0);
        return n;
    }
    int half = nk / 2;       // shard 1 gets the first half, shard 2 the rest
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    write_st(path, keep, half, NULL, 0);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    write_st(path, keep + half, nk - half, NULL, 0);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    f = fopen(path, "w");
    fputs("{\"metadata\":{\"total_size\":0},\"weight_map\":{", f);
    for (int i = 0; i < nk; i++)
        fprintf(f, "%s\"%s\":\"model-0000%d-of-00002.safetensors\"", i ? "," : "", keep[i].name, i < half ? 1 : 2);
    fputs("}}", f);
    fclose(f);
    return n;
}

static void free_tensors(Tensor *t, int n) {
    for (int i = 0; i < n; i++) free(t[i].val);
}

static void check_export(HFOpts o, const char *dirname) {
    Tensor t[32];
    const char *dir = tmpdir_named(dirname);
    int n = make_hf(dir, o, t);
    char out[512], cmd[1200];
    snprintf(out, sizeof out, "%s.bin", dir);
    snprintf(cmd, sizeof cmd, "%s %s %s --dtype f32", export_bin(), dir, out);
    ModelHeader h;
    Config c;
    uint8_t *bin = export_and_read(cmd, out, &h, &c);
    ck_assert_int_eq(c.dim, DIM);
    ck_assert_int_eq(c.n_kv_heads, NKV);
    ck_assert_int_eq(c.vocab_size, NVOCAB);
    ck_assert_float_eq(c.rope_theta, 500000.0f);
    ck_assert_int_eq(c.tied_classifier, o.tied);
    ck_assert_int_eq(c.rope_scaling, o.rope_type ? ROPE_SCALING_LLAMA3 : ROPE_SCALING_NONE);
    if (o.rope_type) {
        ck_assert_float_eq(c.rope_factor, 8.0f);
        ck_assert_float_eq(c.rope_low_freq_factor, 1.0f);
        ck_assert_float_eq(c.rope_high_freq_factor, 4.0f);
        ck_assert_int_eq(c.rope_orig_ctx, 64);
    }
    Tokenizer tok;
    tokenizer_from_blob(&tok, bin + h.tok_offset, h.tok_size);
    ck_assert_int_eq(tok.vocab_size, NVOCAB);
    ck_assert_int_eq(tok.chat, CHAT_LLAMA3);
    free_tokenizer(&tok);

    WeightLayout L;
    build_weight_layout(&L, &c);
    for (int i = 0; i < n; i++) {
        uint64_t off;
        int is_qk = strstr(t[i].name, "q_proj") || strstr(t[i].name, "k_proj");
        if (i == 0) off = L.token_embedding;
        else if (!strcmp(t[i].name, "model.norm.weight")) off = L.final_norm;
        else if (!strcmp(t[i].name, "lm_head.weight")) off = L.classifier;
        else {
            int l = (i - 1) / 9, k = (i - 1) % 9;
            const LayerOffsets *lo = &L.layers[l];
            const uint64_t offs[9] = {lo->attn_norm, lo->wq, lo->wk, lo->wv, lo->wo, lo->ffn_norm, lo->w_gate, lo->w_down, lo->w_up};
            off = offs[k];
        }
        const float *p = (const float *)(bin + h.wt_offset + off);
        for (uint64_t r = 0; r < (t[i].rows ? t[i].rows : 1); r++) {
            // Our row r = head * HD + 2j + c comes from HF row head * HD + c * HD/2 + j.
            uint64_t src = r;
            if (is_qk) src = r / HD * HD + (r % HD % 2) * (HD / 2) + (r % HD) / 2;
            for (uint64_t e = 0; e < t[i].cols; e++)
                ck_assert_msg(p[r * t[i].cols + e] == t[i].val[src * t[i].cols + e], "%s row %llu col %llu",
                              t[i].name, (unsigned long long)r, (unsigned long long)e);
        }
    }
    free_weight_layout(&L);
    free(bin);
    free_tensors(t, n);
}

START_TEST(test_sharded_untied_llama3) { check_export((HFOpts){.sharded = 1, .rope_type = "llama3"}, "hf-sharded"); }
END_TEST
START_TEST(test_single_tied) { check_export((HFOpts){.tied = 1}, "hf-single"); }
END_TEST
START_TEST(test_transformers5_config) {
    check_export((HFOpts){.tied = 1, .rope_type = "llama3", .v5 = 1}, "hf-v5");
}
END_TEST

START_TEST(test_reader_direct) {
    Tensor t[2];
    fill(&t[0], "a", "BF16", 3, 5);
    fill(&t[1], "b", "F16", 0, 7);
    char path[512];
    snprintf(path, sizeof path, "%s/direct.safetensors", test_tmpdir());
    write_st(path, t, 2, NULL, 0);
    SafeTensors s;
    memset(&s, 0, sizeof s);
    st_open_file(&s, path);
    ck_assert_int_eq(s.n_tensors, 2);
    const STTensor *a = st_find(&s, "a"), *b = st_find(&s, "b");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(st_find(&s, "__metadata__"));
    ck_assert_int_eq(a->dtype, ST_BF16);
    ck_assert_int_eq(a->n_dims, 2);
    ck_assert_uint_eq(a->shape[0], 3);
    ck_assert_int_eq(b->n_dims, 1);
    float row[7];
    st_rows(a, 2, 1, 5, row);
    for (int e = 0; e < 5; e++) ck_assert_float_eq(row[e], t[0].val[10 + e]);
    st_rows(b, 0, 1, 7, row);
    for (int e = 0; e < 7; e++) ck_assert_float_eq(row[e], t[1].val[e]);
    st_close(&s);
    free_tensors(t, 2);
}
END_TEST

static void expect_fail_dir(const char *dir, const char *want) {
    char cmd[1200], *err;
    snprintf(cmd, sizeof cmd, "%s %s %s.bin", export_bin(), dir, dir);
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_msg(rc == 1, "exit code %d, expected 1 (%s): %s", rc, want, err);
    ck_assert_msg(strstr(err, want) != NULL, "expected '%s' in: %s", want, err);
    ck_assert_msg(strncmp(err, "error: ", 7) == 0 && strchr(err, '\n') == err + strlen(err) - 1,
                  "not one error line: %s", err);
    free(err);
}

// Replace the folder's model.safetensors with a broken one.
static void break_single_file(const char *dir, const char *header, uint64_t len) {
    Tensor t[1];
    fill(&t[0], "x", "F32", 2, 2);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_st(path, t, 1, header, len);
    free_tensors(t, 1);
}

START_TEST(test_bad_header_length) {
    Tensor t[32];
    const char *dir = tmpdir_named("hf-badlen");
    free_tensors(t, make_hf(dir, (HFOpts){.tied = 1}, t));
    break_single_file(dir, NULL, 1ull << 40);
    expect_fail_dir(dir, "bad header length");
}
END_TEST

START_TEST(test_malformed_json) {
    Tensor t[32];
    const char *dir = tmpdir_named("hf-badjson");
    free_tensors(t, make_hf(dir, (HFOpts){.tied = 1}, t));
    break_single_file(dir, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]", 0);
    expect_fail_dir(dir, "malformed JSON header");
}
END_TEST

START_TEST(test_unsupported_dtype) {
    Tensor t[32];
    const char *dir = tmpdir_named("hf-i64");
    free_tensors(t, make_hf(dir, (HFOpts){.sharded = 1, .bad_dtype = "I32"}, t));
    expect_fail_dir(dir, "model.layers.0.self_attn.q_proj.weight has unsupported dtype I32");
}
END_TEST

START_TEST(test_missing_tensor) {
    Tensor t[32];
    const char *dir = tmpdir_named("hf-missing");
    free_tensors(t, make_hf(dir, (HFOpts){.tied = 1, .omit = "model.layers.1.mlp.up_proj.weight"}, t));
    expect_fail_dir(dir, "missing tensor model.layers.1.mlp.up_proj.weight");
}
END_TEST

START_TEST(test_rope_scaling_rejected) {
    Tensor t[32];
    const char *dir = tmpdir_named("hf-yarn");
    free_tensors(t, make_hf(dir, (HFOpts){.tied = 1, .rope_type = "yarn"}, t));
    expect_fail_dir(dir, "rope_scaling type \"yarn\" is not supported");
}
END_TEST

static Suite *safetensors_suite(void) {
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_reader_direct);
    tcase_add_test(tc, test_sharded_untied_llama3);
    tcase_add_test(tc, test_single_tied);
    tcase_add_test(tc, test_transformers5_config);
    tcase_add_test(tc, test_bad_header_length);
    tcase_add_test(tc, test_malformed_json);
    tcase_add_test(tc, test_unsupported_dtype);
    tcase_add_test(tc, test_missing_tensor);
    tcase_add_test(tc, test_rope_scaling_rejected);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(safetensors_suite)
