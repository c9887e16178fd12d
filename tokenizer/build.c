// build.c: making a Tokenizer from its three sources: token/merge strings (GGUF), a Hugging
// Face tokenizer.json, and Meta's tiktoken tokenizer.model.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tok_internal.h"
#include "../util/util.h"
#include "../util/json.h"

char *gpt2_string_to_bytes(const char *s, size_t n, int *len) {
    char *out = xmalloc(n + 1);      // every character gives one byte and takes >= 1 byte
    int k = 0;
    uint32_t c;
    for (size_t i = 0; i < n;) {
        int step = utf8_decode((const unsigned char *)s + i, n - i, &c), b;
        if (step == 0 || (b = unicode_to_byte(c)) < 0) { free(out); return NULL; }
        out[k++] = (char)b;
        i += (size_t)step;
    }
    out[k] = '\0';
    *len = k;
    return out;
}

static void alloc_vocab(Tokenizer *t, int n) {
    memset(t, 0, sizeof *t);
    t->vocab_size = n;
    t->token = xcalloc((size_t)n, sizeof *t->token);
    t->token_len = xcalloc((size_t)n, sizeof *t->token_len);
    t->is_special = xcalloc((size_t)n, 1);
    t->bos_id = t->eos_id = t->eot_id = t->eom_id = -1;
}

// A token stored as plain text. Special tokens must be valid UTF-8: they are matched in
// text, which is UTF-8, and one that is not could split a character in two.
static void set_raw(Tokenizer *t, int id, const char *s, size_t n, int special, const char *src) {
    int64_t bad = special ? tokenizer_utf8_check(s, n) : -1;
    if (bad >= 0) fatal("%s: special token %d is not valid UTF-8 (at byte %lld)", src, id, (long long)bad);
    free(t->token[id]);
    t->token[id] = xmalloc(n + 1);
    memcpy(t->token[id], s, n);
    t->token[id][n] = '\0';
    t->token_len[id] = (int)n;
    t->is_special[id] = (uint8_t)special;
}

static void set_gpt2(Tokenizer *t, int id, const char *s, const char *src) {
    int n;
    char *b = gpt2_string_to_bytes(s, strlen(s), &n);
    if (!b) fatal("%s: token %d \"%s\" is not in the byte-level (GPT-2) alphabet", src, id, printable(s));
    free(t->token[id]);
    t->token[id] = b;
    t->token_len[id] = n;
}

// Resolve merge i given as two GPT-2 strings to token ids.
static void set_merge(Tokenizer *t, int i, const char *l, const char *r, const char *src) {
    const char *side[2] = { l, r };
    for (int k = 0; k < 2; k++) {
        int n, id = -1;
        char *b = gpt2_string_to_bytes(side[k], strlen(side[k]), &n);
        if (b) id = find_token_bytes(t, b, (size_t)n);
        free(b);
        if (id < 0) fatal("%s: merge %d (\"%s %s\"): \"%s\" is not a token", src, i, printable(l), printable(r),
                          printable(side[k]));
        t->merges[2 * i + k] = id;
    }
}

// "a b" -> merge i (the GPT-2 form has no raw spaces, so the one space separates the halves).
static void set_merge_string(Tokenizer *t, int i, const char *m, const char *src) {
    const char *sp = strchr(m, ' ');
    if (!sp || strchr(sp + 1, ' ')) fatal("%s: merge %d \"%s\" is not two tokens separated by one space", src, i, printable(m));
    char *l = xstrdup(m);
    l[sp - m] = '\0';
    set_merge(t, i, l, sp + 1, src);
    free(l);
}

void build_tokenizer_from_strings(Tokenizer *t, char **tokens, int n_tokens,
                                  char **merges, int n_merges, const int32_t *token_type) {
    if (n_tokens <= 0) fatal("tokenizer: empty vocabulary");
    if (n_merges < 0) fatal("tokenizer: negative merge count");
    alloc_vocab(t, n_tokens);
    for (int i = 0; i < n_tokens; i++) {
        // GGUF token types 3 (control) and 4 (user-defined) are stored as plain text, like
        // added tokens in tokenizer.json; the rest are in the GPT-2 byte->unicode form.
        if (token_type && (token_type[i] == 3 || token_type[i] == 4))
            set_raw(t, i, tokens[i], strlen(tokens[i]), 1, "tokenizer");
        else
            set_gpt2(t, i, tokens[i], "tokenizer");
    }
    index_tokens(t);
    t->n_merges = n_merges;
    t->merges = xmalloc(2 * (size_t)(n_merges ? n_merges : 1) * sizeof *t->merges);
    for (int i = 0; i < n_merges; i++) set_merge_string(t, i, merges[i], "tokenizer");
    index_merges(t);
    t->pretok = PRETOK_GPT2;
    tokenizer_guess_specials(t);
}

// ---- tokenizer.json ---------------------------------------------------------------------

static const char *str_field(const JsonValue *o, const char *key) {
    const JsonValue *v = json_get(o, key);
    return v && v->type == JSON_STRING ? v->string : NULL;
}

static int bool_field(const JsonValue *o, const char *key) {
    const JsonValue *v = json_get(o, key);
    return v && v->type == JSON_BOOL && v->boolean;
}

static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// ByteLevel pre-tokenizer; use_regex: whether it applies the GPT-2 pattern itself.
static int is_bytelevel(const JsonValue *p, int use_regex) {
    const char *type = str_field(p, "type");
    if (!type || strcmp(type, "ByteLevel") != 0 || bool_field(p, "add_prefix_space")) return 0;
    const JsonValue *u = json_get(p, "use_regex");      // absent means true
    int has_regex = !u || (u->type == JSON_BOOL && u->boolean);
    return has_regex == use_regex;
}

// The three pre-tokenizer structures we implement, recognised exactly; anything else is
// rejected by name so that a model with another pattern can't be tokenized wrongly in silence.
static int detect_pretok(const JsonValue *p, const char *path) {
    const char *type = p ? str_field(p, "type") : NULL;
    if (!type) fatal("%s: no pre_tokenizer (byte-level BPE needs one)", path);
    if (is_bytelevel(p, 1)) return PRETOK_GPT2;
    const JsonValue *seq = json_get(p, "pretokenizers");
    if (strcmp(type, "Sequence") == 0 && seq && seq->type == JSON_ARRAY && seq->n == 2) {
        const JsonValue *a = &seq->items[0], *b = &seq->items[1];
        const char *ta = str_field(a, "type");
        if (ta && strcmp(ta, "Digits") == 0 && bool_field(a, "individual_digits") && is_bytelevel(b, 1))
            return PRETOK_SMOLLM;
        const JsonValue *pat = json_get(a, "pattern");
        const char *re = pat ? str_field(pat, "Regex") : NULL, *beh = str_field(a, "behavior");
        if (ta && strcmp(ta, "Split") == 0 && re && beh && strcmp(beh, "Isolated") == 0 &&
            !bool_field(a, "invert") && is_bytelevel(b, 0)) {
            if (strcmp(re, LLAMA3_REGEX) == 0) return PRETOK_LLAMA3;
            fatal("%s: pre_tokenizer Split regex \"%s\" is not supported (only the Llama-3 one)", path, printable(re));
        }
        fatal("%s: pre_tokenizer Sequence [%s, %s] is not supported", path, ta ? printable(ta) : "?",
              str_field(b, "type") ? printable(str_field(b, "type")) : "?");
    }
    fatal("%s: pre_tokenizer %s is not supported (ByteLevel, Digits+ByteLevel, Llama-3 Split+ByteLevel are)", path, printable(type));
}

static int json_id(const JsonValue *v, const char *what, const char *path) {
    if (!v || v->type != JSON_NUMBER || !v->number_is_int || v->integer < 0 || v->integer >= (1 << 28))
        fatal("%s: %s: id is not an integer in [0, 2^28)", path, printable(what));
    return (int)v->integer;
}

void build_tokenizer_from_hf_json(Tokenizer *t, const char *path) {
    size_t len;
    char *text = read_file(path, &len);
    build_tokenizer_from_hf_json_text(t, path, text, len);
    free(text);
}

void build_tokenizer_from_hf_json_text(Tokenizer *t, const char *path, const char *text, size_t len) {
    char err[256];
    JsonValue *root = json_parse(text, len, err, sizeof err);
    if (!root) fatal("%s: malformed JSON: %s", path, err);
    const JsonValue *model = json_get(root, "model");
    if (!model || model->type != JSON_OBJECT) fatal("%s: no \"model\" object", path);
    const char *type = str_field(model, "type");
    if (!type || strcmp(type, "BPE") != 0) fatal("%s: model type '%s' is not supported (only BPE)", path, type ? printable(type) : "(none)");
    const JsonValue *vocab = json_get(model, "vocab"), *merges = json_get(model, "merges");
    const JsonValue *added = json_get(root, "added_tokens"), *norm = json_get(root, "normalizer");
    if (!vocab || vocab->type != JSON_OBJECT || vocab->n == 0) fatal("%s: model.vocab is missing or empty", path);
    if (!merges || merges->type != JSON_ARRAY) fatal("%s: model.merges is missing", path);
    if (norm && norm->type != JSON_NULL)
        fatal("%s: normalizer %s is not supported", path, str_field(norm, "type") ? printable(str_field(norm, "type")) : "?");
    if (bool_field(model, "byte_fallback")) fatal("%s: BPE byte_fallback is not supported", path);
    const char *affix[2] = { str_field(model, "continuing_subword_prefix"), str_field(model, "end_of_word_suffix") };
    if ((affix[0] && affix[0][0]) || (affix[1] && affix[1][0]))
        fatal("%s: continuing_subword_prefix / end_of_word_suffix are not supported", path);
    const JsonValue *dropout = json_get(model, "dropout");
    if (dropout && dropout->type != JSON_NULL) fatal("%s: BPE dropout is not supported", path);
    int pretok = detect_pretok(json_get(root, "pre_tokenizer"), path);

    // Ids: the vocab plus the added tokens; the largest one sets the size. Ids may leave holes,
    // but no more holes than ids named: the tables then grow with the file, and a short file
    // cannot name id 2^28 - 1 and make us allocate gigabytes.
    int n = 0;
    for (size_t i = 0; i < vocab->n; i++) { int id = json_id(&vocab->items[i], vocab->keys[i], path); if (id + 1 > n) n = id + 1; }
    size_t n_added = added && added->type == JSON_ARRAY ? added->n : 0;
    for (size_t i = 0; i < n_added; i++) { int id = json_id(json_get(&added->items[i], "id"), "added_tokens", path); if (id + 1 > n) n = id + 1; }
    size_t n_named = vocab->n + n_added;
    if ((size_t)n > 2 * n_named)
        fatal("%s: largest id %d leaves more holes than the %zu ids named (at most one hole per id)", path, n - 1, n_named);
    alloc_vocab(t, n);
    for (size_t i = 0; i < vocab->n; i++) {
        int id = (int)vocab->items[i].integer;
        if (t->token[id]) fatal("%s: model.vocab has id %d twice", path, id);
        set_gpt2(t, id, vocab->keys[i], path);
    }
    // Added tokens are plain text. We mark them all special, whatever their "special" flag:
    // BPE never produces them and encode matches them only with parse_special (see tokenizer.h).
    for (size_t i = 0; i < n_added; i++) {
        const JsonValue *a = &added->items[i], *c = json_get(a, "content");
        if (!c || c->type != JSON_STRING || c->string_len == 0) fatal("%s: added_tokens[%zu] has no content", path, i);
        set_raw(t, (int)json_get(a, "id")->integer, c->string, c->string_len, 1, path);
    }
    // An id that neither names is a hole: an empty token, never made by encode, decoded as nothing.
    for (int id = 0; id < n; id++)
        if (!t->token[id]) t->token[id] = xcalloc(1, 1);
    index_tokens(t);

    if (merges->n > (size_t)INT32_MAX / 2) fatal("%s: too many merges", path);
    t->n_merges = (int)merges->n;
    t->merges = xmalloc(2 * (merges->n ? merges->n : 1) * sizeof *t->merges);
    for (size_t i = 0; i < merges->n; i++) {
        const JsonValue *m = &merges->items[i];
        if (m->type == JSON_STRING) set_merge_string(t, (int)i, m->string, path);        // "a b"
        else if (m->type == JSON_ARRAY && m->n == 2 && m->items[0].type == JSON_STRING && m->items[1].type == JSON_STRING)
            set_merge(t, (int)i, m->items[0].string, m->items[1].string, path);           // ["a", "b"]
        else fatal("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, i);
    }
    index_merges(t);
    t->pretok = pretok;
    t->ignore_merges = bool_field(model, "ignore_merges");
    tokenizer_guess_specials(t);
    json_free(root);
}

// ---- tiktoken tokenizer.model -----------------------------------------------------------

static int b64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Standard base64 with padding; returns the byte count or -1 if malformed.
static int b64_decode(const char *s, size_t n, char *out) {
    if (n == 0 || n % 4) return -1;
    int k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == n && j >= 2) { v[j] = 0; pad++; continue; }
            if (pad || (v[j] = b64_value((unsigned char)s[i + j])) < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[k++] = (char)(w >> 16);
        if (pad < 2) out[k++] = (char)(w >> 8);
        if (pad < 1) out[k++] = (char)w;
    }
    return k;
}

// The 256 special tokens that Meta's Llama-3 tokenizer.py appends after the 128,000 ranks.
static void llama3_special_name(int i, char *buf, size_t n) {
    static const char *named[] = { "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
        "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>" };
    if (i < 10) snprintf(buf, n, "%s", named[i]);
    else snprintf(buf, n, "<|reserved_special_token_%d|>", i - 5);
}

void build_tokenizer_from_tiktoken(Tokenizer *t, const char *path) {
    size_t len;
    char *text = read_file(path, &len);
    build_tokenizer_from_tiktoken_text(t, path, text, len);
    free(text);
}

#define TIKTOKEN_MAX_TOKEN 1024

// The decimal number s[0..n), or -1 if it is not one (empty, a non-digit, or above 2^31).
static long long parse_rank(const char *s, size_t n) {
    long long v = 0;
    if (n == 0) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > INT32_MAX) return -1;
        v = 10 * v + (s[i] - '0');
    }
    return v > INT32_MAX ? -1 : v;
}

void build_tokenizer_from_tiktoken_text(Tokenizer *t, const char *path, const char *text, size_t len) {
    int n = 0, cap = 1024, line = 0;
    char **tok = xmalloc((size_t)cap * sizeof *tok);
    int *tlen = xmalloc((size_t)cap * sizeof *tlen);
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        size_t le = e;
        if (le > i && text[le - 1] == '\r') le--;
        if (le == i && e >= len - 1) break;                      // final empty line
        const char *sp = memchr(text + i, ' ', le - i);
        char *bytes = xmalloc(le - i + 1);
        int nb = sp ? b64_decode(text + i, (size_t)(sp - (text + i)), bytes) : -1;
        long long rank = sp ? parse_rank(sp + 1, (size_t)(text + le - (sp + 1))) : -1;
        if (nb > 0) bytes[nb] = '\0';
        if (nb <= 0 || rank < 0) fatal("%s: line %d: not \"<base64> <rank>\"", path, line);
        if (rank != n) fatal("%s: line %d: rank %lld, expected %d (ranks count up from 0)", path, line, rank, n);
        // Finding the merges below tries every split of every token: quadratic in its length.
        // Real vocabularies stay far below the bound (Llama-3's longest token has 128 bytes).
        if (nb > TIKTOKEN_MAX_TOKEN)
            fatal("%s: line %d: a token of %d bytes (at most %d)", path, line, nb, TIKTOKEN_MAX_TOKEN);
        if (n + 256 >= cap) { cap *= 2; tok = xrealloc(tok, (size_t)cap * sizeof *tok); tlen = xrealloc(tlen, (size_t)cap * sizeof *tlen); }
        tok[n] = bytes; tlen[n] = nb; n++;
        i = e + 1;
    }
    if (n == 0) fatal("%s: no tokens", path);
    alloc_vocab(t, n + 256);
    for (int i = 0; i < n; i++) { t->token[i] = tok[i]; t->token_len[i] = tlen[i]; }
    for (int i = 0; i < 256; i++) {
        char name[64];
        llama3_special_name(i, name, sizeof name);
        set_raw(t, n + i, name, strlen(name), 1, path);
    }
    free(tok); free(tlen);
    index_tokens(t);
    // tiktoken has no merge list: any two adjacent tokens whose bytes join into a token can
    // merge, with that token's rank as priority. We list every such split of every token, in
    // rank order, and set rank_by_result so that the priority is the token made.
    size_t cap_m = 1024, n_m = 0;
    int32_t *m = xmalloc(2 * cap_m * sizeof *m);
    for (int id = 0; id < n; id++)
        for (int k = 1; k < t->token_len[id]; k++) {
            int l = find_token_bytes(t, t->token[id], (size_t)k);
            int r = find_token_bytes(t, t->token[id] + k, (size_t)(t->token_len[id] - k));
            if (l < 0 || r < 0) continue;
            if (n_m == cap_m) { cap_m *= 2; m = xrealloc(m, 2 * cap_m * sizeof *m); }
            m[2 * n_m] = l; m[2 * n_m + 1] = r; n_m++;
        }
    if (n_m > (size_t)INT32_MAX / 2) fatal("%s: too many merges", path);
    t->merges = m;
    t->n_merges = (int)n_m;
    t->rank_by_result = 1;
    index_merges(t);
    t->pretok = PRETOK_LLAMA3;
    t->ignore_merges = 1;
    tokenizer_guess_specials(t);
}
