// eval.h: teacher-forced evaluation of a KV-cache configuration against the fp16 baseline
// (docs/DESIGN.md §5): perplexity, KL(p_fp16 || p_kv) over the full vocabulary and top-1
// agreement at every position. Used by `run -m ppl`, `run -m compare` and the tuner.
#ifndef KVT_EVAL_H
#define KVT_EVAL_H

#include <math.h>
#include <stdint.h>
#include "model.h"

typedef struct {
    int64_t n;                // predictions scored: position t predicts token t+1
    double nll_base, nll_kv;  // sums of -ln p(next token), nats (nll_base: compare only)
    double kl;                // sum over positions of KL(p_base || p_kv), nats
    int64_t top1;             // positions where both models' most likely tokens agree
    double kl_max;            // the worst position's KL, and where it is
    int64_t kl_max_pos;
    double kv_bits_per_elem;  // of the evaluated cache at the end of the text
    float *kl_at;             // [n] KL per position (eval_compare), NULL otherwise
} EvalStats;

// ---- the per-position math (double precision, stable for any logits) ----
int eval_argmax(const float *x, int n);
// ln(sum exp(x)).
double eval_logsumexp(const float *x, int n);
// logp[i] = x[i] - logsumexp(x): the log-softmax of one row (computed in double, stored f32).
void eval_log_softmax(float *logp, const float *x, int n);
// KL(p || q) = sum_i p_i (ln p_i - ln q_i), p given as log-probabilities (eval_log_softmax),
// q as logits. q's log-probs are rounded to f32 exactly as eval_log_softmax rounds p's, so a
// model compared with itself gives exactly 0.
double eval_kl(const float *logp, const float *logits_q, int n);
// Score one position: baseline log-probs vs the evaluated model's logits; target = the true next token.
void eval_score_position(EvalStats *st, const float *base_logp, const float *kv_logits, int n, int target);

static inline double eval_ppl_kv(const EvalStats *st) { return st->n ? exp(st->nll_kv / st->n) : 0.0; }
static inline double eval_ppl_base(const EvalStats *st) { return st->n ? exp(st->nll_base / st->n) : 0.0; }

// 1 if prompts of this tokenizer start with BOS (Hugging Face adds <|begin_of_text|> for
// Llama-3; SmolLM2's tokenizer adds nothing).
int eval_wants_bos(const Tokenizer *t);

// ---- whole texts. ids[0..n), n >= 2; batch = tokens per forward() call; progress = 1 shows a
// progress line on stderr. Each builds its own caches of n tokens (and frees them). ----

// Perplexity of the text with a cache of `spec` (every scored position reads that cache).
void eval_ppl(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, int progress, EvalStats *st);
// fp16 and `spec` caches in lockstep over the same weights: KL, top-1, both perplexities.
void eval_compare(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, int progress, EvalStats *st);

// The fp16 baseline's log-probabilities at positions 0..n-2: logp [n-1][vocab] (caller's).
void eval_base_logprobs(const Model *m, const int *ids, int n, int batch, float *logp);
// The `spec` model scored against stored baseline log-probs (from eval_base_logprobs):
// what eval_compare computes, without rerunning the baseline (the tuner's inner loop).
void eval_against(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, const float *base_logp,
                  EvalStats *st);
// Per-layer sensitivity (KVTuner's step 2; docs/DESIGN.md §6): kl[l] = mean KL when only layer l uses
// spec's bits and every other layer stays fp16.
void eval_layer_kl(const Model *m, const KVSpec *spec, const int *ids, int n, int batch, int progress, double *kl);

// With --verbose: the k positions with the largest KL and the tokens there.
void eval_print_worst(const Tokenizer *t, const int *ids, const EvalStats *st, int k);
void free_evalstats(EvalStats *st);

#endif
