// tokenizer.c: streaming decode, chat templates, and the model-specific settings
// (GGUF pre-tokenizer names, special-token roles).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tok_internal.h"
#include "../util/util.h"

// ---- streaming decode -------------------------------------------------------------------
// A token may end in the middle of a UTF-8 character (byte-level BPE splits e.g. emoji
// across tokens). We hold back the bytes of an unfinished character until it completes.

static int utf8_seq_len(unsigned char b) {     // from the lead byte; 0 if it can't lead
    if (b < 0x80) return 1;
    if ((b & 0xe0) == 0xc0) return 2;
    if ((b & 0xf0) == 0xe0) return 3;
    if ((b & 0xf8) == 0xf0) return 4;
    return 0;
}

int tokenizer_decode_step(const Tokenizer *t, DecodeState *s, int id, char *out) {
    if (id < 0 || id >= t->vocab_size) fatal("decode: token id %d outside the vocabulary (%d)", id, t->vocab_size);
    int n_in = s->n_pending + t->token_len[id];
    char *in = xmalloc((size_t)n_in + 1);
    memcpy(in, s->pending, (size_t)s->n_pending);
    memcpy(in + s->n_pending, t->token[id], (size_t)t->token_len[id]);
    int n_out = 0, i = 0;
    s->n_pending = 0;
    while (i < n_in) {
        int len = utf8_seq_len((unsigned char)in[i]), ok = len > 0;
        for (int k = 1; ok && k < len && i + k < n_in; k++) ok = ((unsigned char)in[i + k] & 0xc0) == 0x80;
        if (ok && i + len > n_in) {                  // a valid start, cut off: wait for more
            s->n_pending = n_in - i;
            memcpy(s->pending, in + i, (size_t)s->n_pending);
            break;
        }
        if (!ok) len = 1;                            // can never be a character: pass it through
        memcpy(out + n_out, in + i, (size_t)len);
        n_out += len;
        i += len;
    }
    out[n_out] = '\0';
    free(in);
    return n_out;
}

int tokenizer_decode_flush(DecodeState *s, char *out) {
    int n = s->n_pending;
    memcpy(out, s->pending, (size_t)n);
    out[n] = '\0';
    s->n_pending = 0;
    return n;
}

// ---- chat templates ---------------------------------------------------------------------

static char *concat(const char *const *parts, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(parts[i]);
    char *s = xmalloc(len), *p = s;
    for (int i = 0; i < n; i++) { size_t k = strlen(parts[i]); memcpy(p, parts[i], k); p += k; }
    *p = '\0';
    return s;
}

// Jinja's `| trim` in the Llama-3 template (ASCII whitespace).
static char *trimmed(const char *s) {
    while (*s && strchr(" \t\n\r\v\f", *s)) s++;
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\n\r\v\f", s[n - 1])) n--;
    char *r = xmalloc(n + 1);
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

// A chat prompt as parts, in order: template text (in which special-token strings are the
// model's special tokens) or the user's and the system text (in which they are plain text).
typedef struct {
    const char *part[8];
    int is_template[8];
    int n;
    char *owned[2];            // trimmed copies (Llama-3), freed by free_chat_parts
} ChatParts;

static void add_part(ChatParts *c, const char *text, int is_template) {
    c->part[c->n] = text;
    c->is_template[c->n++] = is_template;
}

static void build_chat_parts(ChatParts *c, const Tokenizer *t, const char *system, const char *user) {
    memset(c, 0, sizeof *c);
    if (t->chat == CHAT_CHATML) {
        // SmolLM2's tokenizer.chat_template: with no system message first, it inserts this one.
        add_part(c, "<|im_start|>system\n", 1);
        add_part(c, system ? system : "You are a helpful AI assistant named SmolLM, trained by Hugging Face", !system);
        add_part(c, "<|im_end|>\n<|im_start|>user\n", 1);
        add_part(c, user, 0);
        add_part(c, "<|im_end|>\n<|im_start|>assistant\n", 1);
        return;
    }
    if (t->chat == CHAT_LLAMA3) {
        // Meta-Llama-3-Instruct's template: bos, then each turn as header + trimmed content + eot.
        add_part(c, "<|begin_of_text|>", 1);
        if (system) {
            add_part(c, "<|start_header_id|>system<|end_header_id|>\n\n", 1);
            add_part(c, c->owned[0] = trimmed(system), 0);
            add_part(c, "<|eot_id|>", 1);
        }
        add_part(c, "<|start_header_id|>user<|end_header_id|>\n\n", 1);
        add_part(c, c->owned[1] = trimmed(user), 0);
        add_part(c, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", 1);
        return;
    }
    fatal("chat: this model's tokenizer has no chat template");
}

static void free_chat_parts(ChatParts *c) { free(c->owned[0]); free(c->owned[1]); }

char *tokenizer_chat_prompt(const Tokenizer *t, const char *system, const char *user) {
    ChatParts c;
    build_chat_parts(&c, t, system, user);
    char *s = concat(c.part, c.n);
    free_chat_parts(&c);
    return s;
}

int tokenizer_encode_chat(const Tokenizer *t, const char *system, const char *user, int **ids) {
    ChatParts c;
    build_chat_parts(&c, t, system, user);
    char *text = concat(c.part, c.n);
    size_t len = strlen(text), at = 0;
    uint8_t *mask = xmalloc(len + 1);
    for (int i = 0; i < c.n; i++) {
        size_t n = strlen(c.part[i]);
        memset(mask + at, c.is_template[i], n);
        at += n;
    }
    int n = tokenizer_encode_template(t, text, len, mask, ids);
    free(mask); free(text);
    free_chat_parts(&c);
    return n;
}

// ---- model-specific settings ------------------------------------------------------------

void tokenizer_set_gguf_pre(Tokenizer *t, const char *pre) {
    // llama.cpp's names (tokenizer.ggml.pre). llama.cpp sets ignore_merges for llama-bpe.
    if (strcmp(pre, "gpt2") == 0) { t->pretok = PRETOK_GPT2; t->ignore_merges = 0; }
    else if (strcmp(pre, "smollm") == 0) { t->pretok = PRETOK_SMOLLM; t->ignore_merges = 0; }
    else if (strcmp(pre, "llama-bpe") == 0) { t->pretok = PRETOK_LLAMA3; t->ignore_merges = 1; }
    else fatal("tokenizer.ggml.pre '%s' is not supported (known: gpt2, smollm, llama-bpe)", printable(pre));
}

void tokenizer_guess_specials(Tokenizer *t) {
    int header = tokenizer_find(t, "<|start_header_id|>"), eot = tokenizer_find(t, "<|eot_id|>");
    int im_start = tokenizer_find(t, "<|im_start|>"), im_end = tokenizer_find(t, "<|im_end|>");
    t->bos_id = t->eos_id = t->eot_id = t->eom_id = -1;
    t->chat = CHAT_NONE;
    t->add_bos = 0;
    if (header >= 0 && eot >= 0) {                  // Llama-3: bos on every prompt
        t->chat = CHAT_LLAMA3;
        t->bos_id = tokenizer_find(t, "<|begin_of_text|>");
        t->eos_id = tokenizer_find(t, "<|end_of_text|>");
        t->eot_id = eot;
        t->eom_id = tokenizer_find(t, "<|eom_id|>");     // Llama-3.1 tool calls
        t->add_bos = t->bos_id >= 0;
    } else if (im_start >= 0 && im_end >= 0) {      // ChatML (SmolLM2: add_bos_token false)
        t->chat = CHAT_CHATML;
        t->bos_id = im_start;
        t->eot_id = im_end;
        t->eos_id = tokenizer_find(t, "<|endoftext|>");
        if (t->eos_id < 0) t->eos_id = im_end;
    } else {
        t->eos_id = tokenizer_find(t, "<|endoftext|>");
    }
}
