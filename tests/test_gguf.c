// test_gguf.c: the GGUF reader and the GGUF -> model.bin conversion, on small files this
// test writes itself: every metadata type, every supported tensor type checked against a
// direct per-element formula, and malformed files (run through export).
#include "testutil.h"
#include "gguf_builder.h"
#include "../export/gguf.h"
#include "../model/modelbin.h"
#include "../tokenizer/tokenizer.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x1234567;
static uint32_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rnd_float(void) { return (float)(rnd() % 20001) / 10000.0f - 1.0f; }   // [-1, 1]

// ---- reference dequantization: one element at a time, straight from the block layout ----

static float ref_value(int type, const uint8_t *data, uint64_t i) {
    uint64_t blk = i / 32, j = i % 32;
    const uint8_t *b;
    uint16_t h;
    switch (type) {
    case GGML_F32: { float f; memcpy(&f, data + 4 * i, 4); return f; }
    case GGML_F16: memcpy(&h, data + 2 * i, 2); return fp16_to_fp32(h);
    case GGML_BF16: memcpy(&h, data + 2 * i, 2); return bf16_to_fp32(h);
    case GGML_Q8_0:                     // {fp16 d; int8 q[32]}: x = d * q
        b = data + blk * 34; memcpy(&h, b, 2);
        return fp16_to_fp32(h) * (float)(int8_t)b[2 + j];
    case GGML_Q4_0: {                   // {fp16 d; u8 qs[16]}: element j < 16 low nibble of qs[j], else high of qs[j-16]
        b = data + blk * 18; memcpy(&h, b, 2);
        int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        return fp16_to_fp32(h) * (float)(q - 8);
    }
    case GGML_Q4_1: {                   // {fp16 d; fp16 m; u8 qs[16]}: x = d * q + m
        b = data + blk * 20; memcpy(&h, b, 2);
        uint16_t hm; memcpy(&hm, b + 2, 2);
        int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
        return fp16_to_fp32(h) * (float)q + fp16_to_fp32(hm);
    }
    }
    return 0;
}

static size_t type_bytes(int type, uint64_t n) {
    switch (type) {
    case GGML_F32: return n * 4;
    case GGML_F16: case GGML_BF16: return n * 2;
    case GGML_Q8_0: return n / 32 * 34;
    case GGML_Q4_0: return n / 32 * 18;
    case GGML_Q4_1: return n / 32 * 20;
    }
    return 0;
}

// Random tensor data of a type; block scales are set to finite fp16 values.
static uint8_t *random_data(int type, uint64_t n) {
    size_t nb = type_bytes(type, n);
    uint8_t *p = xmalloc(nb);
    for (size_t i = 0; i < nb; i++) p[i] = (uint8_t)rnd();
    uint16_t h;
    for (uint64_t i = 0; i < n; i++) {
        if (type == GGML_F32) { float f = rnd_float(); memcpy(p + 4 * i, &f, 4); }
        if (type == GGML_F16) { h = fp32_to_fp16(rnd_float()); memcpy(p + 2 * i, &h, 2); }
        if (type == GGML_BF16) { h = fp32_to_bf16(rnd_float()); memcpy(p + 2 * i, &h, 2); }
    }
    int bb = type == GGML_Q8_0 ? 34 : type == GGML_Q4_0 ? 18 : type == GGML_Q4_1 ? 20 : 0;
    for (uint64_t k = 0; bb && k < n / 32; k++) {
        h = fp32_to_fp16(0.01f + 0.02f * (rnd_float() + 1));
        memcpy(p + k * (uint64_t)bb, &h, 2);
        if (type == GGML_Q4_1) { h = fp32_to_fp16(-0.1f * (rnd_float() + 1)); memcpy(p + k * (uint64_t)bb + 2, &h, 2); }
    }
    return p;
}

START_TEST(test_block_formats) {
    const int types[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_1};
    for (int t = 0; t < 6; t++) {
        uint64_t n = 32 * 5;
        uint8_t *d = random_data(types[t], n);
        float out[32 * 5];
        ggml_dequantize(types[t], d, out, n);
        for (uint64_t i = 0; i < n; i++)
            ck_assert_msg(out[i] == ref_value(types[t], d, i), "%s element %llu: %g vs %g",
                          ggml_type_name(types[t]), (unsigned long long)i, out[i], ref_value(types[t], d, i));
        free(d);
    }
    // One hand-made Q4_1 block: d = 0.5, m = -1, nibbles 0..15 in the low halves, 15..0 high.
    uint8_t blk[20];
    uint16_t h = fp32_to_fp16(0.5f), hm = fp32_to_fp16(-1.0f);
    memcpy(blk, &h, 2); memcpy(blk + 2, &hm, 2);
    for (int j = 0; j < 16; j++) blk[4 + j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    ggml_dequantize(GGML_Q4_1, blk, y, 32);
    ck_assert_float_eq(y[0], -1.0f);
    ck_assert_float_eq(y[15], 6.5f);
    ck_assert_float_eq(y[16], 6.5f);
    ck_assert_float_eq(y[31], -1.0f);
    ck_assert_str_eq(ggml_type_name(14), "Q6_K");
    ck_assert_int_eq(ggml_block_info(14, NULL, NULL), 0);
}
END_TEST

START_TEST(test_metadata_types) {
    Buf b = {0};
    gb_header(&b, 2, 15);
    const uint32_t scalar_types[] = {GGUF_UINT8, GGUF_INT8, GGUF_UINT16, GGUF_INT16, GGUF_UINT32, GGUF_INT32,
                                     GGUF_UINT64, GGUF_INT64};
    const int64_t scalar_vals[] = {200, -100, 60000, -30000, 4000000000LL, -2000000000LL, 1LL << 40, -(1LL << 40)};
    const int sizes[] = {1, 1, 2, 2, 4, 4, 8, 8};
    char key[32];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "k.%s", gguf_type_name((int)scalar_types[i]));
        b_str(&b, key); b_u32(&b, scalar_types[i]); b_uint(&b, (uint64_t)scalar_vals[i], sizes[i]);
    }
    kv_f32(&b, "k.float32", 1.5f);
    b_str(&b, "k.float64"); b_u32(&b, GGUF_FLOAT64);
    union { double d; uint64_t u; } f64 = {2.25}; b_u64(&b, f64.u);
    b_str(&b, "k.bool"); b_u32(&b, GGUF_BOOL); b_uint(&b, 1, 1);
    kv_str(&b, "k.string", "h\xc3\xa9llo");
    // [[1, 2, 3], [4]] as arrays of uint16 inside an array.
    b_str(&b, "k.nested"); b_u32(&b, GGUF_ARRAY); b_u32(&b, GGUF_ARRAY); b_u64(&b, 2);
    b_u32(&b, GGUF_UINT16); b_u64(&b, 3); b_uint(&b, 1, 2); b_uint(&b, 2, 2); b_uint(&b, 3, 2);
    b_u32(&b, GGUF_UINT16); b_u64(&b, 1); b_uint(&b, 4, 2);
    char *strs[] = {"a", "", "\xe2\x82\xac"};
    kv_str_array(&b, "k.strings", strs, 3);
    kv_u32(&b, "general.alignment", 64);
    float tdata[16];
    for (int i = 0; i < 16; i++) tdata[i] = (float)i * 0.25f;
    uint16_t udata[32];
    for (int i = 0; i < 32; i++) udata[i] = fp32_to_fp16((float)-i);
    GBTensor t[2] = {{"t", 2, {8, 2, 1, 1}, GGML_F32, (uint8_t *)tdata, sizeof tdata, 0},
                     {"u", 1, {32, 1, 1, 1}, GGML_F16, (uint8_t *)udata, sizeof udata, 0}};
    gb_layout(t, 2, 64);
    ck_assert_uint_eq(t[1].offset, 64);
    gb_finish(&b, t, 2, 64);
    char path[256];
    snprintf(path, sizeof path, "%s/meta.gguf", test_tmpdir());
    write_bytes(path, b.p, b.n);

    GGUFFile g;
    gguf_open(&g, path);
    ck_assert_uint_eq(g.n_kv, 15);
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "k.%s", gguf_type_name((int)scalar_types[i]));
        const GGUFValue *v = gguf_get(&g, key);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(v->type, (int)scalar_types[i]);
        ck_assert_int_eq(v->i, scalar_vals[i]);
        ck_assert_int_eq(gguf_get_int(&g, key), scalar_vals[i]);
    }
    ck_assert_double_eq(gguf_get_float(&g, "k.float32"), 1.5);
    ck_assert_double_eq(gguf_get_float(&g, "k.float64"), 2.25);
    ck_assert_int_eq(gguf_get(&g, "k.bool")->i, 1);
    ck_assert_str_eq(gguf_get_str(&g, "k.string"), "h\xc3\xa9llo");
    const GGUFValue *n = gguf_get(&g, "k.nested");
    ck_assert_int_eq(n->elem_type, GGUF_ARRAY);
    ck_assert_uint_eq(n->n, 2);
    ck_assert_uint_eq(n->arr[0].n, 3);
    ck_assert_int_eq(n->arr[0].elem_type, GGUF_UINT16);
    ck_assert_int_eq(n->arr[0].arr[2].i, 3);
    ck_assert_uint_eq(n->arr[1].n, 1);
    ck_assert_int_eq(n->arr[1].arr[0].i, 4);
    char **sv;
    ck_assert_uint_eq(gguf_get_str_array(&g, "k.strings", &sv), 3);
    ck_assert_str_eq(sv[1], "");
    ck_assert_str_eq(sv[2], "\xe2\x82\xac");
    free(sv);
    ck_assert_ptr_null(gguf_get(&g, "k.absent"));
    ck_assert_uint_eq(g.alignment, 64);
    ck_assert_uint_eq(g.data_offset % 64, 0);
    const GGUFTensor *tt = gguf_need_tensor(&g, "t"), *tu = gguf_need_tensor(&g, "u");
    ck_assert_uint_eq(tt->n_elements, 16);
    ck_assert_uint_eq(tt->ne[1], 2);
    float rows[32];
    gguf_tensor_rows(tt, 1, 1, rows);                   // second row of [2][8]
    for (int i = 0; i < 8; i++) ck_assert_float_eq(rows[i], tdata[8 + i]);
    gguf_tensor_rows(tu, 0, 1, rows);
    for (int i = 0; i < 32; i++) ck_assert_float_eq(rows[i], (float)-i);
    gguf_close(&g);
    free(b.p);
}
END_TEST

// ---- a whole tiny Llama GGUF ---------------------------------------------------------

enum { DIM = 64, HID = 128, NL = 2, NH = 4, NKV = 2, HD = 16, NVOCAB = 259 };

typedef struct {
    const char *omit;       // leave this tensor out
    const char *retype;     // give this tensor type Q6_K
    const char *far;        // point this tensor's offset past the end of the file
    const char *pre;        // tokenizer.ggml.pre
    int untied;
    int truncate_at;        // cut the file to this many bytes
    int nul_in_token;       // token 256 "he" becomes "h\0" (a NUL byte inside a string)
} Opts;

// GPT-2's byte -> unicode map (printable bytes stand for themselves, the rest move to 256+).
static void byte_token(int byte, char *out) {
    int cp = byte, k = 0;
    if (!((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255))) {
        for (int b = 0; b < byte; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) k++;
        cp = 256 + k;
    }
    if (cp < 128) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 63)); out[2] = 0; }
}

typedef struct { char name[64]; int type; uint64_t rows, cols; } TSpec;

// The tensor list in model.bin order (with the ggml type each one gets in the test file).
static int tensor_specs(TSpec *s, int untied) {
    int n = 0;
    const struct { const char *name; int type; uint64_t rows, cols; } layer[] = {
        {"attn_norm", GGML_F32, 1, DIM}, {"attn_q", GGML_Q4_0, NH * HD, DIM},
        {"attn_k", GGML_Q4_1, NKV * HD, DIM}, {"attn_v", GGML_F16, NKV * HD, DIM},
        {"attn_output", GGML_BF16, DIM, NH * HD}, {"ffn_norm", GGML_F32, 1, DIM},
        {"ffn_gate", GGML_Q8_0, HID, DIM}, {"ffn_down", GGML_Q4_1, DIM, HID}, {"ffn_up", GGML_Q4_0, HID, DIM}};
    s[n++] = (TSpec){"token_embd.weight", GGML_Q8_0, NVOCAB, DIM};
    for (int l = 0; l < NL; l++)
        for (int k = 0; k < 9; k++) {
            snprintf(s[n].name, sizeof s[n].name, "blk.%d.%s.weight", l, layer[k].name);
            s[n].type = layer[k].type; s[n].rows = layer[k].rows; s[n].cols = layer[k].cols;
            n++;
        }
    s[n++] = (TSpec){"output_norm.weight", GGML_F32, 1, DIM};
    if (untied) s[n++] = (TSpec){"output.weight", GGML_F16, NVOCAB, DIM};
    return n;
}

static void make_llama_gguf(const char *path, Opts o, TSpec *specs, uint8_t **data, int *n_specs) {
    int ns = tensor_specs(specs, o.untied);
    *n_specs = ns;
    char *tokens[NVOCAB], *merges[1] = {"h e"};
    int32_t types[NVOCAB];
    for (int i = 0; i < 256; i++) { tokens[i] = xmalloc(4); byte_token(i, tokens[i]); types[i] = 1; }
    tokens[256] = "he"; types[256] = 1;
    tokens[257] = "<|im_start|>"; types[257] = 3;
    tokens[258] = "<|im_end|>"; types[258] = 3;
    Buf b = {0};
    gb_header(&b, (uint64_t)(ns - (o.omit ? 1 : 0)), 17);
    kv_str(&b, "general.architecture", "llama");
    kv_u32(&b, "llama.block_count", NL);
    kv_u32(&b, "llama.context_length", 256);
    kv_u32(&b, "llama.embedding_length", DIM);
    kv_u32(&b, "llama.feed_forward_length", HID);
    kv_u32(&b, "llama.attention.head_count", NH);
    kv_u32(&b, "llama.attention.head_count_kv", NKV);
    kv_f32(&b, "llama.rope.freq_base", 50000.0f);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    kv_u32(&b, "llama.rope.dimension_count", HD);
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_str(&b, "tokenizer.ggml.pre", o.pre ? o.pre : "smollm");
    kv_str_array(&b, "tokenizer.ggml.tokens", tokens, NVOCAB);
    kv_i32_array(&b, "tokenizer.ggml.token_type", types, NVOCAB);
    kv_str_array(&b, "tokenizer.ggml.merges", merges, 1);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 257);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 258);
    GBTensor t[32];
    int nt = 0;
    for (int i = 0; i < ns; i++) {
        data[i] = random_data(specs[i].type, specs[i].rows * specs[i].cols);
        if (o.omit && strcmp(o.omit, specs[i].name) == 0) continue;
        int type = o.retype && strcmp(o.retype, specs[i].name) == 0 ? 14 : specs[i].type;
        t[nt++] = (GBTensor){specs[i].name, specs[i].rows == 1 ? 1 : 2, {specs[i].cols, specs[i].rows, 1, 1},
                             type, data[i], type_bytes(specs[i].type, specs[i].rows * specs[i].cols), 0};
    }
    gb_layout(t, nt, 32);
    for (int i = 0; i < nt; i++)
        if (o.far && strcmp(o.far, t[i].name) == 0) t[i].offset = 1u << 30;
    gb_finish(&b, t, nt, 32);
    if (o.nul_in_token) {
        static const uint8_t he[10] = { 2, 0, 0, 0, 0, 0, 0, 0, 'h', 'e' };   // the string "he", with its length
        size_t i = 0;
        while (i + sizeof he <= b.n && memcmp(b.p + i, he, sizeof he)) i++;
        ck_assert(i + sizeof he <= b.n);
        b.p[i + 9] = 0;
    }
    write_bytes(path, b.p, o.truncate_at ? (size_t)o.truncate_at : b.n);
    free(b.p);
    for (int i = 0; i < 256; i++) free(tokens[i]);
}

static char *tmp(const char *name) {
    static char p[4][256];
    static int k;
    char *s = p[k++ % 4];
    snprintf(s, 256, "%s/%s", test_tmpdir(), name);
    return s;
}

// A q8_0 tensor of the output: a Q8_0 source tensor must be its bytes unchanged; any other is
// quantized per block of 32 along the row: every element within d/2 of the source value (d the
// block's stored scale, rounding slack 1e-6 relative), and the block's largest code +-127.
static void check_q8_0_tensor(const TSpec *t, const uint8_t *src, const uint8_t *p) {
    if (t->type == GGML_Q8_0) {
        ck_assert_msg(memcmp(p, src, type_bytes(GGML_Q8_0, t->rows * t->cols)) == 0, "%s: Q8_0 not copied as it is", t->name);
        return;
    }
    for (uint64_t blk = 0; blk < t->rows * t->cols / 32; blk++) {
        const uint8_t *b = p + blk * 34;
        uint16_t hd;
        memcpy(&hd, b, 2);
        float d = fp16_to_fp32(hd);
        int qmax = 0;
        for (int j = 0; j < 32; j++) {
            float want = ref_value(t->type, src, blk * 32 + j), got = d * (float)(int8_t)b[2 + j];
            int q = abs((int8_t)b[2 + j]);
            if (q > qmax) qmax = q;
            ck_assert_msg(fabsf(got - want) <= 0.5f * d * (1 + 1e-6f) + 1e-6f * fabsf(want),
                          "%s element %llu: %g, source %g, scale %g", t->name, (unsigned long long)(blk * 32 + j), got, want, d);
        }
        ck_assert_msg(qmax == 127 || d == 0, "%s block %llu: largest code %d", t->name, (unsigned long long)blk, qmax);
    }
}

// Convert with export and check every tensor of the output against the reference formula.
static void check_conversion(int untied, const char *dtype) {
    TSpec specs[32];
    uint8_t *data[32];
    int ns;
    char *in = tmp("tiny.gguf"), *out = tmp("tiny-from-gguf.bin"), cmd[1024];
    make_llama_gguf(in, (Opts){.untied = untied}, specs, data, &ns);
    snprintf(cmd, sizeof cmd, "%s %s %s --dtype %s", export_bin(), in, out, dtype);
    ModelHeader h;
    Config c;
    uint8_t *bin = export_and_read(cmd, out, &h, &c);
    ck_assert_int_eq(c.dim, DIM);
    ck_assert_int_eq(c.hidden_dim, HID);
    ck_assert_int_eq(c.n_layers, NL);
    ck_assert_int_eq(c.n_heads, NH);
    ck_assert_int_eq(c.n_kv_heads, NKV);
    ck_assert_int_eq(c.head_dim, HD);
    ck_assert_int_eq(c.vocab_size, NVOCAB);
    ck_assert_int_eq(c.max_seq_len, 256);
    ck_assert_float_eq(c.rope_theta, 50000.0f);
    ck_assert_float_eq(c.norm_eps, 1e-6f);
    ck_assert_int_eq(c.tied_classifier, !untied);
    DType want_dt = !strcmp(dtype, "f32") ? DTYPE_F32 : !strcmp(dtype, "q8_0") ? DTYPE_Q8_0 : DTYPE_F16;
    ck_assert_int_eq(c.wdtype, want_dt);

    Tokenizer tok;
    tokenizer_from_blob(&tok, bin + h.tok_offset, h.tok_size);
    ck_assert_int_eq(tok.vocab_size, NVOCAB);
    ck_assert_int_eq(tok.bos_id, 257);
    ck_assert_int_eq(tok.eos_id, 258);
    ck_assert_int_eq(tok.eot_id, 258);          // <|im_end|> found by name
    ck_assert_int_eq(tok.chat, CHAT_CHATML);
    ck_assert_int_eq(tok.pretok, PRETOK_SMOLLM);
    free_tokenizer(&tok);

    WeightLayout L;
    build_weight_layout(&L, &c);
    for (int i = 0; i < ns; i++) {
        uint64_t off;
        int l = -1;
        char kind[32] = "";
        if (i == 0) off = L.token_embedding;
        else if (strcmp(specs[i].name, "output_norm.weight") == 0) off = L.final_norm;
        else if (strcmp(specs[i].name, "output.weight") == 0) off = L.classifier;
        else {
            ck_assert_int_eq(sscanf(specs[i].name, "blk.%d.%31[a-z_]", &l, kind), 2);
            const LayerOffsets *lo = &L.layers[l];
            off = !strcmp(kind, "attn_norm") ? lo->attn_norm : !strcmp(kind, "attn_q") ? lo->wq
                : !strcmp(kind, "attn_k") ? lo->wk : !strcmp(kind, "attn_v") ? lo->wv
                : !strcmp(kind, "attn_output") ? lo->wo : !strcmp(kind, "ffn_norm") ? lo->ffn_norm
                : !strcmp(kind, "ffn_gate") ? lo->w_gate : !strcmp(kind, "ffn_down") ? lo->w_down : lo->w_up;
        }
        ck_assert_uint_eq(off % MODELBIN_TENSOR_ALIGN, 0);
        const uint8_t *p = bin + h.wt_offset + off;
        int is_norm = specs[i].rows == 1, f32 = is_norm || c.wdtype == DTYPE_F32;
        if (!is_norm && c.wdtype == DTYPE_Q8_0) { check_q8_0_tensor(&specs[i], data[i], p); free(data[i]); continue; }
        for (uint64_t e = 0; e < specs[i].rows * specs[i].cols; e++) {
            float want = ref_value(specs[i].type, data[i], e), got;
            if (f32) memcpy(&got, p + 4 * e, 4);
            else { uint16_t hv; memcpy(&hv, p + 2 * e, 2); got = fp16_to_fp32(hv); want = fp16_to_fp32(fp32_to_fp16(want)); }
            ck_assert_msg(got == want, "%s element %llu: %g, expected %g", specs[i].name, (unsigned long long)e, got, want);
        }
        free(data[i]);
    }
    free_weight_layout(&L);
    free(bin);
}

START_TEST(test_convert_f32_tied) { check_conversion(0, "f32"); }
END_TEST
START_TEST(test_convert_f16_untied) { check_conversion(1, "f16"); }
END_TEST
START_TEST(test_convert_q8_0_tied) { check_conversion(0, "q8_0"); }
END_TEST
START_TEST(test_convert_q8_0_untied) { check_conversion(1, "q8_0"); }
END_TEST

// A malformed GGUF must make export exit 1 with one line naming the problem.
static void expect_failure(Opts o, const char *want) {
    TSpec specs[32];
    uint8_t *data[32];
    int ns;
    char *in = tmp("bad.gguf"), *out = tmp("bad.bin"), cmd[1024], *err;
    make_llama_gguf(in, o, specs, data, &ns);
    for (int i = 0; i < ns; i++) free(data[i]);
    snprintf(cmd, sizeof cmd, "%s %s %s", export_bin(), in, out);
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_msg(rc == 1, "exit code %d for '%s': %s", rc, want, err);
    ck_assert_msg(strstr(err, want) != NULL, "expected '%s' in: %s", want, err);
    ck_assert_msg(strncmp(err, "error: ", 7) == 0 && strchr(err, '\n') == err + strlen(err) - 1,
                  "not one error line: %s", err);
    ck_assert_msg(!file_exists(out), "a failed export left %s behind", out);
    free(err);
}

START_TEST(test_bad_magic) {
    char *in = tmp("magic.gguf"), cmd[1024], *err;
    uint8_t bytes[32] = {'G', 'G', 'U', 'X', 3};
    write_bytes(in, bytes, sizeof bytes);
    snprintf(cmd, sizeof cmd, "%s %s %s", export_bin(), in, tmp("magic.bin"));
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "bad magic") && strstr(err, "magic.gguf"), "%s", err);
    free(err);
}
END_TEST

START_TEST(test_truncated_metadata) { expect_failure((Opts){.truncate_at = 700}, "truncated GGUF"); }
END_TEST
START_TEST(test_offset_outside) { expect_failure((Opts){.far = "blk.1.attn_v.weight"}, "blk.1.attn_v.weight: offset"); }
END_TEST
START_TEST(test_unsupported_type) {
    expect_failure((Opts){.retype = "blk.0.ffn_up.weight"}, "blk.0.ffn_up.weight has type Q6_K");
}
END_TEST
START_TEST(test_missing_tensor) { expect_failure((Opts){.omit = "blk.1.ffn_down.weight"}, "missing tensor blk.1.ffn_down.weight"); }
END_TEST
START_TEST(test_unknown_pretokenizer) { expect_failure((Opts){.pre = "falcon"}, "falcon"); }
END_TEST
// A C string would end at the NUL and the token would silently become "h".
START_TEST(test_nul_in_token) {
    expect_failure((Opts){.nul_in_token = 1}, "metadata tokenizer.ggml.tokens[256] holds a NUL byte inside a string");
}
END_TEST

START_TEST(test_bad_arguments) {
    char cmd[1024], *err;
    snprintf(cmd, sizeof cmd, "%s a.gguf b.bin --dtype f8", export_bin());
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "f8"), "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s a.gguf b.bin --frobnicate", export_bin());
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "--frobnicate"), "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s a.gguf b.bin --dtype", export_bin());
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "--dtype needs a value"), "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s %s/no-such.gguf b.bin", export_bin(), test_tmpdir());
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "no-such.gguf"), "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s --random huge --tokenizer x b.bin", export_bin());
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(strstr(err, "\"huge\""), "%s", err);
    free(err);
}
END_TEST

static Suite *gguf_suite(void) {
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("gguf");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_block_formats);
    tcase_add_test(tc, test_metadata_types);
    tcase_add_test(tc, test_convert_f32_tied);
    tcase_add_test(tc, test_convert_f16_untied);
    tcase_add_test(tc, test_convert_q8_0_tied);
    tcase_add_test(tc, test_convert_q8_0_untied);
    tcase_add_test(tc, test_bad_magic);
    tcase_add_test(tc, test_truncated_metadata);
    tcase_add_test(tc, test_offset_outside);
    tcase_add_test(tc, test_unsupported_type);
    tcase_add_test(tc, test_missing_tensor);
    tcase_add_test(tc, test_unknown_pretokenizer);
    tcase_add_test(tc, test_nul_in_token);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(gguf_suite)
