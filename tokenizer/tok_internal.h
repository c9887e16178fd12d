// tok_internal.h: what the tokenizer/*.c files share and nobody else needs.
#ifndef KVT_TOK_INTERNAL_H
#define KVT_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "tokenizer.h"

// ---- pretokenize.c ----------------------------------------------------------------------
// Split code points cp[0..n) into pre-tokens with the pattern of `kind` (PretokKind).
// Writes the exclusive end index of each pre-token into ends[] (room for n entries: every
// pre-token holds at least one code point) and returns how many there are.
size_t pretokenize(int kind, const uint32_t *cp, size_t n, size_t *ends);

// Unicode class bits of one code point (from unicode_tables.c).
enum { UC_LETTER = 1, UC_NUMBER = 2, UC_SPACE = 4 };
int unicode_class(uint32_t c);

// Decode one UTF-8 character at s[0..len): returns its length (1..4) and the code point in
// *cp, or 0 if the bytes there are not valid UTF-8 (overlong, surrogate, > U+10FFFF, cut off).
int utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
int utf8_encode(uint32_t cp, char *out);   // returns 1..4

// ---- bpe.c ------------------------------------------------------------------------------
// The GPT-2 byte <-> unicode map: byte b is shown as code point byte_to_unicode(b).
uint32_t byte_to_unicode(int b);
int unicode_to_byte(uint32_t cp);          // -1 if cp is not in the map

// Index building, split in two so that the builders can resolve merge strings to ids
// (tokenizer_find) before the merges are indexed. tokenizer_finish = both.
void index_tokens(Tokenizer *t);
void index_merges(Tokenizer *t);
// Id of the non-special token whose bytes are s[0..n), or -1 (needs index_tokens).
int find_token_bytes(const Tokenizer *t, const char *s, size_t n);
// A GPT-2 unicode string ("Ġthe") to raw bytes (xmalloc'd, *len set); NULL if some
// character is not in the map.
char *gpt2_string_to_bytes(const char *s, size_t n, int *len);

#endif
