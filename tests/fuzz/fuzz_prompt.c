// fuzz_prompt.c: prompt text, as the runner takes it from -i or -f, through the tokenizers
// of the two model families: SmolLM2 (ChatML, Digits + GPT-2 pre-tokenizer, 21 byte values
// without a token) and Llama-3 (its own pre-tokenizer, ignore_merges). For each input:
//   - the UTF-8 check agrees with an independent reading of RFC 3629's byte table;
//   - fuzz_check_tokenizer: encode plain and with special tokens, decode (streaming), the
//     text back byte for byte, or the one error line for a byte without a token;
//   - the same for the chat prompt built around the text, whose ids hold no special token but
//     the template's own, whatever the text.
// The tokenizers come from $KVT_FUZZ_SMOLLM2 (a model.bin, GGUF or tokenizer file; default
// models/tiny.bin) and $KVT_FUZZ_LLAMA3 (default data/llama3/tokenizer.json).
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "../../export/export.h"
#include "../../util/util.h"

static Tokenizer tokenizers[2];

static const char *source(const char *env, const char *a, const char *b) {
    const char *p = getenv(env);
    if (p && *p) return p;
    return access(a, R_OK) == 0 || !b ? a : b;
}

static void load(void) {
    static int done;
    if (done) return;
    done = 1;
    load_any_tokenizer(&tokenizers[0], source("KVT_FUZZ_SMOLLM2", "models/tiny.bin", NULL));
    load_any_tokenizer(&tokenizers[1], source("KVT_FUZZ_LLAMA3", "data/llama3/tokenizer.json", NULL));
}

// Offset of the first byte that does not start a well-formed sequence, or -1 (RFC 3629,
// Table 3-7 of the Unicode standard: the allowed range of each byte after the first).
static int64_t utf8_reference(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        int len; uint8_t lo = 0x80, hi = 0xbf;
        if (b <= 0x7f) { i++; continue; }
        if (b >= 0xc2 && b <= 0xdf) len = 2;
        else if (b >= 0xe0 && b <= 0xef) { len = 3; if (b == 0xe0) lo = 0xa0; if (b == 0xed) hi = 0x9f; }
        else if (b >= 0xf0 && b <= 0xf4) { len = 4; if (b == 0xf0) lo = 0x90; if (b == 0xf4) hi = 0x8f; }
        else return (int64_t)i;
        if (i + (size_t)len > n || s[i + 1] < lo || s[i + 1] > hi) return (int64_t)i;
        for (int k = 2; k < len; k++)
            if (s[i + (size_t)k] < 0x80 || s[i + (size_t)k] > 0xbf) return (int64_t)i;
        i += (size_t)len;
    }
    return -1;
}

typedef struct { const Tokenizer *t; const char *user; char *chat; int *ids, n; } Chat;
static void do_chat(void *p) {
    Chat *c = p;
    c->chat = tokenizer_chat_prompt(c->t, NULL, c->user);
    c->n = tokenizer_encode_chat(c->t, NULL, c->user, &c->ids);
}

static int n_special(const Tokenizer *t, const int *ids, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += t->is_special[ids[i]];
    return k;
}

static void run(const uint8_t *data, size_t size) {
    load();
    int64_t bad = tokenizer_utf8_check((const char *)data, size), want = utf8_reference(data, size);
    if (bad != want) fuzz_fail("tokenizer_utf8_check says %lld, RFC 3629 says %lld", (long long)bad, (long long)want);
    char *user = NULL;
    if (bad < 0 && !memchr(data, 0, size)) {     // the chat template takes a C string
        user = xmalloc(size + 1);
        memcpy(user, data, size);
        user[size] = 0;
    }
    for (int i = 0; i < 2; i++) {
        fuzz_check_tokenizer(&tokenizers[i], data, size);
        Chat c = { .t = &tokenizers[i], .user = user };
        if (user && fuzz_call(do_chat, &c)) {
            fuzz_check_tokenizer(&tokenizers[i], (const uint8_t *)c.chat, strlen(c.chat));
            // whatever the user typed, the only special tokens are the template's own
            Chat plain = { .t = &tokenizers[i], .user = "x" };
            do_chat(&plain);
            if (n_special(plain.t, c.ids, c.n) != n_special(plain.t, plain.ids, plain.n))
                fuzz_fail("chat: %d special tokens with this user text, %d in the template", n_special(plain.t, c.ids, c.n),
                          n_special(plain.t, plain.ids, plain.n));
            free(c.chat); free(c.ids); free(plain.chat); free(plain.ids);
        }
    }
    free(user);
}

FUZZ_TARGET(prompt)
