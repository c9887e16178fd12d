// random.c: random-weight models of named shapes, for tests and benchmarks that need no
// download (tiny) or a model too large to download here (llama3-8b).
//
// Every row has its own generator seeded from (seed, tensor, layer, row), so the values do
// not depend on how the writer chunks the rows, and rows fill in parallel.
// Scales keep activations sane through any depth (every matrix is followed by an RMSNorm
// somewhere): matrices ~ normal(0, 1/sqrt(fan_in)) so y = W x keeps x's RMS; embeddings
// ~ normal(0, dim^-1/4) so tied logits have std dim^(1/4) (a peaked but not one-hot
// distribution); norms = 1.
#include <math.h>
#include <string.h>

#include "export.h"
#include "../util/util.h"

typedef struct {
    uint64_t seed;
    Config c;
} RandomCtx;

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// Approximately standard normal: Irwin-Hall sum of four 16-bit uniforms from one 64-bit
// draw, centred and scaled to unit variance (tails stop at +-2*sqrt(3); cheap enough for
// the 8 billion values of llama3-8b).
static float normalish(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;           // xorshift64*
    uint64_t r = *s * 0x2545f4914f6cdd1dull;
    float u = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
              (float)(r >> 48);
    return (u / 65535.0f - 2.0f) * 1.7320508f;                 // var(sum of 4 U(0,1)) = 1/3
}

static void random_rows(WeightSource *src, WeightKind k, int layer, uint64_t row0, uint64_t nrows,
                        uint64_t ncols, float *out) {
    const RandomCtx *r = src->ctx;
    if (k == W_ATTN_NORM || k == W_FFN_NORM || k == W_FINAL_NORM) {
        for (uint64_t i = 0; i < nrows * ncols; i++) out[i] = 1.0f;
        return;
    }
    float std = k == W_EMBED ? powf((float)r->c.dim, -0.25f) : 1.0f / sqrtf((float)ncols);
    #pragma omp parallel for
    for (uint64_t i = 0; i < nrows; i++) {
        uint64_t s = splitmix64(r->seed ^ splitmix64(((uint64_t)k << 56) ^ ((uint64_t)(layer + 1) << 40) ^
                                                     (row0 + i)));
        if (s == 0) s = 1;
        for (uint64_t j = 0; j < ncols; j++) out[i * ncols + j] = std * normalish(&s);
    }
}

void random_source(WeightSource *src, const Config *c, uint64_t seed) {
    static RandomCtx ctx;   // one random model per process
    ctx.seed = splitmix64(seed);
    ctx.c = *c;
    src->rows = random_rows;
    src->q8_0_rows = NULL;
    src->ctx = &ctx;
}

const char *random_shape_names(void) { return "micro, tiny, smollm2-135m, llama3-8b"; }

// The vocab_size set here is the shape's own; export.c replaces it by the tokenizer's for
// tiny and smollm2-135m (see export --help).
int random_shape(const char *name, Config *c) {
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f;
    if (strcmp(name, "micro") == 0) {
        // The smallest model with every part (GQA, untied classifier, rope scaling): a few KB
        // of weights with a small vocabulary, the size of a fuzzing seed (tests/fuzz/corpus).
        c->dim = 16; c->hidden_dim = 32; c->n_layers = 1; c->n_heads = 2; c->n_kv_heads = 1;
        c->vocab_size = 256; c->max_seq_len = 64; c->rope_theta = 10000.0f;
        c->rope_scaling = ROPE_SCALING_LLAMA3; c->rope_factor = 8.0f;
        c->rope_low_freq_factor = 1.0f; c->rope_high_freq_factor = 4.0f; c->rope_orig_ctx = 16;
        c->tied_classifier = 0;
    } else if (strcmp(name, "tiny") == 0) {
        // Untied and with Llama-3.1 scaling, so the paths the default model does not take
        // (a separate classifier, scaled RoPE) are covered by the unit tests.
        c->dim = 64; c->hidden_dim = 128; c->n_layers = 2; c->n_heads = 4; c->n_kv_heads = 2;
        c->vocab_size = 49152; c->max_seq_len = 512; c->rope_theta = 10000.0f;
        c->rope_scaling = ROPE_SCALING_LLAMA3; c->rope_factor = 8.0f;
        c->rope_low_freq_factor = 1.0f; c->rope_high_freq_factor = 4.0f; c->rope_orig_ctx = 128;
        c->tied_classifier = 0;
    } else if (strcmp(name, "smollm2-135m") == 0) {
        c->dim = 576; c->hidden_dim = 1536; c->n_layers = 30; c->n_heads = 9; c->n_kv_heads = 3;
        c->vocab_size = 49152; c->max_seq_len = 8192; c->rope_theta = 100000.0f;
        c->tied_classifier = 1;
    } else if (strcmp(name, "llama3-8b") == 0) {
        // Llama-3.1-8B: config.json of meta-llama/Llama-3.1-8B-Instruct.
        c->dim = 4096; c->hidden_dim = 14336; c->n_layers = 32; c->n_heads = 32; c->n_kv_heads = 8;
        c->vocab_size = 128256; c->max_seq_len = 131072; c->rope_theta = 500000.0f;
        c->rope_scaling = ROPE_SCALING_LLAMA3; c->rope_factor = 8.0f;
        c->rope_low_freq_factor = 1.0f; c->rope_high_freq_factor = 4.0f; c->rope_orig_ctx = 8192;
        c->tied_classifier = 0;
    } else {
        return 0;
    }
    c->head_dim = c->dim / c->n_heads;
    return 1;
}
