// benchrun.h: small pieces shared by the evaluation benchmarks (bench/passkey.c,
// bench/gsm8k.c): a KV spec from a name and a preset, prefill in batches, teacher-forced
// scoring of a continuation, greedy decoding.
#ifndef KVT_BENCHRUN_H
#define KVT_BENCHRUN_H

#include <stdio.h>
#include "../model/model.h"

#define BENCH_BATCH 64   // tokens per forward() call, as run.c's prompt processing

// spec for --kv `kv` (fp16 | kv8 | k8v4 | ...) with --kv-preset `preset` (pertoken | kivi).
void bench_spec(KVSpec *s, const Config *c, const char *kv, const char *preset);

// Run ids[0..n) at positions pos.. through the model in batches; copies the last position's
// logits into last[vocab].
void bench_prefill(const Model *m, RunState *s, KVCache *c, const int *ids, int n, int64_t pos, float *last);

// Teacher-forced continuation ids[0..n) after a context whose next-token logits are `last`
// and whose next position is pos. Returns the sum of ln p(ids[i]); *all_top1 = 1 if every
// ids[i] was the model's most likely token (so greedy decoding would produce exactly ids).
double bench_score(const Model *m, RunState *s, KVCache *c, const float *last, const int *ids, int n, int64_t pos,
                   int *all_top1);

// Greedy decoding of up to max_new tokens from logits `last` at position pos. The decoded
// bytes go to out (NUL-terminated, at most out_size - 1); stops early when stop(out) returns
// 1 (stop may be NULL) or the cache is full. Returns the number of tokens generated.
int bench_greedy(const Model *m, RunState *s, KVCache *c, const float *last, int64_t pos, int max_new,
                 int (*stop)(const char *), char *out, int out_size);

// bench_greedy over several independent sequences at once. Decoding one token at a time is
// bound by reading the weights; a step of bench_greedy_step runs the current token of every
// running sequence as one row of forward_rows, so the weights are read once per step. Each
// sequence has its own cache and produces exactly the tokens bench_greedy would (matmul rows
// do not depend on the batch); a sequence that stops drops out, and a new one may be started
// in its place between steps.
typedef struct {
    KVCache *cache;
    int64_t pos;                    // position of the next token to run
    int id;                         // the token chosen next
    int n, len;                     // tokens generated so far (bench_greedy's count), bytes in out
    int live;                       // 1 while the sequence goes on
    int max_new;
    int (*stop)(const char *);
    char *out; int out_size;        // the decoded bytes, NUL-terminated
} GreedySeq;

// Set up g as bench_greedy(m, .., c, last, pos, max_new, stop, out, out_size) would start.
void bench_greedy_start(GreedySeq *g, const Model *m, KVCache *c, const float *last, int64_t pos, int max_new,
                        int (*stop)(const char *), char *out, int out_size);
// One step of every live sequence in g[0..n) (at most s->max_batch of them live); the others
// are skipped. When g[i].live turns 0, g[i].out and g[i].n are final. Returns the number of
// rows run through the model (0: every sequence has stopped).
int bench_greedy_step(const Model *m, RunState *s, GreedySeq *g, int n);

// Write s as one TSV field: newlines and tabs escaped as \n and \t.
void bench_put_field(FILE *f, const char *s);

// Comma-separated list -> array of strings (xstrdup'd; free with free_list).
char **split_list(const char *s, int *n);
void free_list(char **v, int n);
// Seconds since an arbitrary start (monotonic).
double bench_now(void);

#endif
