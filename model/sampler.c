// sampler.c: greedy, temperature and top-p sampling (sampler.h).
#include "sampler.h"
#include "eval.h"
#include "../kernels/kernels.h"
#include "../util/util.h"

#include <stdlib.h>

void build_sampler(Sampler *s, int vocab_size, float temperature, float topp, uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->topp = topp;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;   // xorshift must not start at 0
    s->buf = xmalloc((size_t)vocab_size * sizeof(ProbIndex));
}

void free_sampler(Sampler *s) {
    free(s->buf);
    s->buf = NULL;
}

float sampler_random(Sampler *s) {   // xorshift64*, top 24 bits
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    uint32_t r = (uint32_t)((s->rng * 0x2545F4914F6CDD1Dull) >> 32);
    return (float)(r >> 8) / 16777216.0f;
}

static int cmp_prob_desc(const void *a, const void *b) {
    float pa = ((const ProbIndex *)a)->p, pb = ((const ProbIndex *)b)->p;
    return pa > pb ? -1 : pa < pb ? 1 : 0;
}

// Top-p (nucleus): sample from the smallest set of most likely tokens whose mass reaches topp.
// A token below (1 - topp) / (n - 1) cannot be in that set (the others could not reach topp
// without it), which keeps the sort short.
static int sample_topp(const float *probs, int n, float topp, ProbIndex *buf, float r) {
    int m = 0;
    float cutoff = (1.0f - topp) / (float)(n > 1 ? n - 1 : 1);
    for (int i = 0; i < n; i++) if (probs[i] >= cutoff) buf[m++] = (ProbIndex){probs[i], i};
    qsort(buf, (size_t)m, sizeof *buf, cmp_prob_desc);
    float mass = 0;
    int last = m - 1;
    for (int i = 0; i < m; i++) {
        mass += buf[i].p;
        if (mass >= topp) { last = i; break; }
    }
    float x = r * mass, acc = 0;
    for (int i = 0; i <= last; i++) {
        acc += buf[i].p;
        if (x < acc) return buf[i].id;
    }
    return buf[last].id;
}

int sample(Sampler *s, float *logits) {
    int n = s->vocab_size;
    if (s->temperature == 0.0f) return eval_argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    softmax(logits, n);
    float r = sampler_random(s);
    if (s->topp < 1.0f) return sample_topp(logits, n, s->topp, s->buf, r);
    float acc = 0;
    for (int i = 0; i < n; i++) {
        acc += logits[i];
        if (r < acc) return i;
    }
    return n - 1;
}
