// evaltext.h: the texts of the long-context and GSM8K benchmarks (docs/DESIGN.md §5):
// passkey prompts built from real text, GSM8K problems, 4-shot prompts, final-number
// extraction. Pure text/token functions (no model): tests/test_evalbench.c checks them.
#ifndef KVT_EVALTEXT_H
#define KVT_EVALTEXT_H

#include "../tokenizer/tokenizer.h"

// ---- passkey (Mohtashami & Jaggi 2023's retrieval test, our wording) ----
// prompt = intro + haystack[0, a) + needle + haystack[a, h) + question, where the needle
// "The pass key is 48213. Remember it. 48213 is the pass key." starts a line at about
// `depth` (0..1) of the haystack, and h is cut at a line end so that the prompt has at most
// max_len tokens. The answer the model should give is key_ids (" 48213").
typedef struct {
    int *ids; int n;          // [n] the prompt, n <= max_len
    int needle_at;            // index in ids where the needle's tokens start
    int needle_len;
    int *key_ids; int n_key;  // [n_key] the key as it would follow the prompt
    char key_text[8];         // "48213"
} PasskeyPrompt;

void build_passkey_prompt(PasskeyPrompt *p, const Tokenizer *t, const int *hay, int n_hay, int key,
                          double depth, int max_len);
void free_passkey_prompt(PasskeyPrompt *p);

// ---- GSM8K (Cobbe et al. 2021) ----
typedef struct {
    char *question;   // as in the file
    char *answer;     // the worked answer without the <<calculator>> annotations, ending "#### N"
    char number[32];  // the reference final number, normalised (gsm8k_final_number)
} GsmProblem;

// Every line of the JSONL file; fatal naming the file and line on a malformed one.
GsmProblem *load_gsm8k(const char *path, int *n);
void free_gsm8k(GsmProblem *p, int n);
// "a = <<2*3=6>>6" -> "a = 6" (xmalloc'd).
char *gsm8k_strip_calc(const char *s);
// The final number of an answer: the first number after "####" if there is one, else the
// last number in the text; commas removed, a fraction's trailing zeros dropped ("18.00" ->
// "18"). Returns 1 and writes out (NUL-terminated) if a number was found, else 0.
int gsm8k_final_number(const char *text, char *out, int out_size);
// The k-shot prefix: "Question: q\nAnswer: a\n\n" for each shot (xmalloc'd).
char *gsm8k_shots(const GsmProblem *shots, int k);
// One problem's prompt after the shots: "Question: q\nAnswer:" (xmalloc'd); its target is
// " " + answer.
char *gsm8k_prompt(const GsmProblem *p);
// 1 when a generated answer is complete: it holds a blank line or starts the next "Question:".
int gsm8k_done(const char *generated);

#endif
