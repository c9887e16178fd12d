// blob.c: the tokenizer section of model.bin. All integers little-endian (like the header).
//
//   u32 magic "KVTK"   u32 version (1)
//   i32 vocab_size, n_merges, bos_id, eos_id, eot_id, eom_id, pretok, chat,
//       ignore_merges, rank_by_result, add_bos
//   vocab_size x { u32 len, u8 is_special, len raw bytes }
//   n_merges   x { i32 left, i32 right }          (rank = index unless rank_by_result)
//
// Reading checks every length against the section size and every value against its range,
// so a corrupted file ends in one clear error, never a crash.
#include <stdlib.h>
#include <string.h>
#include "tok_internal.h"
#include "../util/util.h"

#define TOKBLOB_MAGIC 0x4b54564bu    // "KVTK"
#define TOKBLOB_VERSION 1
#define TOKBLOB_NFIELDS 11

typedef struct { uint8_t *p; uint64_t n, cap; } Writer;

static void put(Writer *w, const void *src, uint64_t n) {
    if (n == 0) return;                 // src may be NULL then (an empty token)
    if (w->n + n > w->cap) { w->cap = 2 * (w->n + n); w->p = xrealloc(w->p, w->cap); }
    memcpy(w->p + w->n, src, n);
    w->n += n;
}
static void put_u32(Writer *w, uint32_t v) {
    uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    put(w, b, 4);
}

uint8_t *tokenizer_to_blob(const Tokenizer *t, uint64_t *size) {
    Writer w = {0};
    int32_t f[TOKBLOB_NFIELDS] = { t->vocab_size, t->n_merges, t->bos_id, t->eos_id, t->eot_id, t->eom_id,
                                   t->pretok, t->chat, t->ignore_merges, t->rank_by_result, t->add_bos };
    put_u32(&w, TOKBLOB_MAGIC);
    put_u32(&w, TOKBLOB_VERSION);
    for (int i = 0; i < TOKBLOB_NFIELDS; i++) put_u32(&w, (uint32_t)f[i]);
    for (int i = 0; i < t->vocab_size; i++) {
        put_u32(&w, (uint32_t)t->token_len[i]);
        put(&w, &t->is_special[i], 1);
        put(&w, t->token[i], (uint64_t)t->token_len[i]);
    }
    for (int i = 0; i < 2 * t->n_merges; i++) put_u32(&w, (uint32_t)t->merges[i]);
    *size = w.n;
    return w.p;
}

typedef struct { const uint8_t *p; uint64_t n, off; } Reader;

#define BAD(...) fatal("model.bin tokenizer section: " __VA_ARGS__)

static const uint8_t *take(Reader *r, uint64_t n, const char *what) {
    if (n > r->n - r->off) BAD("truncated (reading %s at byte %llu of %llu)", what,
                               (unsigned long long)r->off, (unsigned long long)r->n);
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}
static uint32_t get_u32(Reader *r, const char *what) {
    const uint8_t *b = take(r, 4, what);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void check_range(int32_t v, int32_t lo, int32_t hi, const char *what) {
    if (v < lo || v > hi) BAD("%s = %d is outside [%d, %d]", what, v, lo, hi);
}

void tokenizer_from_blob(Tokenizer *t, const uint8_t *blob, uint64_t size) {
    Reader r = { blob, size, 0 };
    if (get_u32(&r, "magic") != TOKBLOB_MAGIC) BAD("bad magic (not a tokenizer)");
    uint32_t version = get_u32(&r, "version");
    if (version != TOKBLOB_VERSION) BAD("version %u is not supported (this build reads %d)", version, TOKBLOB_VERSION);
    int32_t f[TOKBLOB_NFIELDS];
    for (int i = 0; i < TOKBLOB_NFIELDS; i++) f[i] = (int32_t)get_u32(&r, "fields");
    check_range(f[0], 1, 1 << 28, "vocab_size");
    check_range(f[1], 0, 1 << 28, "n_merges");
    static const char *ids[] = { "bos_id", "eos_id", "eot_id", "eom_id" };
    for (int i = 0; i < 4; i++) check_range(f[2 + i], -1, f[0] - 1, ids[i]);
    check_range(f[6], PRETOK_GPT2, PRETOK_LLAMA3, "pretok");
    check_range(f[7], CHAT_NONE, CHAT_LLAMA3, "chat");
    for (int i = 8; i < 11; i++) check_range(f[i], 0, 1, "flag");
    // Every token takes >= 5 bytes and every merge 8: check before allocating.
    if ((uint64_t)f[0] * 5 + (uint64_t)f[1] * 8 > size - r.off) BAD("truncated (%d tokens, %d merges do not fit)", f[0], f[1]);

    memset(t, 0, sizeof *t);
    t->vocab_size = f[0];
    t->token = xcalloc((size_t)f[0], sizeof *t->token);
    t->token_len = xcalloc((size_t)f[0], sizeof *t->token_len);
    t->is_special = xcalloc((size_t)f[0], 1);
    for (int i = 0; i < t->vocab_size; i++) {
        uint32_t len = get_u32(&r, "token length");
        uint8_t special = *take(&r, 1, "token flag");
        if (len > 1u << 20) BAD("token %d has length %u", i, len);
        if (special > 1) BAD("token %d has flag %u", i, special);
        const uint8_t *bytes = take(&r, len, "token bytes");
        // Special tokens are matched in (UTF-8) text: one that is not UTF-8 could split a character.
        int64_t bad = special ? tokenizer_utf8_check((const char *)bytes, len) : -1;
        if (bad >= 0) BAD("special token %d is not valid UTF-8 (at byte %lld)", i, (long long)bad);
        t->token[i] = xmalloc(len + 1);
        memcpy(t->token[i], bytes, len);
        t->token[i][len] = '\0';
        t->token_len[i] = (int)len;
        t->is_special[i] = special;
    }
    t->n_merges = f[1];
    t->merges = xmalloc(2 * (size_t)(f[1] ? f[1] : 1) * sizeof *t->merges);
    for (int i = 0; i < 2 * t->n_merges; i++) {
        t->merges[i] = (int32_t)get_u32(&r, "merges");
        check_range(t->merges[i], 0, t->vocab_size - 1, "merge token id");
    }
    if (r.off != size) BAD("%llu bytes left over after the merges", (unsigned long long)(size - r.off));
    t->bos_id = f[2]; t->eos_id = f[3]; t->eot_id = f[4]; t->eom_id = f[5];
    t->pretok = f[6]; t->chat = f[7];
    t->ignore_merges = f[8]; t->rank_by_result = f[9]; t->add_bos = f[10];
    tokenizer_finish(t);
}
