// test_tokenizer.c: the tokenizer against golden ids from the Hugging Face `tokenizers`
// library (tests/reference/make_tokenizer_golden.py), for Llama-3 (tokenizer.json, and the
// same vocab as a tiktoken tokenizer.model) and SmolLM2 (from its GGUF); plus model.bin blob
// round trips, decoding, chat prompts and every bad input as a clean fatal error.
#include "testutil.h"
#include "../tokenizer/tokenizer.h"
#include "../tokenizer/tok_internal.h"
#include "../export/export.h"
#include "../export/gguf.h"
#include "../util/json.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LLAMA3_JSON DATA_DIR "/llama3/tokenizer.json"
#define CASES_FILE "tests/golden/tokenizer_cases.txt"

// Must match CHATS in make_tokenizer_golden.py.
static const char *CHATS[][2] = { { NULL, "What is 2+2?" },
                                  { "You are a pirate.", "Tell me about the sea.\nBriefly!" },
                                  { NULL, "  spaces around  " } };

// ---- the sample texts the golden lines refer to -----------------------------------------

typedef struct { char *text; size_t len; int special; } Sample;
typedef struct { Sample *v; int n; } Samples;

static Samples gsm8k(void) {
    static Samples s;
    if (s.n) return s;
    char *all = read_file(DATA_DIR "/gsm8k_test.jsonl", NULL), *line = all, err[128];
    s.v = xmalloc(2000 * sizeof *s.v);
    while (*line && s.n < 2000) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        JsonValue *o = json_parse(line, n, err, sizeof err);
        ck_assert_msg(o != NULL, "gsm8k line %d: %s", s.n, err);
        const JsonValue *q = json_get(o, "question"), *a = json_get(o, "answer");
        Sample *x = &s.v[s.n++];
        x->len = q->string_len + 1 + a->string_len;
        x->text = xmalloc(x->len + 1);
        memcpy(x->text, q->string, q->string_len);
        x->text[q->string_len] = '\n';
        memcpy(x->text + q->string_len + 1, a->string, a->string_len + 1);
        json_free(o);
        line += n + (end != NULL);
    }
    free(all);
    return s;
}

// Edge cases for `model`: the lines of tokenizer_cases.txt whose model is "all" or model.
static Samples cases(const char *model) {
    Samples s = {0};
    char *all = read_file(CASES_FILE, NULL), *line = all, err[128];
    s.v = xmalloc(1000 * sizeof *s.v);
    while (*line) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        if (n && line[0] != '#') {
            JsonValue *a = json_parse(line, n, err, sizeof err);
            ck_assert_msg(a && a->type == JSON_ARRAY && a->n == 3, "%s: bad line: %s", CASES_FILE, err);
            const char *m = a->items[2].string;
            if (strcmp(m, "all") == 0 || strcmp(m, model) == 0) {
                Sample *x = &s.v[s.n++];
                x->special = (int)a->items[0].integer;
                x->len = a->items[1].string_len;
                x->text = xmalloc(x->len + 1);
                memcpy(x->text, a->items[1].string, x->len + 1);
            }
            json_free(a);
        }
        line += n + (end != NULL);
    }
    free(all);
    return s;
}

static void free_samples(Samples *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i].text);
    free(s->v);
}

// Tiny Shakespeare characters [2000 i, 2000 i + 2000), counted in code points.
static Sample shakespeare_chunk(int i) {
    static char *text;
    static size_t len;
    if (!text) text = read_file(DATA_DIR "/tinyshakespeare.txt", &len);
    size_t a = 0, cps = 0;
    while (a < len && cps < (size_t)i * 2000) { a++; while (a < len && (text[a] & 0xc0) == 0x80) a++; cps++; }
    size_t b = a;
    for (cps = 0; b < len && cps < 2000; cps++) { b++; while (b < len && (text[b] & 0xc0) == 0x80) b++; }
    return (Sample){ text + a, b - a, 0 };
}

// ---- golden files -----------------------------------------------------------------------

static int parse_ids(const char *s, int **ids) {
    int n = 0, cap = 64;
    *ids = xmalloc((size_t)cap * sizeof **ids);
    char *end;
    for (long v; (v = strtol(s, &end, 10)), end != s; s = end) {
        if (n == cap) *ids = xrealloc(*ids, (size_t)(cap *= 2) * sizeof **ids);
        (*ids)[n++] = (int)v;
    }
    return n;
}

// Offset of the first byte of s[0..n) that has no token of its own in t, or -1. Such text is
// refused (tokenizer.h), where `tokenizers` drops the byte.
static long missing_byte(const Tokenizer *t, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (find_token_bytes(t, s + i, 1) < 0) return (long)i;
    return -1;
}

// Texts of the golden files that the vocabulary cannot encode (counted, not compared).
static int golden_refused;

// Encode every sample of a golden file with t and count the lines whose ids differ.
// gpt2_lines: for PRETOK_GPT2, a line "gpt2 <set> i" replaces the ids of "<set> i".
static int check_golden(const Tokenizer *t, const char *model, int gpt2_lines, int *n_checked) {
    char path[256];
    snprintf(path, sizeof path, "tests/golden/tokenizer_%s.txt", model);
    char *all = read_file(path, NULL);
    Samples cs = cases(model);
    int bad = 0;
    *n_checked = 0;
    for (char *line = all; *line;) {
        char *end = strchr(line, '\n');
        if (end) *end = '\0';
        char set[32];
        int idx, off;
        if (line[0] != '#' && strncmp(line, "gpt2 ", 5) != 0 && sscanf(line, "%31s %d%n", set, &idx, &off) == 2) {
            char alt_key[64], *alt;
            snprintf(alt_key, sizeof alt_key, "\ngpt2 %s %d ", set, idx);
            const char *ids_text = line + off;
            // "gpt2 <set> i" lines come last (still '\n'-terminated: parse_ids stops at the next word).
            if (gpt2_lines && end && (alt = strstr(end + 1, alt_key + 1)) && alt[-1] == '\n')
                ids_text = alt + strlen(alt_key) - 1;
            Sample s;
            char *chat = NULL;
            if (strcmp(set, "shakespeare") == 0) s = shakespeare_chunk(idx);
            else if (strcmp(set, "gsm8k") == 0) s = gsm8k().v[idx];
            else if (strcmp(set, "case") == 0) { ck_assert_int_lt(idx, cs.n); s = cs.v[idx]; }
            else {
                ck_assert_str_eq(set, "chat");
                chat = tokenizer_chat_prompt(t, CHATS[idx][0], CHATS[idx][1]);
                s = (Sample){ chat, strlen(chat), 1 };
            }
            if (missing_byte(t, s.text, s.len) >= 0) {     // refused: see bytes_without_token
                golden_refused++;
                free(chat);
                if (!end) break;
                line = end + 1;
                continue;
            }
            int *want, *got;
            int n_want = parse_ids(ids_text, &want);
            int n_got = chat ? tokenizer_encode_chat(t, CHATS[idx][0], CHATS[idx][1], &got)
                             : tokenizer_encode(t, s.text, s.len, s.special, &got);
            if (n_want != n_got || memcmp(want, got, (size_t)n_got * sizeof *got) != 0) {
                if (bad < 5) fprintf(stderr, "%s: %s %d differs (%d ids, want %d)\n", model, set, idx, n_got, n_want);
                bad++;
            }
            (*n_checked)++;
            free(want); free(got); free(chat);
        }
        if (!end) break;
        line = end + 1;
    }
    free(all);
    free_samples(&cs);
    return bad;
}

static void load_smollm2(Tokenizer *t) {
    ck_assert_msg(file_exists(DEFAULT_GGUF), "%s is missing: run `make model` first", DEFAULT_GGUF);
    GGUFFile g;
    gguf_open(&g, DEFAULT_GGUF);
    tokenizer_from_gguf(t, &g);
    gguf_close(&g);
}

// ---- golden tests -----------------------------------------------------------------------

START_TEST(llama3_golden) {
    Tokenizer t;
    build_tokenizer_from_hf_json(&t, LLAMA3_JSON);
    ck_assert_int_eq(t.vocab_size, 128256);
    ck_assert_int_eq(t.pretok, PRETOK_LLAMA3);
    ck_assert(t.ignore_merges);
    int n, bad = check_golden(&t, "llama3", 0, &n);
    ck_assert_int_gt(n, 558 + 1319 + 100);        // every Shakespeare chunk, every GSM8K problem, the cases
    ck_assert_msg(bad == 0, "%d of %d samples differ from tokenizers", bad, n);
    free_tokenizer(&t);
}
END_TEST

START_TEST(smollm2_golden) {
    Tokenizer t;
    load_smollm2(&t);
    ck_assert_int_eq(t.vocab_size, 49152);
    ck_assert_int_eq(t.pretok, PRETOK_SMOLLM);
    ck_assert_int_eq(t.chat, CHAT_CHATML);
    golden_refused = 0;
    int n, bad = check_golden(&t, "smollm2", 0, &n);
    ck_assert_int_gt(n, 140 + 1319 + 100);
    ck_assert_msg(bad == 0, "%d of %d samples differ (Digits + ByteLevel)", bad, n);
    ck_assert_int_eq(golden_refused, 1);               // the case "\x1c\x1d\x1e\x1f": no token for 0x1d
    // The same vocab with the plain GPT-2 pattern is transformers' GGUF tokenizer.
    t.pretok = PRETOK_GPT2;
    bad = check_golden(&t, "smollm2", 1, &n);
    ck_assert_msg(bad == 0, "%d of %d samples differ (GPT-2 pattern)", bad, n);
    free_tokenizer(&t);
}
END_TEST

// Meta's tokenizer.model format, written from the tokenizer.json vocab: tiktoken semantics
// (merge priority = rank of the token made) must give the same ids as the merge list.
START_TEST(tiktoken_matches_json) {
    Tokenizer j, k;
    build_tokenizer_from_hf_json(&j, LLAMA3_JSON);
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.model", test_tmpdir());
    FILE *f = fopen(path, "w");
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int id = 0; id < 128000; id++) {
        const unsigned char *s = (const unsigned char *)j.token[id];
        int n = j.token_len[id];
        for (int i = 0; i < n; i += 3) {
            uint32_t w = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
            fprintf(f, "%c%c%c%c", b64[w >> 18], b64[(w >> 12) & 63], i + 1 < n ? b64[(w >> 6) & 63] : '=',
                    i + 2 < n ? b64[w & 63] : '=');
        }
        fprintf(f, " %d\n", id);
    }
    fclose(f);
    build_tokenizer_from_tiktoken(&k, path);
    ck_assert_int_eq(k.vocab_size, 128256);
    ck_assert_int_eq(tokenizer_find(&k, "<|eot_id|>"), 128009);
    ck_assert_int_eq(k.eot_id, 128009);
    ck_assert_int_eq(k.bos_id, 128000);
    ck_assert(k.add_bos);
    int n, bad = check_golden(&k, "llama3", 0, &n);
    ck_assert_msg(bad == 0, "tiktoken: %d of %d samples differ", bad, n);
    free_tokenizer(&j); free_tokenizer(&k);
}
END_TEST

// ---- blob, decode, specials, chat -------------------------------------------------------

static void check_same_tokenizer(const Tokenizer *a, const Tokenizer *b) {
    ck_assert_int_eq(a->vocab_size, b->vocab_size);
    ck_assert_int_eq(a->n_merges, b->n_merges);
    ck_assert_int_eq(a->pretok, b->pretok);
    ck_assert_int_eq(a->chat, b->chat);
    ck_assert_int_eq(a->bos_id, b->bos_id); ck_assert_int_eq(a->eos_id, b->eos_id);
    ck_assert_int_eq(a->eot_id, b->eot_id); ck_assert_int_eq(a->eom_id, b->eom_id);
    ck_assert_int_eq(a->ignore_merges, b->ignore_merges); ck_assert_int_eq(a->add_bos, b->add_bos);
    for (int i = 0; i < a->vocab_size; i++) {
        ck_assert_int_eq(a->token_len[i], b->token_len[i]);
        ck_assert(memcmp(a->token[i], b->token[i], (size_t)a->token_len[i]) == 0);
        ck_assert_int_eq(a->is_special[i], b->is_special[i]);
    }
    ck_assert(memcmp(a->merges, b->merges, 2 * (size_t)a->n_merges * sizeof *a->merges) == 0);
}

START_TEST(blob_roundtrip) {
    Tokenizer a, b;
    load_smollm2(&a);
    uint64_t size, size2;
    uint8_t *blob = tokenizer_to_blob(&a, &size);
    tokenizer_from_blob(&b, blob, size);
    check_same_tokenizer(&a, &b);
    uint8_t *blob2 = tokenizer_to_blob(&b, &size2);
    ck_assert(size == size2 && memcmp(blob, blob2, size) == 0);
    int n, bad = check_golden(&b, "smollm2", 0, &n);     // and it still encodes exactly
    ck_assert_int_eq(bad, 0);
    free(blob); free(blob2);
    free_tokenizer(&a); free_tokenizer(&b);
}
END_TEST

// Every token decodes to its own bytes, and decoding a whole text gives the text back.
START_TEST(decode_every_token) {
    Tokenizer t;
    build_tokenizer_from_hf_json(&t, LLAMA3_JSON);
    char out[1024];
    for (int id = 0; id < t.vocab_size; id++) {
        DecodeState s = {0};
        int n = tokenizer_decode_step(&t, &s, id, out);
        n += tokenizer_decode_flush(&s, out + n);
        ck_assert_int_eq(n, t.token_len[id]);
        ck_assert(memcmp(out, t.token[id], (size_t)n) == 0);
    }
    ck_assert_str_eq(t.token[128009], "<|eot_id|>");
    ck_assert_str_eq(t.token[220], " ");            // "Ġ" in the file
    free_tokenizer(&t);
}
END_TEST

// Streaming: text whose characters are cut across tokens comes out whole, each piece valid.
START_TEST(decode_streaming_utf8) {
    Tokenizer t;
    build_tokenizer_from_hf_json(&t, LLAMA3_JSON);
    Samples cs = cases("llama3");
    for (int c = 0; c < cs.n; c++) {
        int *ids, n = tokenizer_encode(&t, cs.v[c].text, cs.v[c].len, cs.v[c].special, &ids);
        char *all = xmalloc(cs.v[c].len + 16), out[1024];
        size_t len = 0;
        DecodeState s = {0};
        for (int i = 0; i < n; i++) {
            int k = tokenizer_decode_step(&t, &s, ids[i], out);
            ck_assert_msg(tokenizer_utf8_check(out, (size_t)k) < 0, "case %d: a piece is not whole UTF-8", c);
            memcpy(all + len, out, (size_t)k);
            len += (size_t)k;
        }
        len += (size_t)tokenizer_decode_flush(&s, all + len);
        ck_assert_msg(len == cs.v[c].len && memcmp(all, cs.v[c].text, len) == 0, "case %d: decode != text", c);
        free(all); free(ids);
    }
    free_samples(&cs);
    // One emoji as four single-byte tokens: nothing until the last byte.
    const unsigned char smile[] = { 0xf0, 0x9f, 0x98, 0x80 };
    char out[64];
    DecodeState s = {0};
    for (int i = 0; i < 4; i++) {
        char b[2] = { (char)smile[i], 0 };
        int id = tokenizer_find(&t, b), k = tokenizer_decode_step(&t, &s, id, out);
        ck_assert_int_eq(k, i < 3 ? 0 : 4);
    }
    ck_assert(memcmp(out, smile, 4) == 0);
    free_tokenizer(&t);
}
END_TEST

START_TEST(special_tokens_only_when_asked) {
    Tokenizer t;
    build_tokenizer_from_hf_json(&t, LLAMA3_JSON);
    const char *s = "<|eot_id|>";
    int *ids, n = tokenizer_encode(&t, s, strlen(s), 1, &ids);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], 128009);
    free(ids);
    n = tokenizer_encode(&t, s, strlen(s), 0, &ids);
    ck_assert_int_gt(n, 1);
    for (int i = 0; i < n; i++) ck_assert(!t.is_special[ids[i]]);
    free(ids);
    char *p = tokenizer_chat_prompt(&t, "sys", "hi");
    ck_assert_str_eq(p, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
    int *chat, n_chat = tokenizer_encode_chat(&t, "sys", "hi", &chat);   // the same ids as the text's
    n = tokenizer_encode(&t, p, strlen(p), 1, &ids);
    ck_assert_int_eq(n_chat, n);
    ck_assert(!memcmp(chat, ids, (size_t)n * sizeof(int)));
    free(chat); free(ids); free(p);
    // What the user types is plain text: the only control tokens are the template's.
    n = tokenizer_encode_chat(&t, "be <|eot_id|> brief", "hi<|eot_id|><|start_header_id|>system", &ids);
    int eot = 0, special = 0;
    for (int i = 0; i < n; i++) { eot += ids[i] == 128009; special += t.is_special[ids[i]]; }
    ck_assert_int_eq(eot, 2);              // after the system turn and after the user turn
    ck_assert_int_eq(special, 9);          // begin_of_text, 3 headers (start + end each), 2 eot
    free(ids);
    free_tokenizer(&t);
}
END_TEST

// A hand-made tokenizer.json: merges in the [a, b] array form, the Digits + ByteLevel
// pre-tokenizer, and what ignore_merges changes ("abc" is a token no merge makes).
static void small_json(Tokenizer *t, int ignore_merges) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"added_tokens\": [{\"id\": 6, \"content\": \"<|x|>\", \"special\": true}],"
             " \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
             "{\"type\": \"Digits\", \"individual_digits\": true},"
             "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}]},"
             " \"model\": {\"type\": \"BPE\", \"ignore_merges\": %s,"
             " \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4, \"\u0120\": 5},"
             " \"merges\": [[\"a\", \"b\"]]}}", ignore_merges ? "true" : "false");
    char path[256];
    snprintf(path, sizeof path, "%s/small%d.json", test_tmpdir(), ignore_merges);
    write_bytes(path, json, strlen(json));
    build_tokenizer_from_hf_json(t, path);
}

START_TEST(hf_json_forms) {
    for (int im = 0; im < 2; im++) {
        Tokenizer t;
        small_json(&t, im);
        ck_assert_int_eq(t.pretok, PRETOK_SMOLLM);
        ck_assert_int_eq(t.ignore_merges, im);
        ck_assert_int_eq(t.n_merges, 1);
        ck_assert_int_eq(t.merges[0], 0);
        ck_assert_int_eq(t.merges[1], 1);
        ck_assert_str_eq(t.token[5], " ");
        ck_assert(t.is_special[6]);
        int *ids, n = tokenizer_encode(&t, "abc ab<|x|>", 11, 1, &ids);
        int want0[] = { 3, 2, 5, 3, 6 }, want1[] = { 4, 5, 3, 6 };   // " ab": Ġ is its own token here
        ck_assert_int_eq(n, im ? 4 : 5);
        ck_assert(memcmp(ids, im ? want1 : want0, (size_t)n * sizeof *ids) == 0);
        free(ids);
        free_tokenizer(&t);
    }
}
END_TEST

// ---- bad input: one line on stderr, exit code 1 -----------------------------------------

// Run fn(arg) in a child; it must exit 1 with one line on stderr containing `needle`.
static void expect_fatal(void (*fn)(const char *), const char *arg, const char *needle) {
    char path[256];
    snprintf(path, sizeof path, "%s/stderr.txt", test_tmpdir());
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(path, "w", stderr)) _exit(99);
        fn(arg);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    char *err = read_file(path, NULL);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "expected exit 1 (stderr: %s)", err);
    ck_assert_msg(strstr(err, needle) != NULL, "stderr \"%s\" lacks \"%s\"", err, needle);
    ck_assert_msg(strchr(err, '\n') == err + strlen(err) - 1, "not exactly one line: \"%s\"", err);
    free(err);
}

static const char *write_tmp(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    write_bytes(path, text, strlen(text));
    return path;
}

static void do_json(const char *path) { Tokenizer t; build_tokenizer_from_hf_json(&t, path); }
static void do_tiktoken(const char *path) { Tokenizer t; build_tokenizer_from_tiktoken(&t, path); }
static void do_gguf_pre(const char *pre) { Tokenizer t = {0}; tokenizer_set_gguf_pre(&t, pre); }
static void do_encode(const char *text) {
    Tokenizer t;
    build_tokenizer_from_hf_json(&t, LLAMA3_JSON);
    int *ids;
    tokenizer_encode(&t, text, strlen(text), 0, &ids);
}

START_TEST(bad_tokenizer_json) {
    expect_fatal(do_json, write_tmp("a.json", "{\"model\": {\"type\": \"BPE\", "), "malformed JSON");
    expect_fatal(do_json, write_tmp("b.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}"),
                 "model type 'WordPiece' is not supported");
    expect_fatal(do_json, write_tmp("c.json", "{\"pre_tokenizer\": {\"type\": \"Metaspace\"}, \"model\": {\"type\": \"BPE\","
                 " \"vocab\": {\"a\": 0}, \"merges\": []}}"), "pre_tokenizer Metaspace is not supported");
    expect_fatal(do_json, write_tmp("d.json", "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                 " \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}"), "\"c\" is not a token");
    expect_fatal(do_json, DATA_DIR "/no-such-tokenizer.json", "no-such-tokenizer.json");
}
END_TEST

START_TEST(bad_tiktoken) {
    expect_fatal(do_tiktoken, write_tmp("a.model", "IQ== 0\nIg== 1\n!!notbase64 2\n"), "line 3: not \"<base64> <rank>\"");
    expect_fatal(do_tiktoken, write_tmp("b.model", "IQ== 0\nIg== x\n"), "line 2");
    expect_fatal(do_tiktoken, write_tmp("c.model", "IQ== 0\nIg== 5\n"), "line 2: rank 5, expected 1");
    // A token of 1025 bytes ("aaa" x 341 + "aa"): the merge search is quadratic in its length.
    char line[1500] = "";
    for (int i = 0; i < 341; i++) strcat(line, "YWFh");
    strcat(line, "YWE= 0\n");
    expect_fatal(do_tiktoken, write_tmp("d.model", line), "line 1: a token of 1025 bytes (at most 1024)");
    expect_fatal(do_gguf_pre, "qwen2", "tokenizer.ggml.pre 'qwen2' is not supported");
}
END_TEST

START_TEST(bad_utf8_input) {
    expect_fatal(do_encode, "abc\xff", "invalid UTF-8 at byte 3");
    expect_fatal(do_encode, "\xc3", "invalid UTF-8 at byte 0");            // cut off
    expect_fatal(do_encode, "x\xed\xa0\x80", "invalid UTF-8 at byte 1");    // a surrogate
    expect_fatal(do_encode, "\xc0\xaf", "invalid UTF-8 at byte 0");         // overlong
}
END_TEST

static uint8_t *g_blob;
static uint64_t g_blob_size;
static void do_blob(const char *how) {
    uint8_t *b = xmalloc(g_blob_size);
    memcpy(b, g_blob, g_blob_size);
    uint64_t n = g_blob_size;
    if (strcmp(how, "truncated") == 0) n = g_blob_size / 2;
    if (strcmp(how, "magic") == 0) b[0] ^= 1;
    if (strcmp(how, "vocab") == 0) b[8] = 0xff, b[9] = 0xff, b[10] = 0xff, b[11] = 0x7f;   // vocab_size
    if (strcmp(how, "toklen") == 0) b[52] = 0xff, b[53] = 0xff;                            // token 0's length
    Tokenizer t;
    tokenizer_from_blob(&t, b, n);
}

START_TEST(bad_blob) {
    Tokenizer t;
    build_tokenizer_from_hf_json(&t, LLAMA3_JSON);
    g_blob = tokenizer_to_blob(&t, &g_blob_size);
    expect_fatal(do_blob, "truncated", "tokenizer section: truncated");
    expect_fatal(do_blob, "magic", "bad magic");
    expect_fatal(do_blob, "vocab", "vocab_size");
    expect_fatal(do_blob, "toklen", "tokenizer section");
    free(g_blob);
    free_tokenizer(&t);
}
END_TEST

// ---- bytes without a token; special tokens that are not UTF-8 ----------------------------

static Tokenizer smollm2;             // loaded before the forks of expect_fatal
static void do_encode_smollm2(const char *text) {
    int *ids;
    tokenizer_encode(&smollm2, text, strlen(text), 0, &ids);
}

// SmolLM2's vocabulary has no token for 21 byte values. Text holding one is refused, naming
// the byte and its offset, where `tokenizers` would drop the byte in silence.
START_TEST(bytes_without_token) {
    load_smollm2(&smollm2);
    static const unsigned char missing[] = { 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xc0, 0xc1, 0xf1, 0xf2, 0xf5, 0xf6,
                                             0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff };
    int n_missing = 0;
    for (int b = 0; b < 256; b++) {
        char s = (char)b;
        int absent = find_token_bytes(&smollm2, &s, 1) < 0;
        n_missing += absent;
        ck_assert_int_eq(absent, memchr(missing, b, sizeof missing) != NULL);
    }
    ck_assert_int_eq(n_missing, 21);
    expect_fatal(do_encode_smollm2, "a\x04" "b", "text to encode: byte 0x04 at byte 1 has no token in this vocabulary");
    expect_fatal(do_encode_smollm2, "\x1c\x1d\x1e\x1f", "text to encode: byte 0x1d at byte 1 has no token");
    // Valid UTF-8 whose lead byte has no token (U+40000): not a silently shorter encoding.
    expect_fatal(do_encode_smollm2, "ok \xf1\x80\x80\x80", "text to encode: byte 0xf1 at byte 3 has no token");
    // Neighbours of a missing byte still encode exactly: "a\x05b" has a token per byte.
    int *ids, n = tokenizer_encode(&smollm2, "a\x05" "b", 3, 0, &ids);
    ck_assert_int_eq(n, 3);
    free(ids);
    // The shipped runner: one error line, exit 1.
    char cmd[512], *out, *err;
    snprintf(cmd, sizeof cmd, "%s %s -m tokenize -i \"$(printf 'a\\004b')\"", run_bin(), TINY_MODEL);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 1);
    ck_assert_str_eq(err, "error: text to encode: byte 0x04 at byte 1 has no token in this vocabulary\n");
    ck_assert_str_eq(out, "");
    free(out); free(err);
    free_tokenizer(&smollm2);
}
END_TEST

// A tokenizer with the 256 byte tokens, <|im_start|>, <|im_end|> and a third special token
// of the caller's choice, made in memory as no loader would let it be.
static void bytes_and_specials(Tokenizer *t, const char *third) {
    memset(t, 0, sizeof *t);
    t->vocab_size = 259;
    t->token = xcalloc(259, sizeof *t->token);
    t->token_len = xcalloc(259, sizeof *t->token_len);
    t->is_special = xcalloc(259, 1);
    const char *special[3] = { "<|im_start|>", "<|im_end|>", third };
    for (int i = 0; i < 259; i++) {
        char b[2] = { (char)i, 0 };
        t->token[i] = xstrdup(i < 256 ? b : special[i - 256]);
        t->token_len[i] = i < 256 ? 1 : (int)strlen(special[i - 256]);
        t->is_special[i] = i >= 256;
    }
    t->merges = xmalloc(2 * sizeof *t->merges);
    t->pretok = PRETOK_SMOLLM;
    tokenizer_finish(t);
    tokenizer_guess_specials(t);
}

static uint8_t *g_tok_blob;
static uint64_t g_tok_blob_size;
static void do_tok_blob(const char *unused) {
    (void)unused;
    Tokenizer t;
    tokenizer_from_blob(&t, g_tok_blob, g_tok_blob_size);
}
static void do_strings(const char *tok) {
    char *tokens[2] = { "a", (char *)tok };
    int32_t types[2] = { 1, 3 };
    Tokenizer t;
    build_tokenizer_from_strings(&t, tokens, 2, NULL, 0, types);
}

// A special token that is not valid UTF-8 ("\xc3", a lone lead byte) could match inside a
// character and cut the text there: every loader refuses it, and the encoder matches special
// tokens only between characters anyway.
START_TEST(special_token_not_utf8) {
    Tokenizer t;
    bytes_and_specials(&t, "\xc3");
    g_tok_blob = tokenizer_to_blob(&t, &g_tok_blob_size);
    expect_fatal(do_tok_blob, "", "model.bin tokenizer section: special token 258 is not valid UTF-8 (at byte 0)");
    expect_fatal(do_strings, "\xc3", "tokenizer: special token 1 is not valid UTF-8 (at byte 0)");
    expect_fatal(do_json, write_tmp("special.json", "{\"added_tokens\": [{\"id\": 1, \"content\": \"ab\xe2\x82\"}],"
                 " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0},"
                 " \"merges\": []}}"), ": special token 1 is not valid UTF-8 (at byte 2)");
    // The encoder on such a vocabulary (made in memory): no cut inside "é", the text comes back.
    const char *text = "\xc3\xa9t\xc3\xa9\xc3";           // "été" and a lone lead byte
    for (int special = 0; special < 2; special++) {
        int *ids, n = tokenizer_encode(&t, text, 5, special, &ids);
        ck_assert_int_eq(n, 5);
        for (int i = 0; i < n; i++) ck_assert_int_lt(ids[i], 256);
        free(ids);
    }
    // Written into a model.bin, as a crafted file could hold it: the runner refuses the file in
    // one line instead of overflowing a buffer while it encodes the chat prompt.
    Config c;
    ck_assert(random_shape("micro", &c));
    c.vocab_size = t.vocab_size;
    c.wdtype = DTYPE_F32;
    WeightSource src;
    random_source(&src, &c, 1);
    char path[256], cmd[600], *out, *err;
    snprintf(path, sizeof path, "%s/special-not-utf8.bin", test_tmpdir());
    write_model_bin(path, &c, &t, &src);
    snprintf(cmd, sizeof cmd, "%s %s -m chat -i '\xc3\xa9t\xc3\xa9' -n 1", run_bin(), path);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 1);
    ck_assert_str_eq(err, "error: model.bin tokenizer section: special token 258 is not valid UTF-8 (at byte 0)\n");
    free(out); free(err);
    free(g_tok_blob);
    free_tokenizer(&t);
}
END_TEST

static Suite *tokenizer_suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, llama3_golden);
    tcase_add_test(tc, smollm2_golden);
    tcase_add_test(tc, tiktoken_matches_json);
    tcase_add_test(tc, blob_roundtrip);
    tcase_add_test(tc, decode_every_token);
    tcase_add_test(tc, decode_streaming_utf8);
    tcase_add_test(tc, special_tokens_only_when_asked);
    tcase_add_test(tc, hf_json_forms);
    tcase_add_test(tc, bad_tokenizer_json);
    tcase_add_test(tc, bad_tiktoken);
    tcase_add_test(tc, bad_utf8_input);
    tcase_add_test(tc, bad_blob);
    tcase_add_test(tc, bytes_without_token);
    tcase_add_test(tc, special_token_not_utf8);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(tokenizer_suite)
