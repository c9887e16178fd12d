// gguf.h: a GGUF v3 reader (the llama.cpp checkpoint format) and dequantization to f32.
//
// File layout (all little-endian; spec: ggml/docs/gguf.md):
//   "GGUF" u32 version u64 n_tensors u64 n_kv
//   n_kv x  { string key, u32 value_type, value }        string = u64 length + bytes
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the tensor data; offsets are relative
//   to that data start. ne[0] is the innermost (contiguous) dimension: a matrix [out][in]
//   has ne = {in, out}.
#ifndef KVT_GGUF_H
#define KVT_GGUF_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4,
    GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9,
    GGUF_UINT64 = 10, GGUF_INT64 = 11, GGUF_FLOAT64 = 12,
} GGUFType;

// ggml tensor types this reader dequantizes (the others are rejected by name).
enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q8_0 = 8, GGML_BF16 = 30 };

typedef struct GGUFValue GGUFValue;
struct GGUFValue {
    int type;             // GGUFType
    int64_t i;            // integer and bool types (uint64 values above INT64_MAX are clamped)
    double f;             // float types; integers are mirrored here too
    char *str;            // GGUF_STRING: copied, NUL-terminated (str_len excludes the NUL)
    uint64_t str_len;
    int elem_type;        // GGUF_ARRAY: element type (arrays may nest)
    uint64_t n;           // GGUF_ARRAY: element count
    GGUFValue *arr;       // GGUF_ARRAY: [n]
};

typedef struct {
    char *name;
    int n_dims;           // 1..4
    uint64_t ne[4];       // ne[0] innermost; unused dims are 1
    int type;             // ggml type
    uint64_t offset;      // relative to the data section
    uint64_t n_elements;
    uint64_t nbytes;
    const uint8_t *data;  // into the mapped file
} GGUFTensor;

typedef struct GGUFFile {
    const char *path;
    const uint8_t *map;   // the whole file, mmapped read-only (or the caller's bytes)
    size_t size;
    int mapped;           // 1: map is ours to munmap
    uint32_t version;
    uint64_t n_kv;
    char **keys;          // [n_kv]
    GGUFValue *values;    // [n_kv]
    uint64_t n_tensors;
    GGUFTensor *tensors;  // [n_tensors]
    uint64_t alignment;   // general.alignment or 32
    uint64_t data_offset; // start of the tensor data
} GGUFFile;

// Open and fully validate a GGUF file: every malformed case is fatal with the path named.
void gguf_open(GGUFFile *g, const char *path);
// The same on a GGUF already in memory (data[0..size), which must outlive g); name stands for
// the path in messages. The fuzz harness and tests read files this way.
void gguf_open_memory(GGUFFile *g, const char *name, const uint8_t *data, size_t size);
void gguf_close(GGUFFile *g);

const GGUFValue *gguf_get(const GGUFFile *g, const char *key);             // NULL if absent
// Typed getters: fatal (naming file and key) if absent or of the wrong kind.
int64_t gguf_get_int(const GGUFFile *g, const char *key);
double gguf_get_float(const GGUFFile *g, const char *key);
const char *gguf_get_str(const GGUFFile *g, const char *key);
// An array of strings: returns the count and fills *out with borrowed pointers (xmalloc'd array).
uint64_t gguf_get_str_array(const GGUFFile *g, const char *key, char ***out);

const GGUFTensor *gguf_find_tensor(const GGUFFile *g, const char *name);   // NULL if absent
const GGUFTensor *gguf_need_tensor(const GGUFFile *g, const char *name);   // fatal if absent

const char *ggml_type_name(int type);     // "Q4_1", ... or "unknown"
const char *gguf_type_name(int type);     // "uint32", ... or "unknown"

// Block geometry of a supported ggml type: elements per block and bytes per block.
// Returns 0 if the type is not supported.
int ggml_block_info(int type, int *block_elems, int *block_bytes);

// Dequantize n elements (a multiple of the block size) starting at src to f32.
void ggml_dequantize(int type, const uint8_t *src, float *dst, uint64_t n);

// Rows [row0, row0 + nrows) of a tensor seen as [rows][ne[0]], dequantized to f32.
void gguf_tensor_rows(const GGUFTensor *t, uint64_t row0, uint64_t nrows, float *out);

#endif
