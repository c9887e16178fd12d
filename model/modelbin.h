// modelbin.h: the model.bin file format, one definition shared by the writer (export/)
// and the reader (model/). All integers little-endian.
//
//   offset 0      ModelHeader (256 bytes, below)
//   tok_offset    tokenizer section (tokenizer/tokenizer.h: tokenizer_to_blob)
//   wt_offset     weights, 4096-aligned; each tensor 64-byte aligned, in this order:
//                   token_embedding            [vocab][dim]                wdtype
//                   for each layer l:
//                     attn_norm                [dim]                       f32
//                     wq                       [n_heads*head_dim][dim]     wdtype
//                     wk                       [n_kv_heads*head_dim][dim]  wdtype
//                     wv                       [n_kv_heads*head_dim][dim]  wdtype
//                     wo                       [dim][n_heads*head_dim]     wdtype
//                     ffn_norm                 [dim]                       f32
//                     w_gate (w1)              [hidden_dim][dim]           wdtype
//                     w_down (w2)              [dim][hidden_dim]           wdtype
//                     w_up   (w3)              [hidden_dim][dim]           wdtype
//                   final_norm                 [dim]                       f32
//                   classifier                 [vocab][dim]  (only if !tied_classifier)
//   file_size     end of file (the header records it; a shorter file is truncated)
//
// Matrices are row-major [out][in], so y = W x reads one row per output.
// wdtype (config.h DType): 0 f32, 1 f16, 2 bf16, 3 q8_0. A q8_0 row of `in` weights is in/32
// BlockQ8_0 (fp16 scale, then 32 int8 codes: GGUF's Q8_0 block, byte for byte), so every
// matrix's input dimension (dim, hidden_dim) must be a multiple of 32 (config_check). The
// embedding is q8_0 too (as in llama.cpp's Q8_0 GGUFs): a lookup dequantizes one row.
// Q and K rows use the rotate-adjacent-pairs (Meta / GGUF, "interleaved") RoPE convention:
// elements (2i, 2i+1) of each head rotate together by angle pos * freq_i.
#ifndef KVT_MODELBIN_H
#define KVT_MODELBIN_H

#include <stdint.h>
#include "config.h"

#define MODELBIN_MAGIC 0x4354564bu   // "KVTC" little-endian
#define MODELBIN_VERSION 1
#define MODELBIN_HEADER_SIZE 256
#define MODELBIN_TENSOR_ALIGN 64
#define MODELBIN_WEIGHTS_ALIGN 4096

typedef struct {
    uint32_t magic, version;
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_seq_len;
    float norm_eps, rope_theta;
    int32_t rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int32_t rope_orig_ctx, tied_classifier, wdtype;
    uint32_t reserved0;                       // keeps the u64 fields 8-aligned (offset 80)
    uint64_t tok_offset, tok_size;            // tokenizer section
    uint64_t wt_offset, wt_size;              // weights section
    uint64_t file_size;
    uint8_t reserved[256 - 120];              // zeros
} ModelHeader;

_Static_assert(sizeof(ModelHeader) == MODELBIN_HEADER_SIZE, "ModelHeader must be 256 bytes");

// Byte offsets (relative to wt_offset) of every tensor, computed from the config alone.
typedef struct {
    uint64_t attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_down, w_up;
} LayerOffsets;

typedef struct {
    uint64_t token_embedding;
    LayerOffsets *layers;    // [n_layers], owned
    uint64_t final_norm;
    uint64_t classifier;     // == token_embedding when tied
    uint64_t total;          // wt_size
} WeightLayout;

// Validate the config's dims (positive, consistent, no overflow). Returns NULL if fine,
// else a static string naming the problem.
const char *config_check(const Config *c);

void build_weight_layout(WeightLayout *l, const Config *c);   // config must pass config_check
void free_weight_layout(WeightLayout *l);

void header_from_config(ModelHeader *h, const Config *c);
void config_from_header(Config *c, const ModelHeader *h);

// Validate a header read from a file of file_size bytes: magic, version (a newer one is named),
// config_check, and that the tokenizer and weight sections lie inside the file with the
// weight size the dims imply. Returns NULL if fine, else a static string naming the problem.
const char *header_check(const ModelHeader *h, uint64_t file_size);

#endif
