// fuzz.c: catching fatal(), freeing what a failed call allocated, and the tokenizer
// properties the harnesses share (fuzz.h).
#include "fuzz.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../../tokenizer/tok_internal.h"
#include "../../util/util.h"

// ---- blocks allocated during a call -------------------------------------------------------
// An open-addressing set of pointers (linear probing, deletion by backward shift so that no
// tombstones pile up); `logged` lists the slots filled during the call, so that ending a call
// touches only those. The hooks run inside malloc and must not allocate: the set starts in a
// small static table, which stays in cache (most calls make a few hundred blocks), and moves
// to larger tables from mmap when it fills up, back to the static one when the call ends.

#define SMALL_BITS 12
static uintptr_t small_slot[1 << SMALL_BITS];
static uint32_t small_logged[1 << SMALL_BITS];
static uintptr_t *slot = small_slot;
static uint32_t *logged = small_logged;
static int bits = SMALL_BITS;
static size_t n_logged;
static _Thread_local int tracking;   // only the calling thread's blocks belong to the call

static size_t mask(void) { return ((size_t)1 << bits) - 1; }
static size_t home(uintptr_t p) { return (size_t)(((uint64_t)p >> 4) * 0x9e3779b97f4a7c15ull >> (64 - bits)); }

static void insert(uintptr_t p) {
    size_t h = home(p);
    while (slot[h]) h = (h + 1) & mask();
    slot[h] = p;
    logged[n_logged++] = (uint32_t)h;     // never more entries than slots: see grow()
}

static void *map_pages(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { fputs("fuzz: cannot mmap the block table\n", stderr); abort(); }
    return p;
}

// Four times the slots; the live entries move over (the log restarts with them).
static void grow(void) {
    uintptr_t *old = slot;
    uint32_t *old_log = logged;
    size_t old_logged = n_logged;
    if (bits + 2 > 26) { fputs("fuzz: too many blocks alive in one call\n", stderr); abort(); }
    bits += 2;
    slot = map_pages(sizeof *slot << bits);       // zeroed
    logged = map_pages(sizeof *logged << bits);
    n_logged = 0;
    for (size_t i = 0; i < old_logged; i++)
        if (old[old_log[i]]) { insert(old[old_log[i]]); old[old_log[i]] = 0; }
    if (old != small_slot) {
        munmap(old, sizeof *old << (bits - 2));
        munmap(old_log, sizeof *old_log << (bits - 2));
    }
}

static void track_add(uintptr_t p) {
    if (n_logged + 1 > mask() / 2) grow();        // the log is full long before the table
    insert(p);
}

static void track_remove(uintptr_t p) {
    size_t h = home(p);
    while (slot[h] && slot[h] != p) h = (h + 1) & mask();
    if (!slot[h]) return;                       // allocated before the call: not ours
    // Backward shift: move later entries of the cluster into the hole when their home allows.
    for (size_t hole = h, j = (h + 1) & mask();; j = (j + 1) & mask()) {
        if (!slot[j]) { slot[hole] = 0; return; }
        size_t k = home(slot[j]);
        // j's entry may move to hole iff its home is not in the cyclic range (hole, j].
        int stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
        if (!stays) { slot[hole] = slot[j]; hole = j; }
    }
}

static void malloc_hook(const volatile void *p, size_t n) {
    (void)n;
    if (tracking && p) track_add((uintptr_t)p);
}
static void free_hook(const volatile void *p) {
    if (tracking && p) track_remove((uintptr_t)p);
}

// The sanitizer runtime's hooks (ASan, and so libFuzzer and `make test-asan`); without a
// sanitizer the symbol is absent and a failed call's blocks are simply not freed.
int __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
                                              void (*f)(const volatile void *)) __attribute__((weak));

// Forget every slot filled during the call; with free_them, free their blocks first. Entries
// only ever move into slots that held one before, so the log covers every filled slot.
static void track_end(int free_them) {
    tracking = 0;
    for (size_t i = 0; i < n_logged; i++) {
        uintptr_t p = slot[logged[i]];
        if (p && free_them) free((void *)p);
        slot[logged[i]] = 0;
    }
    if (slot != small_slot) {
        munmap(slot, sizeof *slot << bits);
        munmap(logged, sizeof *logged << bits);
        slot = small_slot;
        logged = small_logged;
        bits = SMALL_BITS;
    }
    n_logged = 0;
}

// ---- catching fatal() ----------------------------------------------------------------------

static jmp_buf jump;
static int in_call;
static char last_error[1024], verdict[1024];
static int calls_this_input;

static void on_fatal(const char *message) {
    if (!in_call) {
        fprintf(stderr, "fuzz: fatal() outside fuzz_call: %s\n", message);
        abort();
    }
    // Every bad input ends in one line on stderr: a message that quotes input bytes must not
    // break that line or carry terminal control codes.
    for (const char *p = message; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            fuzz_fail("the error is not one printable line (byte 0x%02x at %zu): \"%s\"", (unsigned char)*p,
                      (size_t)(p - message), message);
    snprintf(last_error, sizeof last_error, "%s", message);
    if (calls_this_input == 1) snprintf(verdict, sizeof verdict, "%s", message);
    longjmp(jump, 1);
}

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    set_fatal_handler(on_fatal);
    if (__sanitizer_install_malloc_and_free_hooks) __sanitizer_install_malloc_and_free_hooks(malloc_hook, free_hook);
}

int fuzz_call(void (*step)(void *ctx), void *ctx) {
    setup();
    if (in_call) fuzz_fail("fuzz_call: nested call");
    in_call = 1;
    calls_this_input++;
    last_error[0] = 0;
    if (setjmp(jump)) {
        track_end(1);
        in_call = 0;
        return 0;
    }
    tracking = 1;
    step(ctx);
    track_end(0);
    in_call = 0;
    return 1;
}

const char *fuzz_last_error(void) { return last_error; }
const char *fuzz_verdict(void) { return verdict; }
void fuzz_begin_input(void) {
    setup();
    verdict[0] = 0;
    calls_this_input = 0;
}

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: property broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

// ---- tokenizer properties ----------------------------------------------------------------

typedef struct {
    const Tokenizer *t;
    const char *text;
    size_t len;
    int parse_special;
    int *ids, n;
} Encode;

static void do_encode(void *p) {
    Encode *e = p;
    e->n = tokenizer_encode(e->t, e->text, e->len, e->parse_special, &e->ids);
}

// Decode ids one at a time, as the runner streams them; returns the bytes (xmalloc'd).
static char *decode_all(const Tokenizer *t, const int *ids, int n, size_t *len) {
    size_t cap = 64, at = 0;
    char *all = xmalloc(cap), *piece = NULL;
    size_t piece_cap = 0;
    DecodeState ds = {0};
    for (int i = 0; i <= n; i++) {
        size_t need = (i < n ? (size_t)t->token_len[ids[i]] : 0) + 8;
        if (need > piece_cap) piece = xrealloc(piece, piece_cap = need);
        int k = i < n ? tokenizer_decode_step(t, &ds, ids[i], piece) : tokenizer_decode_flush(&ds, piece);
        if (at + (size_t)k + 1 > cap) all = xrealloc(all, cap = 2 * (at + (size_t)k + 1));
        memcpy(all + at, piece, (size_t)k);
        at += (size_t)k;
    }
    free(piece);
    *len = at;
    return all;
}

void fuzz_check_tokenizer(const Tokenizer *t, const uint8_t *text, size_t len) {
    int64_t bad = tokenizer_utf8_check((const char *)text, len);
    for (int special = 0; special < 2; special++) {
        Encode e = { t, (const char *)text, len, special, NULL, 0 };
        if (!fuzz_call(do_encode, &e)) {
            const char *msg = fuzz_last_error();
            char want[128];
            if (bad >= 0) {
                snprintf(want, sizeof want, "text to encode: invalid UTF-8 at byte %lld", (long long)bad);
                if (strcmp(msg, want)) fuzz_fail("invalid UTF-8 at %lld: encode said \"%s\"", (long long)bad, msg);
                return;
            }
            unsigned b;
            size_t at;
            if (sscanf(msg, "text to encode: byte 0x%2x at byte %zu has no token", &b, &at) != 2 || at >= len ||
                text[at] != b || t->index == NULL || find_token_bytes(t, (const char *)text + at, 1) >= 0)
                fuzz_fail("valid UTF-8 (%zu bytes, special %d) refused: \"%s\"", len, special, msg);
            continue;
        }
        if (bad >= 0) fuzz_fail("invalid UTF-8 at byte %lld was encoded", (long long)bad);
        for (int i = 0; i < e.n; i++) {
            if (e.ids[i] < 0 || e.ids[i] >= t->vocab_size) fuzz_fail("id %d outside the vocabulary", e.ids[i]);
            if (!special && t->is_special[e.ids[i]]) fuzz_fail("special id %d from plain text", e.ids[i]);
        }
        size_t n_back;
        char *back = decode_all(t, e.ids, e.n, &n_back);
        if (n_back != len || memcmp(back, text, len))
            fuzz_fail("decode(encode(text)) differs from the text (%zu bytes back for %zu, special %d)", n_back, len,
                      special);
        free(back);
        free(e.ids);
    }
}

void fuzz_check_tokenizer_samples(const Tokenizer *t) {
    static const char *samples[] = {
        "Hello, world! It's 2025: 3.14159 \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82\n\n\t  x",
        "<|im_start|>user\nhi<|im_end|><|begin_of_text|><|eot_id|>",
        ("a\x04" "b\xf1\x80\x80\x80"),
    };
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        fuzz_check_tokenizer(t, (const uint8_t *)samples[i], strlen(samples[i]));
    // The special tokens (the first 16) between two-byte characters, each twice: one text.
    char buf[16 * 2 * (200 + 2) + 2];
    int n = 0;
    for (int id = 0, seen = 0; id < t->vocab_size && seen < 16; id++) {
        int l = t->token_len[id];
        if (!t->is_special[id] || l <= 0 || l > 200) continue;
        seen++;
        for (int r = 0; r < 2; r++) {
            memcpy(buf + n, "\xc3\xa9", 2); n += 2;
            memcpy(buf + n, t->token[id], (size_t)l); n += l;
        }
    }
    memcpy(buf + n, "\xc3\xa9", 2); n += 2;
    fuzz_check_tokenizer(t, (const uint8_t *)buf, (size_t)n);
}

void fuzz_check_blob_roundtrip(const Tokenizer *t) {
    uint64_t n, n2;
    uint8_t *blob = tokenizer_to_blob(t, &n);
    Tokenizer back;
    tokenizer_from_blob(&back, blob, n);
    uint8_t *blob2 = tokenizer_to_blob(&back, &n2);
    if (n2 != n || memcmp(blob, blob2, n)) fuzz_fail("the model.bin tokenizer section does not round-trip");
    free(blob);
    free(blob2);
    free_tokenizer(&back);
}
