// bpe.c: byte-level BPE. The lookup tables (built once in tokenizer_finish) and encoding.
//
// Encoding text: (1) with parse_special, cut out the special-token strings; (2) cut the rest
// into pre-tokens (pretokenize.c); (3) each pre-token starts as one token per byte and the
// adjacent pair with the lowest merge rank is merged, again and again, until no adjacent
// pair has a merge (GPT-2 / tiktoken / Hugging Face BPE all do this; ties go to the leftmost).
// Tokens are stored as raw bytes; the GPT-2 byte->unicode map only matters when reading
// token strings from tokenizer.json / GGUF (build.c).
#include <stdlib.h>
#include <string.h>
#include "tok_internal.h"
#include "../util/util.h"

struct TokIndex {
    int byte_to_id[256];     // token of each single byte, -1 if the vocab has none
    int *tok_slot;           // [tok_mask + 1] open-addressing table of non-special ids, -1 empty
    uint64_t tok_mask;
    uint64_t *merge_key;     // [merge_mask + 1] (left << 32 | right), UINT64_MAX empty
    int32_t *merge_rank;     // [merge_mask + 1] lower merges first
    int32_t *merge_result;   // [merge_mask + 1] id of the merged token
    uint64_t merge_mask;
    int *special;            // [n_special] special ids, longest first (longest match wins)
    int n_special;
    uint8_t special_first[256];   // 1 if some special token starts with this byte
};

// ---- the GPT-2 byte <-> unicode map -----------------------------------------------------
// Printable bytes stand for themselves; the other 68 (0..32, 127..160, 173) are moved, in
// order, to U+0100..U+0143, so that every token is a printable string (space -> 'Ġ' U+0120).
uint32_t byte_to_unicode(int b) {
    if (b <= 32) return 256 + (uint32_t)b;
    if (b >= 127 && b <= 160) return 289 + (uint32_t)(b - 127);
    if (b == 173) return 323;
    return (uint32_t)b;
}

int unicode_to_byte(uint32_t c) {
    if ((c >= 33 && c <= 126) || (c >= 161 && c <= 255 && c != 173)) return (int)c;
    if (c >= 256 && c <= 288) return (int)(c - 256);
    if (c >= 289 && c <= 322) return (int)(c - 289 + 127);
    if (c == 323) return 173;
    return -1;
}

// ---- hash tables -----------------------------------------------------------------------
static uint64_t hash_bytes(const char *s, size_t n) {   // FNV-1a
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

static uint64_t hash_pair(uint64_t key) {               // a 64-bit mixer (splitmix64 finaliser)
    key ^= key >> 30; key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 27; key *= 0x94d049bb133111ebull;
    return key ^ (key >> 31);
}

static uint64_t table_size(uint64_t n) {                 // power of two, at most half full
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

// Id of the non-special token with bytes s[0..n), or -1.
int find_token_bytes(const Tokenizer *t, const char *s, size_t n) {
    const TokIndex *x = t->index;
    for (uint64_t h = hash_bytes(s, n) & x->tok_mask;; h = (h + 1) & x->tok_mask) {
        int id = x->tok_slot[h];
        if (id < 0) return -1;
        if ((size_t)t->token_len[id] == n && memcmp(t->token[id], s, n) == 0) return id;
    }
}

int tokenizer_find(const Tokenizer *t, const char *s) {
    size_t n = strlen(s);
    int id = find_token_bytes(t, s, n);
    for (int i = 0; id < 0 && i < t->index->n_special; i++) {
        int sid = t->index->special[i];
        if ((size_t)t->token_len[sid] == n && memcmp(t->token[sid], s, n) == 0) id = sid;
    }
    return id;
}

void index_tokens(Tokenizer *t) {
    if (t->index) fatal("tokenizer: index built twice");
    TokIndex *x = xcalloc(1, sizeof *x);
    t->index = x;
    uint64_t cap = table_size((uint64_t)t->vocab_size);
    x->tok_mask = cap - 1;
    x->tok_slot = xmalloc(cap * sizeof *x->tok_slot);
    memset(x->tok_slot, 0xff, cap * sizeof *x->tok_slot);          // all -1
    x->special = xmalloc(((size_t)t->vocab_size + 1) * sizeof *x->special);
    for (int id = 0; id < t->vocab_size; id++) {
        if (t->token_len[id] <= 0) continue;                     // a hole in the id space
        if (t->is_special[id]) {
            // Insertion by length, longest first, so that the longest match wins (a few
            // hundred special tokens at most).
            int k = x->n_special++;
            for (; k > 0 && t->token_len[x->special[k - 1]] < t->token_len[id]; k--) x->special[k] = x->special[k - 1];
            x->special[k] = id;
            x->special_first[(unsigned char)t->token[id][0]] = 1;
            continue;
        }
        if (find_token_bytes(t, t->token[id], (size_t)t->token_len[id]) >= 0) continue;   // duplicate: keep the first
        uint64_t h = hash_bytes(t->token[id], (size_t)t->token_len[id]) & x->tok_mask;
        while (x->tok_slot[h] >= 0) h = (h + 1) & x->tok_mask;
        x->tok_slot[h] = id;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        x->byte_to_id[b] = find_token_bytes(t, &c, 1);
    }
}

void index_merges(Tokenizer *t) {
    TokIndex *x = t->index;
    uint64_t cap = table_size((uint64_t)t->n_merges);
    x->merge_mask = cap - 1;
    x->merge_key = xmalloc(cap * sizeof *x->merge_key);
    memset(x->merge_key, 0xff, cap * sizeof *x->merge_key);      // all UINT64_MAX
    x->merge_rank = xmalloc(cap * sizeof *x->merge_rank);
    x->merge_result = xmalloc(cap * sizeof *x->merge_result);
    char *buf = NULL;
    size_t buf_cap = 0;
    for (int i = 0; i < t->n_merges; i++) {
        int l = t->merges[2 * i], r = t->merges[2 * i + 1];
        if (l < 0 || l >= t->vocab_size || r < 0 || r >= t->vocab_size)
            fatal("tokenizer: merge %d has a token id outside the vocabulary", i);
        size_t ll = (size_t)t->token_len[l], lr = (size_t)t->token_len[r];
        if (ll + lr > buf_cap) { buf_cap = 2 * (ll + lr); buf = xrealloc(buf, buf_cap); }
        memcpy(buf, t->token[l], ll);
        memcpy(buf + ll, t->token[r], lr);
        int result = find_token_bytes(t, buf, ll + lr);
        if (result < 0) fatal("tokenizer: merge %d (ids %d + %d) makes a token that is not in the vocabulary", i, l, r);
        uint64_t key = (uint64_t)l << 32 | (uint32_t)r;
        uint64_t h = hash_pair(key) & x->merge_mask;
        while (x->merge_key[h] != UINT64_MAX && x->merge_key[h] != key) h = (h + 1) & x->merge_mask;
        if (x->merge_key[h] == key) continue;                    // duplicate merge: the first one counts
        x->merge_key[h] = key;
        x->merge_rank[h] = t->rank_by_result ? result : i;
        x->merge_result[h] = result;
    }
    free(buf);
}

static void free_index(Tokenizer *t) {
    TokIndex *x = t->index;
    if (!x) return;
    free(x->tok_slot); free(x->merge_key); free(x->merge_rank); free(x->merge_result); free(x->special);
    free(x);
    t->index = NULL;
}

// (Re)build both tables: callers that change tokens or merges after a builder call it again.
void tokenizer_finish(Tokenizer *t) {
    free_index(t);
    index_tokens(t);
    index_merges(t);
}

// Rank and result of merging (l, r); returns 0 if there is no such merge.
static int find_merge(const TokIndex *x, int l, int r, int *rank, int *result) {
    uint64_t key = (uint64_t)l << 32 | (uint32_t)r;
    for (uint64_t h = hash_pair(key) & x->merge_mask;; h = (h + 1) & x->merge_mask) {
        if (x->merge_key[h] == UINT64_MAX) return 0;
        if (x->merge_key[h] == key) { *rank = x->merge_rank[h]; *result = x->merge_result[h]; return 1; }
    }
}

// ---- BPE on one pre-token ---------------------------------------------------------------
typedef struct { int *v; size_t n, cap; } IdVec;

static void push_id(IdVec *o, int id) {
    if (o->n == o->cap) { o->cap = o->cap ? 2 * o->cap : 256; o->v = xrealloc(o->v, o->cap * sizeof *o->v); }
    o->v[o->n++] = id;
}

// Scratch space reused across pre-tokens: the symbols as a linked list, and a min-heap of
// candidate merges ordered by (rank, position). A candidate goes stale when a neighbour
// merges first; it is then skipped when popped. O(n log n) even for very long pre-tokens.
typedef struct { int rank, pos; } Cand;
typedef struct {
    int *id, *prev, *next;   // [cap] per symbol; id -1 once merged into its left neighbour
    Cand *heap;              // [3 * cap]: n - 1 initial candidates + 2 per merge
    size_t n_heap, cap;
} BpeScratch;

static int cand_less(Cand a, Cand b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void heap_push(BpeScratch *s, Cand c) {
    size_t i = s->n_heap++;
    while (i > 0 && cand_less(c, s->heap[(i - 1) / 2])) { s->heap[i] = s->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    s->heap[i] = c;
}

static Cand heap_pop(BpeScratch *s) {
    Cand top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_heap) break;
        if (c + 1 < s->n_heap && cand_less(s->heap[c + 1], s->heap[c])) c++;
        if (!cand_less(s->heap[c], last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap) s->heap[i] = last;
    return top;
}

static void push_pair(const TokIndex *x, BpeScratch *s, int pos) {
    int q, rank, result;
    if (pos < 0 || (q = s->next[pos]) < 0) return;
    if (find_merge(x, s->id[pos], s->id[q], &rank, &result)) heap_push(s, (Cand){rank, pos});
}

// BPE of the pre-token text[start, end) (offsets into the whole text, for messages).
static void bpe_piece(const Tokenizer *t, BpeScratch *s, const char *text, size_t start, size_t end, IdVec *out) {
    const TokIndex *x = t->index;
    const char *p = text + start;
    size_t n = end - start;
    if (t->ignore_merges || n == 1) {
        int id = find_token_bytes(t, p, n);
        if (id >= 0) { push_id(out, id); return; }
    }
    if (n > s->cap) {
        s->cap = 2 * n;
        s->id = xrealloc(s->id, s->cap * sizeof *s->id);
        s->prev = xrealloc(s->prev, s->cap * sizeof *s->prev);
        s->next = xrealloc(s->next, s->cap * sizeof *s->next);
        s->heap = xrealloc(s->heap, 3 * s->cap * sizeof *s->heap);
    }
    // One symbol per byte. Some byte-level vocabularies lack a few byte values (SmolLM2 has
    // no token for 21 of them, 0x04 and 0xf1 among them). Hugging Face's BPE drops such a
    // byte without a word when there is no unk token; we refuse the text instead, because
    // losing part of a user's input in silence would change what the model is asked.
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int id = x->byte_to_id[(unsigned char)p[i]];
        if (id < 0)
            fatal("text to encode: byte 0x%02x at byte %zu has no token in this vocabulary", (unsigned char)p[i],
                  start + i);
        s->id[m] = id; s->prev[m] = m - 1; s->next[m] = m + 1;
        m++;
    }
    if (m == 0) return;
    s->next[m - 1] = -1;
    s->n_heap = 0;
    for (int i = 0; i + 1 < m; i++) push_pair(x, s, i);
    while (s->n_heap) {
        Cand c = heap_pop(s);
        int q = s->next[c.pos], rank, result;
        if (s->id[c.pos] < 0 || q < 0 || !find_merge(x, s->id[c.pos], s->id[q], &rank, &result) || rank != c.rank)
            continue;                                            // stale: a neighbour changed
        s->id[c.pos] = result;                                   // merge q into c.pos
        s->id[q] = -1;
        s->next[c.pos] = s->next[q];
        if (s->next[q] >= 0) s->prev[s->next[q]] = c.pos;
        push_pair(x, s, s->prev[c.pos]);
        push_pair(x, s, c.pos);
    }
    for (int i = 0; i >= 0; i = s->next[i]) push_id(out, s->id[i]);
}

// ---- encoding text ----------------------------------------------------------------------
int64_t tokenizer_utf8_check(const char *s, size_t len) {
    uint32_t c;
    for (size_t i = 0; i < len;) {
        int k = utf8_decode((const unsigned char *)s + i, len - i, &c);
        if (k == 0) return (int64_t)i;
        i += (size_t)k;
    }
    return -1;
}

// Plain text text[from, to) (no special tokens): pre-tokenize, then BPE each piece.
static void encode_plain(const Tokenizer *t, BpeScratch *s, const char *text, size_t from, size_t to, IdVec *out) {
    size_t len = to - from;
    if (len == 0) return;
    uint32_t *cp = xmalloc(len * sizeof *cp);
    size_t *off = xmalloc((len + 1) * sizeof *off), *ends = xmalloc(len * sizeof *ends);
    size_t n = 0;
    for (size_t i = from; i < to; n++) {
        off[n] = i;
        int k = utf8_decode((const unsigned char *)text + i, to - i, &cp[n]);
        // tokenizer_encode checked the text and cuts it only between characters, so this
        // cannot happen; were it to, stopping here keeps n within cp[] and off[].
        if (k == 0) fatal("text to encode: invalid UTF-8 at byte %zu", i);
        i += (size_t)k;
    }
    off[n] = to;
    size_t n_pieces = pretokenize(t->pretok, cp, n, ends), start = 0;
    for (size_t k = 0; k < n_pieces; k++) {
        bpe_piece(t, s, text, off[start], off[ends[k]], out);
        start = ends[k];
    }
    free(cp); free(off); free(ends);
}

static int utf8_continuation(unsigned char b) { return (b & 0xc0) == 0x80; }

// The special token that starts at text[i], longest first, or -1. A match must begin and end
// between characters: the loaders accept only special tokens that are valid UTF-8, which can
// match nowhere else, and checking here too keeps the cut text valid whatever the vocabulary.
static int special_at(const Tokenizer *t, const char *text, size_t len, size_t i) {
    const TokIndex *x = t->index;
    if (!x->special_first[(unsigned char)text[i]] || utf8_continuation((unsigned char)text[i])) return -1;
    for (int k = 0; k < x->n_special; k++) {
        int id = x->special[k];
        size_t n = (size_t)t->token_len[id];
        if (n <= len - i && memcmp(text + i, t->token[id], n) == 0 &&
            (i + n == len || !utf8_continuation((unsigned char)text[i + n])))
            return id;
    }
    return -1;
}

// 1 if every byte of text[i, i + n) is template text (is_template == NULL: all text is).
static int in_template(const uint8_t *is_template, size_t i, size_t n) {
    for (size_t j = i; is_template && j < i + n; j++)
        if (!is_template[j]) return 0;
    return 1;
}

// tokenizer_encode, special-token strings recognised (parse_special) only where every byte of
// the string is template text.
static int encode_text(const Tokenizer *t, const char *text, size_t len, int parse_special, const uint8_t *is_template,
                       int **ids) {
    int64_t bad = tokenizer_utf8_check(text, len);
    if (bad >= 0) fatal("text to encode: invalid UTF-8 at byte %lld", (long long)bad);
    IdVec out = {0};
    BpeScratch s = {0};
    size_t seg = 0;                                      // start of the current plain stretch
    for (size_t i = 0; parse_special && i < len; i++) {
        int id = special_at(t, text, len, i);
        if (id < 0 || !in_template(is_template, i, (size_t)t->token_len[id])) continue;
        encode_plain(t, &s, text, seg, i, &out);
        push_id(&out, id);
        i += (size_t)t->token_len[id] - 1;
        seg = i + 1;
    }
    encode_plain(t, &s, text, seg, len, &out);
    free(s.id); free(s.prev); free(s.next); free(s.heap);
    if (out.n > INT32_MAX) fatal("text to encode: more than 2^31 tokens");
    *ids = out.v ? out.v : xmalloc(sizeof(int));
    return (int)out.n;
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int parse_special, int **ids) {
    return encode_text(t, text, len, parse_special, NULL, ids);
}

int tokenizer_encode_template(const Tokenizer *t, const char *text, size_t len, const uint8_t *is_template, int **ids) {
    return encode_text(t, text, len, 1, is_template, ids);
}

void free_tokenizer(Tokenizer *t) {
    for (int i = 0; t->token && i < t->vocab_size; i++) free(t->token[i]);
    free(t->token); free(t->token_len); free(t->is_special); free(t->merges);
    free_index(t);
    memset(t, 0, sizeof *t);
}
