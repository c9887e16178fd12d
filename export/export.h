// export.h: the pieces of the exporter. A checkpoint reader (GGUF, Hugging Face, random)
// is a WeightSource that hands out rows of each tensor as f32; write_model_bin asks for
// them in file order, a few MB at a time, so even the 8B shape never sits in memory whole.
#ifndef KVT_EXPORT_H
#define KVT_EXPORT_H

#include <stdint.h>

#include "../model/config.h"
#include "../tokenizer/tokenizer.h"

typedef enum {
    W_EMBED, W_ATTN_NORM, W_WQ, W_WK, W_WV, W_WO, W_FFN_NORM, W_GATE, W_DOWN, W_UP,
    W_FINAL_NORM, W_CLASSIFIER, W_COUNT
} WeightKind;

typedef struct WeightSource WeightSource;
struct WeightSource {
    // Fill out[nrows][ncols] (f32) with rows [row0, row0 + nrows) of tensor `kind` of `layer`
    // (layer is -1 for the embedding, final norm and classifier). Norms are one row.
    // Q and K rows must already be in model.bin's interleaved RoPE order.
    void (*rows)(WeightSource *s, WeightKind kind, int layer, uint64_t row0, uint64_t nrows,
                 uint64_t ncols, float *out);
    // Optional (NULL if the source has no quantized tensors): when the tensor is stored as
    // Q8_0 in the source, copy those rows' blocks unchanged to out (nrows * ncols/32 blocks)
    // and return 1, so a q8_0 export does not quantize twice; else return 0.
    int (*q8_0_rows)(WeightSource *s, WeightKind kind, int layer, uint64_t row0, uint64_t nrows,
                     uint64_t ncols, void *out);
    void *ctx;
};

const char *weight_kind_name(WeightKind k);   // "wq", "attn_norm", ...

// Shape [rows][cols] of a tensor under config c.
void weight_shape(const Config *c, WeightKind k, uint64_t *rows, uint64_t *cols);

// Write OUT: header, tokenizer section, every tensor from src in layout order. Writes to
// OUT.tmp and renames at the end, so an interrupted export never leaves a plausible file.
void write_model_bin(const char *path, const Config *c, const Tokenizer *tok, WeightSource *src);

// Sources. Each fills *c (wdtype left to the caller) and *tok and sets up *src;
// free_* releases what the source holds.
typedef struct GGUFExport GGUFExport;
GGUFExport *open_gguf_export(const char *path, Config *c, Tokenizer *tok, WeightSource *src);
// The same on a GGUF in memory (see gguf_open_memory).
GGUFExport *open_gguf_export_memory(const char *name, const uint8_t *data, size_t size, Config *c, Tokenizer *tok,
                                    WeightSource *src);
void close_gguf_export(GGUFExport *e);

typedef struct HFExport HFExport;
HFExport *open_hf_export(const char *dir, Config *c, Tokenizer *tok, WeightSource *src);
void close_hf_export(HFExport *e);

// The tokenizer of a GGUF file (tokenizer.ggml.*), used by conversion and --random.
struct GGUFFile;
void tokenizer_from_gguf(Tokenizer *t, const struct GGUFFile *g);

// --random: named shapes and a seeded random source.
int random_shape(const char *name, Config *c);   // 0 if the name is unknown
const char *random_shape_names(void);            // "micro, tiny, smollm2-135m, llama3-8b"
void random_source(WeightSource *src, const Config *c, uint64_t seed);

// Load a tokenizer from a GGUF, a tokenizer.json, a tiktoken tokenizer.model or a model.bin.
void load_any_tokenizer(Tokenizer *t, const char *path);

#endif
