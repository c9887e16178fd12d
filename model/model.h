// model.h: loading model.bin (mmap, validated) and the transformer forward pass.
#ifndef KVT_MODEL_H
#define KVT_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "../tokenizer/tokenizer.h"
#include "../quant/kvcache.h"
#include "../kernels/attention.h"

typedef struct {
    const float *attn_norm;          // [dim]
    const void *wq, *wk, *wv, *wo;   // [n_heads*hd][dim], [n_kv*hd][dim] x2, [dim][n_heads*hd]
    const float *ffn_norm;           // [dim]
    const void *w_gate, *w_down, *w_up;  // [hidden][dim], [dim][hidden], [hidden][dim]
} LayerWeights;

typedef struct {
    const void *token_embedding;     // [vocab][dim]
    LayerWeights *layers;            // [n_layers]
    const float *final_norm;         // [dim]
    const void *classifier;          // [vocab][dim] (== token_embedding when tied)
} Weights;

typedef struct {
    Config config;
    Weights weights;
    Tokenizer tokenizer;
    AttnImpl attention;                 // which attention reads the KV cache (kernels/attention.h);
                                        //   load_model sets ATTN_FAST, run's --attention may change it
    const void *map; size_t map_size;   // the mmap'd file (or the caller's bytes)
    int mapped;                         // 1: map is ours to munmap
} Model;

// Load and validate model.bin; any problem is fatal with a message naming the path.
void load_model(Model *m, const char *path);
// The same for a model.bin already in memory: data[0..size), 64-byte aligned (the tensors
// are read in place), outliving m; name stands for the path in messages (fuzzing, tests).
void load_model_memory(Model *m, const char *name, const void *data, size_t size);
void free_model(Model *m);

// Activations for a batch of up to max_batch tokens.
typedef struct {
    int max_batch;
    float *x, *xb, *xb2;      // [max_batch][dim]
    float *q;                 // [max_batch][n_heads*hd]
    float *k, *v;             // [max_batch][n_kv*hd]
    float *att_out;           // [max_batch][n_heads*hd]
    float *hb, *hb2;          // [max_batch][hidden]
    float *logits;            // [max_batch][vocab]
    float *rope_freqs;        // [head_dim/2]
} RunState;

void build_runstate(RunState *s, const Config *c, int max_batch, int64_t max_tokens);
void free_runstate(RunState *s);

// Run tokens[0..n) at positions pos..pos+n-1 through the model, appending their K/V to
// cache. n <= max_batch. Batched matmuls; each position then appends to the cache and
// attends exactly as token-by-token decoding would (docs/DESIGN.md §3).
// Returns logits: all n rows if all_logits, else only the last row, [vocab] each.
float *forward(const Model *m, RunState *s, KVCache *cache, const int *tokens, int n, int64_t pos, int all_logits);

// One decode step of n independent sequences: row t is tokens[t] at position pos[t] of its own
// cache caches[t] (pos[t] must equal that cache's length; no cache twice). The matmuls run
// all rows at once, so the weights are read once per step; each row then attends against
// its own cache and appends to it. Row t's result is bit-identical to forward(.., caches[t], &tokens[t],
// 1, pos[t], ..) (matmul rows do not depend on the batch). n <= max_batch. Returns logits [n][vocab].
float *forward_rows(const Model *m, RunState *s, KVCache **caches, const int *tokens, const int64_t *pos, int n);

// The steps of one layer l over n tokens, as forward runs them (the tuner, quant/tune_forward.c,
// runs them layer by layer from recorded inputs).
// Norm, Q/K/V projections of s->x and RoPE at positions pos..pos+n-1: s->q, s->k, s->v.
void layer_qkv(const Model *m, RunState *s, int l, int n, int64_t pos);
// Attention (kernels/attention.h: attention_layer) over rows s->q, s->k, s->v of n tokens:
// s->att_out. The rows of one attention step.
AttnRows layer_attn_rows(const Config *c, RunState *s, int n);
// Output projection of att_out [n][n_heads*hd], residual, and the SwiGLU block: updates s->x.
void layer_out_ffn(const Model *m, RunState *s, int l, int n, const float *att_out);
// Final norm and classifier of rows x [rows][dim]: s->logits [rows][vocab].
float *head_logits(const Model *m, RunState *s, const float *x, int rows);

#endif
