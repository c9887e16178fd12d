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

char *tokenizer_chat_prompt(const Tokenizer *t, const char *system, const char *user) {
    if (t->chat == CHAT_CHATML) {
        // SmolLM2's tokenizer.chat_template: with no system message first, it inserts this one.
        if (!system) system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
        const char *p[] = { "<|im_start|>system\n", system, "<|im_end|>\n<|im_start|>user\n", user,
                            "<|im_end|>\n<|im_start|>assistant\n" };
        return concat(p, 5);
    }
    if (t->chat == CHAT_LLAMA3) {
        // Meta-Llama-3-Instruct's template: bos, then each turn as header + trimmed content + eot.
        char *u = trimmed(user), *sys = system ? trimmed(system) : NULL, *r;
        const char *head = "<|begin_of_text|>";
        const char *turn[] = { "<|start_header_id|>user<|end_header_id|>\n\n", u,
                               "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" };
        if (sys) {
            const char *p[] = { head, "<|start_header_id|>system<|end_header_id|>\n\n", sys, "<|eot_id|>",
                                turn[0], turn[1], turn[2] };
            r = concat(p, 7);
        } else {
            const char *p[] = { head, turn[0], turn[1], turn[2] };
            r = concat(p, 4);
        }
        free(u); free(sys);
        return r;
    }
    fatal("chat: this model's tokenizer has no chat template");
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
