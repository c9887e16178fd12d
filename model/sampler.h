// sampler.h: picking the next token from logits: greedy (argmax) at temperature 0, else
// temperature scaling + top-p (nucleus) sampling driven by a seeded xorshift RNG, so that a
// given seed reproduces a run exactly.
#ifndef KVT_SAMPLER_H
#define KVT_SAMPLER_H

#include <stdint.h>

typedef struct { float p; int id; } ProbIndex;

typedef struct {
    int vocab_size;
    float temperature;     // 0 = greedy
    float topp;            // in [0, 1]; 1 = sample from the full distribution
    uint64_t rng;          // xorshift64* state, never 0
    ProbIndex *buf;        // [vocab_size] scratch for top-p
} Sampler;

void build_sampler(Sampler *s, int vocab_size, float temperature, float topp, uint64_t seed);
void free_sampler(Sampler *s);
// The next token id. Overwrites logits (with probabilities) unless greedy.
int sample(Sampler *s, float *logits);

float sampler_random(Sampler *s);   // uniform in [0, 1)

#endif
