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
    int vocab; float *last_logits;     // NAME.logits: [vocab] at the last prompt position
} GoldenCase;

// Names listed in DIR/index.txt, one per line; returns the count, *names xmalloc'd.
int golden_index(const char *dir, char ***names);
void read_golden_case(GoldenCase *g, const char *dir, const char *name);
void free_golden_case(GoldenCase *g);

// The C runner against one case: prefill the golden prompt ids (fp16 KV cache, the runner's
// baseline), then greedy-decode as many tokens as the golden continuation has.
typedef struct {
    double max_last;      // max |dlogit| over the full last-position logits
    double max_topk;      // max |dlogit| over the golden top-k ids at every prompt position
    int top1_agree;       // prompt positions whose argmax equals the golden top-1
    int gen_agree;        // leading continuation tokens identical to the golden ones
    int first_diff;       // index of the first differing continuation token, -1 if none
} GoldenResult;

GoldenResult golden_run(const Model *m, const GoldenCase *g);

#endif
