// pretokenize.c: the pre-tokenizer patterns, written out by hand (no regex library).
//
// A pre-tokenizer cuts text into pieces ("pre-tokens") that BPE then encodes one by one;
// merges never cross a piece boundary. Each model fixes its pattern as a regex. We follow
// each regex's alternatives in order, exactly as a backtracking engine (Oniguruma, used by
// Hugging Face `tokenizers`) would: at position i the first alternative that matches wins,
// and the next piece starts where it ended. Every code point falls into some alternative,
// so the pieces cover the text with no gaps.
//
// \p{L}, \p{N} and \s come from unicode_tables.c (Unicode 16.0, what `tokenizers` uses).
#include <stdlib.h>
#include "tok_internal.h"
#include "unicode_tables.h"
#include "../util/util.h"

static int in_ranges(const uint32_t (*r)[2], int n, uint32_t c) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < r[mid][0]) hi = mid - 1;
        else if (c > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

int unicode_class(uint32_t c) {
    if (c < 128) {   // ASCII fast path
        if ((c | 32) >= 'a' && (c | 32) <= 'z') return UC_LETTER;
        if (c >= '0' && c <= '9') return UC_NUMBER;
        if (c == ' ' || (c >= 9 && c <= 13)) return UC_SPACE;
        return 0;
    }
    if (in_ranges(unicode_letter, unicode_letter_n, c)) return UC_LETTER;
    if (in_ranges(unicode_number, unicode_number_n, c)) return UC_NUMBER;
    if (in_ranges(unicode_space, unicode_space_n, c)) return UC_SPACE;
    return 0;
}

int utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
    unsigned char b = s[0];
    if (b < 0x80) { *cp = b; return 1; }
    int n; uint32_t c, min;
    if ((b & 0xe0) == 0xc0) { n = 2; c = b & 0x1f; min = 0x80; }
    else if ((b & 0xf0) == 0xe0) { n = 3; c = b & 0x0f; min = 0x800; }
    else if ((b & 0xf8) == 0xf0) { n = 4; c = b & 0x07; min = 0x10000; }
    else return 0;                                  // continuation byte or 0xf8..0xff
    if ((size_t)n > len) return 0;
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[k] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return n;
}

int utf8_encode(uint32_t c, char *out) {
    if (c < 0x80) { out[0] = (char)c; return 1; }
    if (c < 0x800) { out[0] = (char)(0xc0 | (c >> 6)); out[1] = (char)(0x80 | (c & 0x3f)); return 2; }
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | (c >> 12)); out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f)); return 3;
    }
    out[0] = (char)(0xf0 | (c >> 18)); out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3f)); out[3] = (char)(0x80 | (c & 0x3f)); return 4;
}

// ---- helpers over the class array k[] (k[i] = unicode_class(cp[i])) ----------------------
#define IS_L(i) (k[i] & UC_LETTER)
#define IS_N(i) (k[i] & UC_NUMBER)
#define IS_S(i) (k[i] & UC_SPACE)
#define IS_OTHER(i) (k[i] == 0)          // [^\s\p{L}\p{N}]

static size_t run_of(const uint8_t *k, size_t i, size_t n, int cls) {
    while (i < n && (cls ? (k[i] & cls) : k[i] == 0)) i++;
    return i;
}

// \s+(?!\S) then \s+ at a whitespace code point i: take the whole whitespace run, but if
// a non-space follows, give its last code point back (the lookahead), unless that would
// leave nothing (then \s+ takes the run).
static size_t space_run(const uint8_t *k, size_t i, size_t n) {
    size_t e = run_of(k, i, n, UC_SPACE);
    if (e < n && e - i >= 2) e--;
    return e;
}

static int lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? (int)(c + 32) : (int)c; }

// Contractions 's 't 're 've 'm 'll 'd at i; returns the end or 0. fold: case-insensitive
// ((?i:...) in the Llama-3 pattern). Under Unicode case folding 's' also matches U+017F
// (long s) and 'k'-like letters don't occur, so ASCII folding plus U+017F is exact.
static size_t contraction(const uint32_t *cp, size_t i, size_t n, int fold) {
    if (cp[i] != '\'' || i + 1 >= n) return 0;
    int a = fold ? lower_ascii(cp[i + 1]) : (int)cp[i + 1];
    if (fold && cp[i + 1] == 0x17f) a = 's';
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 >= n) return 0;
    int b = fold ? lower_ascii(cp[i + 2]) : (int)cp[i + 2];
    if (fold && cp[i + 2] == 0x17f) b = 's';
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
static size_t match_gpt2(const uint32_t *cp, const uint8_t *k, size_t i, size_t n) {
    size_t e = contraction(cp, i, n, 0);
    if (e) return e;
    size_t j = (cp[i] == ' ' && i + 1 < n) ? i + 1 : i;    // the optional leading space
    if (IS_L(j)) return run_of(k, j, n, UC_LETTER);
    if (IS_N(j)) return run_of(k, j, n, UC_NUMBER);
    if (IS_OTHER(j)) return run_of(k, j, n, 0);
    return space_run(k, i, n);
}

// Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//          | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
static size_t match_llama3(const uint32_t *cp, const uint8_t *k, size_t i, size_t n) {
    size_t e = contraction(cp, i, n, 1);
    if (e) return e;
    if (IS_L(i)) return run_of(k, i, n, UC_LETTER);
    int nl = cp[i] == '\r' || cp[i] == '\n';
    if (!nl && !IS_L(i) && !IS_N(i) && i + 1 < n && IS_L(i + 1))   // one leading non-letter
        return run_of(k, i + 1, n, UC_LETTER);
    if (IS_N(i)) {                                                 // at most 3 digits
        e = i;
        while (e < n && e < i + 3 && IS_N(e)) e++;
        return e;
    }
    size_t j = (cp[i] == ' ' && i + 1 < n) ? i + 1 : i;
    if (IS_OTHER(j)) {
        e = run_of(k, j, n, 0);
        while (e < n && (cp[e] == '\r' || cp[e] == '\n')) e++;
        return e;
    }
    // \s*[\r\n]+ : the whitespace run up to and including its last newline, if it has one.
    size_t run = run_of(k, i, n, UC_SPACE), last_nl = n;
    for (size_t p = i; p < run; p++)
        if (cp[p] == '\r' || cp[p] == '\n') last_nl = p;
    if (last_nl < n) return last_nl + 1;
    return space_run(k, i, n);
}

size_t pretokenize(int kind, const uint32_t *cp, size_t n, size_t *ends) {
    uint8_t *k = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) k[i] = (uint8_t)unicode_class(cp[i]);
    size_t count = 0, i = 0, seg = 0;   // seg: end of the digit-free stretch (PRETOK_SMOLLM)
    while (i < n) {
        if (kind == PRETOK_LLAMA3) {
            i = match_llama3(cp, k, i, n);
        } else if (kind == PRETOK_SMOLLM) {
            // Digits(individual_digits) first: every \p{N} is its own piece, and the GPT-2
            // pattern runs on the text between them as if each stretch were a whole string.
            if (IS_N(i)) i++;
            else {
                if (seg <= i)
                    for (seg = i; seg < n && !IS_N(seg);) seg++;
                i = match_gpt2(cp, k, i, seg);
            }
        } else {
            i = match_gpt2(cp, k, i, n);
        }
        ends[count++] = i;
    }
    free(k);
    return count;
}
