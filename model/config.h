// config.h: the model hyperparameters, shared by the exporter and the runner.
#ifndef KVT_CONFIG_H
#define KVT_CONFIG_H

#include <stdint.h>

// Weight dtypes of model.bin (the header's wdtype). f32, f16 and bf16 are element-wise;
// q8_0 is block-wise: GGUF's Q8_0 (ggml's block_q8_0), each run of 32 weights along a row
// stored as one fp16 scale d and 32 int8 codes q, w = d * q (see BlockQ8_0).
typedef enum { DTYPE_F32 = 0, DTYPE_F16 = 1, DTYPE_BF16 = 2, DTYPE_Q8_0 = 3 } DType;

#define Q8_0_BLOCK 32            // weights per Q8_0 block, along the input dimension
typedef struct {
    uint16_t d;                  // fp16 scale
    int8_t q[Q8_0_BLOCK];        // codes; w[i] = d * q[i]
} BlockQ8_0;                     // 34 bytes, no padding: byte-compatible with GGUF (modelbin.c checks)

typedef enum { ROPE_SCALING_NONE = 0, ROPE_SCALING_LLAMA3 = 1 } RopeScaling;

typedef struct {
    int dim;                 // d_model, e.g. 576 (SmolLM2-135M), 4096 (Llama-3-8B)
    int hidden_dim;          // SwiGLU inner dim, 1536 / 14336
    int n_layers;            // 30 / 32
    int n_heads;             // query heads, 9 / 32
    int n_kv_heads;          // key/value heads (GQA), 3 / 8
    int head_dim;            // dim / n_heads, 64 / 128
    int vocab_size;          // 49152 / 128256
    int max_seq_len;         // the model's trained context, 8192 / 8192 (131072 for 3.1)
    float norm_eps;          // RMSNorm epsilon
    float rope_theta;        // RoPE base, 100000 / 500000
    int rope_scaling;        // RopeScaling
    float rope_factor;       // Llama-3.1 scaling: factor (8)
    float rope_low_freq_factor;   // (1)
    float rope_high_freq_factor;  // (4)
    int rope_orig_ctx;       // original_max_position_embeddings (8192)
    int tied_classifier;     // 1: the classifier reuses the token embedding
    DType wdtype;            // dtype of the embedding and every matrix (norms are always f32)
} Config;

static inline const char *dtype_name(DType t) {
    return t == DTYPE_F32 ? "f32" : t == DTYPE_F16 ? "f16" : t == DTYPE_BF16 ? "bf16" : t == DTYPE_Q8_0 ? "q8_0" : "?";
}
// Bytes per element of an element-wise dtype (f32, f16, bf16); 0 for q8_0, which has no
// per-element size: use dtype_bytes.
static inline int dtype_size(DType t) { return t == DTYPE_F32 ? 4 : t == DTYPE_Q8_0 ? 0 : 2; }
// Bytes of n consecutive elements of one row (for q8_0, n a multiple of Q8_0_BLOCK).
static inline uint64_t dtype_bytes(DType t, uint64_t n) {
    return t == DTYPE_Q8_0 ? n / Q8_0_BLOCK * sizeof(BlockQ8_0) : n * (uint64_t)dtype_size(t);
}

#endif
