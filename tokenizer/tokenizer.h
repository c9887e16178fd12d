// tokenizer.h: byte-level BPE (GPT-2 / tiktoken style) with the model's pre-tokenizer,
// special tokens and chat templates.
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
    char **token;            // [vocab_size] raw bytes of each token (not the GPT-2 unicode form)
    int *token_len;          // [vocab_size]
    uint8_t *is_special;     // [vocab_size] 1 for control/special tokens (<|im_start|>, <|eot_id|>...)
    int n_merges;
    int32_t *merges;         // [n_merges][2] token ids (left, right); rank = index (lower merges first)
    int bos_id, eos_id, eot_id, eom_id;   // -1 when the model has none
    int pretok;              // PretokKind
    int chat;                // ChatKind
    int ignore_merges;       // 1: a pre-token that is a whole vocab entry is emitted as is (tiktoken / Llama-3)
    TokIndex *index;
} Tokenizer;

// Builders (export/ calls these). Token and merge strings are in the GPT-2 byte->unicode
// form used by tokenizer.json and GGUF ("Ġthe", merges "Ġ t"). token_type: GGUF token types
// (1 normal, 3 control, 4 user-defined) or NULL. Bad input is fatal with a clear message.
void build_tokenizer_from_strings(Tokenizer *t, char **tokens, int n_tokens,
                                  char **merges, int n_merges, const int32_t *token_type);
void build_tokenizer_from_hf_json(Tokenizer *t, const char *path);     // tokenizer.json
void build_tokenizer_from_tiktoken(Tokenizer *t, const char *path);    // Meta tokenizer.model
// Build the lookup tables once fields are set (the builders call it).
void tokenizer_finish(Tokenizer *t);
void free_tokenizer(Tokenizer *t);

// model.bin tokenizer section.
uint8_t *tokenizer_to_blob(const Tokenizer *t, uint64_t *size);           // xmalloc'd
void tokenizer_from_blob(Tokenizer *t, const uint8_t *blob, uint64_t size); // fatal on a bad section

// Encode text[0..len) (UTF-8) to ids. parse_special: 1 recognises special-token strings
// such as <|im_start|> in the text (chat templates), 0 treats them as plain text.
// Returns the number of ids; *ids is xmalloc'd. Invalid UTF-8 is fatal.
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int parse_special, int **ids);

// Streaming decode: append token bytes; emit only complete UTF-8 characters to out.
typedef struct { char pending[8]; int n_pending; } DecodeState;
// Writes up to the decoded bytes into out (NUL-terminated), returns the number of bytes.
// out must hold token_len + 8 bytes.
int tokenizer_decode_step(const Tokenizer *t, DecodeState *s, int id, char *out);
int tokenizer_decode_flush(DecodeState *s, char *out);

// Chat template: the model's own format for one user turn (with optional system prompt),
// ending with the assistant header so that generation continues as the assistant.
// Returns an xmalloc'd string to encode with parse_special = 1.
char *tokenizer_chat_prompt(const Tokenizer *t, const char *system, const char *user);

#endif
