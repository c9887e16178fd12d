// config.h: the model hyperparameters, shared by the exporter and the runner.
#ifndef KVT_CONFIG_H
#define KVT_CONFIG_H

typedef enum { DTYPE_F32 = 0, DTYPE_F16 = 1, DTYPE_BF16 = 2 } DType;

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
    return t == DTYPE_F32 ? "f32" : t == DTYPE_F16 ? "f16" : t == DTYPE_BF16 ? "bf16" : "?";
}
static inline int dtype_size(DType t) { return t == DTYPE_F32 ? 4 : 2; }

#endif
