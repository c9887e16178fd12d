// tokenizer.h: byte-level BPE (GPT-2 / tiktoken style) with the model's pre-tokenizer,
// special tokens and chat templates.
//
// Reading order: bpe.c (lookup tables, encode: special tokens -> pre-tokens -> BPE merges),
// pretokenize.c (the three regex patterns written out by hand, Unicode classes from the
// generated unicode_tables.c), tokenizer.c (streaming decode, chat templates), build.c (from
// tokenizer.json, GGUF strings, tiktoken), blob.c (the model.bin section).
#ifndef KVT_TOKENIZER_H
#define KVT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PRETOK_GPT2 = 0,     // GPT-2 regex
    PRETOK_SMOLLM = 1,   // digits split one by one, then the GPT-2 regex (SmolLM / SmolLM2)
    PRETOK_LLAMA3 = 2,   // the Llama-3 (tiktoken cl100k-style) regex
} PretokKind;

typedef enum { CHAT_NONE = 0, CHAT_CHATML = 1, CHAT_LLAMA3 = 2 } ChatKind;

typedef struct TokIndex TokIndex;   // private lookup tables, built by tokenizer_finish

typedef struct {
    int vocab_size;
    char **token;            // [vocab_size] raw bytes of each token (not the GPT-2 unicode form), NUL-terminated
    int *token_len;          // [vocab_size]
    uint8_t *is_special;     // [vocab_size] 1 for control/special tokens (<|im_start|>, <|eot_id|>...)
    int n_merges;
    int32_t *merges;         // [n_merges][2] token ids (left, right); rank = index (lower merges first)
                             //    unless rank_by_result
    int bos_id, eos_id, eot_id, eom_id;   // -1 when the model has none
    int pretok;              // PretokKind
    int chat;                // ChatKind
    int ignore_merges;       // 1: a pre-token that is a whole vocab entry is emitted as is (tiktoken / Llama-3)
    int rank_by_result;      // 1: a merge's priority is the id of the token it makes (tiktoken: pairs that
                             //    make the same token tie, the leftmost goes first); 0: its index in merges
    int add_bos;             // 1: the runner prepends bos_id to plain prompts (Llama-3); 0: not (SmolLM2)
    TokIndex *index;
} Tokenizer;

// Builders (export/ calls these). Each sets pretok/chat/bos/eos/eot/eom/add_bos from what the
// source says or, where it says nothing, from the special-token names (tokenizer_guess_specials);
// callers may override them afterwards (e.g. from GGUF's tokenizer.ggml.eos_token_id;
// build_tokenizer_from_strings leaves pretok = PRETOK_GPT2: see tokenizer_set_gguf_pre).
// Token and merge strings are in the GPT-2 byte->unicode form used by tokenizer.json and GGUF
// ("Ġthe", merges "Ġ t"). token_type: GGUF token types (1 normal, 3 control, 4 user-defined:
// stored as plain text and special) or NULL. Bad input is fatal with a clear message.
void build_tokenizer_from_strings(Tokenizer *t, char **tokens, int n_tokens,
                                  char **merges, int n_merges, const int32_t *token_type);
void build_tokenizer_from_hf_json(Tokenizer *t, const char *path);     // tokenizer.json
void build_tokenizer_from_tiktoken(Tokenizer *t, const char *path);    // Meta tokenizer.model
// The same two from text in memory, text[0..len) (need not end in NUL); name stands for the
// path in messages (fuzzing, tests).
void build_tokenizer_from_hf_json_text(Tokenizer *t, const char *name, const char *text, size_t len);
void build_tokenizer_from_tiktoken_text(Tokenizer *t, const char *name, const char *text, size_t len);
// Build the lookup tables once fields are set (the builders call it; call it again after
// changing tokens or merges).
void tokenizer_finish(Tokenizer *t);
// GGUF's tokenizer.ggml.pre ("gpt2", "smollm", "llama-bpe", ...): sets pretok and
// ignore_merges; an unknown name is fatal, naming it.
void tokenizer_set_gguf_pre(Tokenizer *t, const char *pre);
// Fill chat/bos/eos/eot/eom/add_bos from the special tokens present: <|start_header_id|> and
// <|eot_id|> mean the Llama-3 format, <|im_start|> and <|im_end|> ChatML (SmolLM2).
void tokenizer_guess_specials(Tokenizer *t);
// Id of the token whose raw bytes are s (NUL-terminated), or -1. Needs tokenizer_finish.
int tokenizer_find(const Tokenizer *t, const char *s);
void free_tokenizer(Tokenizer *t);

// model.bin tokenizer section.
uint8_t *tokenizer_to_blob(const Tokenizer *t, uint64_t *size);           // xmalloc'd
// Reading is fatal on a bad section, and on a special token that is not valid UTF-8 (as are
// the builders above: special tokens are matched in UTF-8 text).
void tokenizer_from_blob(Tokenizer *t, const uint8_t *blob, uint64_t size);

// Encode text[0..len) (UTF-8) to ids. No BOS is added (see add_bos).
// parse_special: 1 recognises special-token strings such as <|im_start|> in the text (chat
// templates build such text), 0 treats them as plain text, so a user typing "<|eot_id|>"
// cannot inject a control token (the Hugging Face library matches them always; we match them
// only where our own template put them). Invalid UTF-8 is fatal ("text to encode: invalid
// UTF-8 at byte N"): tokens are byte-level so we could encode it, but the reference tokenizers only take
// valid Unicode strings, so such ids would have no reference to be checked against.
// A byte that has no token in the vocabulary (SmolLM2 lacks 21 byte values, 0x04 and 0xf1 among
// them) is fatal too ("text to encode: byte 0x04 at byte N has no token in this vocabulary"):
// Hugging Face's BPE drops it in silence, and we never lose input in silence. Every text that
// encodes gets the ids of `tokenizers`, and decoding them gives back the text byte for byte.
// Returns the number of ids; *ids is xmalloc'd.
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int parse_special, int **ids);
// tokenizer_encode with parse_special, but a special-token string is recognised only where
// is_template[i] is 1 for each of its bytes: text a template wrote, not text a user typed.
int tokenizer_encode_template(const Tokenizer *t, const char *text, size_t len, const uint8_t *is_template, int **ids);
// -1 if s[0..len) is valid UTF-8, else the byte offset of the first bad sequence
// (lets the caller name its input in the error: "prompt: invalid UTF-8 at byte N").
int64_t tokenizer_utf8_check(const char *s, size_t len);

// Streaming decode: append token bytes; emit only complete UTF-8 characters to out, keeping
// an unfinished character's leading bytes pending until the next token completes it. Bytes that
// can never form a character are passed through as they are, so the concatenated output is
// always exactly the concatenated token bytes. Start with DecodeState s = {0}.
typedef struct { char pending[8]; int n_pending; } DecodeState;
// Writes the decoded bytes into out (NUL-terminated), returns the number of bytes.
// out must hold token_len[id] + 8 bytes. An id outside the vocabulary is fatal.
int tokenizer_decode_step(const Tokenizer *t, DecodeState *s, int id, char *out);
int tokenizer_decode_flush(DecodeState *s, char *out);

// Chat template: the model's own format for one user turn (with optional system prompt),
// ending with the assistant header so that generation continues as the assistant. It already
// starts with the BOS token where the template has one (Llama-3): do not add bos on top.
// system == NULL: the template's default (SmolLM2's template inserts "You are a helpful AI
// assistant named SmolLM, trained by Hugging Face"; Llama-3's has no system turn then).
// CHAT_NONE is fatal.
// The prompt's ids: special-token strings are special tokens where the template wrote them, and
// plain text in the user's and the system text ("<|im_end|>" typed by a user is not a control
// token). *ids is xmalloc'd; returns their number.
int tokenizer_encode_chat(const Tokenizer *t, const char *system, const char *user, int **ids);
// The same prompt as text (xmalloc'd), for display and tests: for text without special-token
// strings in it, tokenizer_encode(.., parse_special = 1) of it gives tokenizer_encode_chat's ids.
char *tokenizer_chat_prompt(const Tokenizer *t, const char *system, const char *user);

#endif
