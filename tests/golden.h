// golden.h: reading the golden references made by tests/reference/make_golden.py and
// make_llama3_tiny.py (format: tests/golden/README.md), and holding a model.bin to them.
// Shared by tests/test_golden.c (SmolLM2 from GGUF) and tests/test_llama3_hf.c (a
// Llama-3-shaped Hugging Face checkpoint).
#ifndef KVT_GOLDEN_H
#define KVT_GOLDEN_H

#include <stddef.h>
#include "../model/model.h"

typedef struct {
    char name[64];
    char *prompt; size_t prompt_len;   // NAME.prompt: the prompt text, raw UTF-8
    int n_prompt; int *prompt_ids;     // [n_prompt] ids from transformers' tokenizer
    int n_gen; int *gen_ids;           // [n_gen] greedy continuation (ends early at EOS, kept)
    float *gen_margin;                 // [n_gen] top1 - top2 logit at each greedy step
    int topk;                          // 20
    int *top_ids; float *top_logits;   // [n_prompt][topk] at every prompt position
    int vocab; float *last_logits;     // NAME.logits: [vocab] at the last prompt position (or NULL)
} GoldenCase;

// Names listed in DIR/index.txt, one per line; returns the count, *names xmalloc'd.
int golden_index(const char *dir, char ***names);
// variant NULL: the main reference, NAME.txt + NAME.logits; else NAME.<variant>.txt alone
// (vocab 0, last_logits NULL), e.g. "fp32" for the plain fp32 run.
void read_golden_case(GoldenCase *g, const char *dir, const char *name, const char *variant);
void free_golden_case(GoldenCase *g);

// What the C runner does with a prompt: prefill it (fp16 KV cache, the runner's baseline),
// keeping the logits of every position, then n_gen greedy tokens on its own choices.
typedef struct {
    int n_prompt, n_gen, vocab;
    float *prompt_logits;    // [n_prompt][vocab]
    int *gen;                // [n_gen]
} GoldenRun;

void golden_generate(const Model *m, const int *prompt, int n_prompt, int n_gen, GoldenRun *out);
void free_golden_run(GoldenRun *r);

// Figures of one run against one golden case.
typedef struct {
    double max_last;      // max |dlogit| over the full last-position logits (-1: case has none)
    double max_topk;      // max |dlogit| over the golden top-k ids at every prompt position
    double max_pos0;      // the same at position 0 alone (attends only to itself)
    int top1_agree;       // prompt positions whose argmax equals the golden top-1
    int gen_agree;        // leading continuation tokens identical to the golden ones
    int first_diff;       // index of the first differing continuation token, -1 if none
} GoldenResult;

GoldenResult golden_compare(const GoldenCase *g, const GoldenRun *run);
// golden_generate over the case's prompt and continuation length, then golden_compare.
GoldenResult golden_run(const Model *m, const GoldenCase *g);

#endif
