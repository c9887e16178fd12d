// from_hf.c: a Hugging Face Llama checkpoint folder (config.json, safetensors, tokenizer.json)
// as a WeightSource.
//
// RoPE order: Hugging Face's conversion of Meta's weights permuted the Q and K rows of each
// head for rotate_half, which pairs element j with j + head_dim/2. model.bin pairs adjacent
// elements (2j, 2j+1) (docs/DESIGN.md §2), so we undo that permutation: in each head, HF row j of
// the first half is our row 2j, HF row j of the second half is our row 2j + 1.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "safetensors.h"
#include "../model/modelbin.h"
#include "../util/json.h"
#include "../util/util.h"

struct HFExport {
    SafeTensors st;
    Config c;
    const STTensor *t[W_COUNT];       // non-layer tensors
    const STTensor **layer;           // [n_layers][W_COUNT]
};

static const JsonValue *get_num(const char *path, const JsonValue *cfg, const char *key, int required) {
    const JsonValue *v = json_get(cfg, key);
    if (!v || v->type == JSON_NULL) {
        if (required) fatal("%s: missing %s", path, key);
        return NULL;
    }
    if (v->type != JSON_NUMBER) fatal("%s: %s must be a number", path, key);
    return v;
}

static int get_int(const char *path, const JsonValue *cfg, const char *key, int required, int dflt) {
    const JsonValue *v = get_num(path, cfg, key, required);
    if (!v) return dflt;
    if (!v->number_is_int || v->integer <= 0 || v->integer > (1 << 24))
        fatal("%s: %s must be a positive integer (got %g)", path, key, v->number);
    return (int)v->integer;
}

static float get_float(const char *path, const JsonValue *cfg, const char *key, int required, float dflt) {
    const JsonValue *v = get_num(path, cfg, key, required);
    return v ? (float)v->number : dflt;
}

// Llama-3.1 rope scaling: {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
// "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, called "rope_scaling"
// by transformers 4.x and "rope_parameters" (with rope_theta inside) by 5.x. Other types are named.
static void read_rope_scaling(Config *c, const char *path, const JsonValue *rs) {
    if (!rs || rs->type == JSON_NULL) return;
    if (rs->type != JSON_OBJECT) fatal("%s: rope_scaling / rope_parameters must be an object or null", path);
    const JsonValue *type = json_get(rs, "rope_type");
    if (!type) type = json_get(rs, "type");   // older transformers spelling
    if (!type || type->type != JSON_STRING) fatal("%s: rope_scaling has no rope_type", path);
    if (strcmp(type->string, "default") == 0) return;
    if (strcmp(type->string, "llama3") != 0)
        fatal("%s: rope_scaling type \"%s\" is not supported (only \"llama3\")", path, type->string);
    c->rope_scaling = ROPE_SCALING_LLAMA3;
    c->rope_factor = get_float(path, rs, "factor", 1, 0);
    c->rope_low_freq_factor = get_float(path, rs, "low_freq_factor", 1, 0);
    c->rope_high_freq_factor = get_float(path, rs, "high_freq_factor", 1, 0);
    c->rope_orig_ctx = get_int(path, rs, "original_max_position_embeddings", 1, 0);
}

static void read_config(Config *c, const char *path) {
    size_t len;
    char *text = read_file(path, &len), err[200];
    JsonValue *j = json_parse(text, len, err, sizeof err);
    if (!j) fatal("%s: malformed JSON: %s", path, err);
    if (j->type != JSON_OBJECT) fatal("%s: not a JSON object", path);
    const JsonValue *mt = json_get(j, "model_type");
    if (mt && mt->type == JSON_STRING && strcmp(mt->string, "llama") != 0)
        fatal("%s: model_type \"%s\" is not supported (only \"llama\")", path, mt->string);
    // Variants of the Llama block this runner does not compute are refused, not ignored.
    const char *biases[2] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        const JsonValue *v = json_get(j, biases[i]);
        if (v && v->type == JSON_BOOL && v->boolean) fatal("%s: %s = true is not supported", path, biases[i]);
    }
    const JsonValue *act = json_get(j, "hidden_act");
    if (act && act->type == JSON_STRING && strcmp(act->string, "silu") != 0)
        fatal("%s: hidden_act \"%s\" is not supported (only \"silu\")", path, act->string);
    memset(c, 0, sizeof *c);
    c->dim = get_int(path, j, "hidden_size", 1, 0);
    c->hidden_dim = get_int(path, j, "intermediate_size", 1, 0);
    c->n_layers = get_int(path, j, "num_hidden_layers", 1, 0);
    c->n_heads = get_int(path, j, "num_attention_heads", 1, 0);
    c->n_kv_heads = get_int(path, j, "num_key_value_heads", 0, c->n_heads);
    c->vocab_size = get_int(path, j, "vocab_size", 1, 0);
    c->max_seq_len = get_int(path, j, "max_position_embeddings", 1, 0);
    c->norm_eps = get_float(path, j, "rms_norm_eps", 1, 0);
    const JsonValue *rope = json_get(j, "rope_scaling");
    if (!rope || rope->type == JSON_NULL) rope = json_get(j, "rope_parameters");
    // rope_theta: top level (transformers 4.x), inside rope_parameters (5.x), else Llama's 10000.
    const JsonValue *theta_in = json_get(j, "rope_theta") ? j : rope && rope->type == JSON_OBJECT ? rope : NULL;
    c->rope_theta = theta_in ? get_float(path, theta_in, "rope_theta", 0, 10000.0f) : 10000.0f;
    if (!(c->rope_theta > 0)) fatal("%s: rope_theta must be positive", path);
    if (c->dim % c->n_heads) fatal("%s: hidden_size %d is not a multiple of num_attention_heads %d", path,
                                   c->dim, c->n_heads);
    c->head_dim = get_int(path, j, "head_dim", 0, c->dim / c->n_heads);
    read_rope_scaling(c, path, rope);
    const JsonValue *tie = json_get(j, "tie_word_embeddings");
    if (tie && tie->type != JSON_BOOL) fatal("%s: tie_word_embeddings must be true or false", path);
    c->tied_classifier = tie ? tie->boolean : 0;     // LlamaConfig's default is untied
    json_free(j);
    free(text);
}

static const char *hf_name(char *buf, size_t n, WeightKind k, int layer) {
    static const char *names[W_COUNT] = {
        [W_ATTN_NORM] = "input_layernorm", [W_WQ] = "self_attn.q_proj", [W_WK] = "self_attn.k_proj",
        [W_WV] = "self_attn.v_proj", [W_WO] = "self_attn.o_proj", [W_FFN_NORM] = "post_attention_layernorm",
        [W_GATE] = "mlp.gate_proj", [W_DOWN] = "mlp.down_proj", [W_UP] = "mlp.up_proj"};
    if (k == W_EMBED) snprintf(buf, n, "model.embed_tokens.weight");
    else if (k == W_FINAL_NORM) snprintf(buf, n, "model.norm.weight");
    else if (k == W_CLASSIFIER) snprintf(buf, n, "lm_head.weight");
    else snprintf(buf, n, "model.layers.%d.%s.weight", layer, names[k]);
    return buf;
}

static const STTensor *need_shaped(const HFExport *e, const char *dir, WeightKind k, int layer) {
    char name[128];
    hf_name(name, sizeof name, k, layer);
    const STTensor *t = st_find(&e->st, name);
    if (!t) fatal("%s: missing tensor %s", dir, name);
    uint64_t rows, cols;
    weight_shape(&e->c, k, &rows, &cols);
    int ok = rows == 1 ? t->n_dims == 1 && t->shape[0] == cols
                       : t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols;
    if (!ok)
        fatal("%s: tensor %s has shape [%llu, %llu], expected [%llu, %llu]", t->path, name,
              (unsigned long long)(t->n_dims > 0 ? t->shape[0] : 0),
              (unsigned long long)(t->n_dims > 1 ? t->shape[1] : 0), (unsigned long long)rows,
              (unsigned long long)cols);
    return t;
}

// Source row of HF's rotate_half layout for our interleaved row r (see the top of the file).
static uint64_t hf_row(uint64_t r, uint64_t head_dim) {
    uint64_t head = r / head_dim, i = r % head_dim, half = head_dim / 2;
    return head * head_dim + (i % 2) * half + i / 2;
}

static void hf_rows(WeightSource *src, WeightKind k, int layer, uint64_t row0, uint64_t nrows,
                    uint64_t ncols, float *out) {
    const HFExport *e = src->ctx;
    const STTensor *t = layer < 0 ? e->t[k] : e->layer[(size_t)layer * W_COUNT + k];
    if (k != W_WQ && k != W_WK) {
        st_rows(t, row0, nrows, ncols, out);
        return;
    }
    for (uint64_t r = 0; r < nrows; r++)
        st_rows(t, hf_row(row0 + r, (uint64_t)e->c.head_dim), 1, ncols, out + r * ncols);
}

HFExport *open_hf_export(const char *dir, Config *c, Tokenizer *tok, WeightSource *src) {
    HFExport *e = xcalloc(1, sizeof *e);
    size_t n = strlen(dir);
    char *path = xmalloc(n + 32);
    snprintf(path, n + 32, "%s/config.json", dir);
    read_config(&e->c, path);
    const char *err = config_check(&e->c);
    if (err) fatal("%s: unusable model dims: %s", path, err);
    st_open_dir(&e->st, dir);
    e->t[W_EMBED] = need_shaped(e, dir, W_EMBED, -1);
    e->t[W_FINAL_NORM] = need_shaped(e, dir, W_FINAL_NORM, -1);
    if (!e->c.tied_classifier) e->t[W_CLASSIFIER] = need_shaped(e, dir, W_CLASSIFIER, -1);
    e->layer = xcalloc((size_t)e->c.n_layers * W_COUNT, sizeof(STTensor *));
    for (int l = 0; l < e->c.n_layers; l++)
        for (int k = W_ATTN_NORM; k <= W_UP; k++)
            e->layer[(size_t)l * W_COUNT + k] = need_shaped(e, dir, (WeightKind)k, l);
    snprintf(path, n + 32, "%s/tokenizer.json", dir);
    build_tokenizer_from_hf_json(tok, path);
    free(path);
    *c = e->c;
    src->rows = hf_rows;
    src->ctx = e;
    return e;
}

void close_hf_export(HFExport *e) {
    st_close(&e->st);
    free(e->layer);
    free(e);
}
