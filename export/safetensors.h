// safetensors.h: the Hugging Face safetensors format, one file or a sharded set.
//
// A file is: u64 N (little-endian) | N bytes of JSON | tensor data. The JSON maps each
// tensor name to {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}
// (offsets relative to the data start), plus an optional "__metadata__" object.
// A sharded checkpoint lists name -> file in model.safetensors.index.json ("weight_map").
#ifndef KVT_SAFETENSORS_H
#define KVT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2 } STDtype;

typedef struct {
    char *name;
    int dtype;              // STDtype
    int n_dims;             // 0..8
    uint64_t shape[8];
    uint64_t n_elements;
    const uint8_t *data;    // into the mapped file
    const char *path;       // the file holding it (for messages)
} STTensor;

typedef struct {
    char *path;
    const uint8_t *map;
    size_t size;
    int mapped;             // 1: map is ours to munmap
} STFile;

typedef struct {
    int n_files;
    STFile *files;          // [n_files]
    int n_tensors;
    STTensor *tensors;      // [n_tensors]
} SafeTensors;

// Add the tensors of one .safetensors file. Malformed files are fatal, naming the path.
void st_open_file(SafeTensors *s, const char *path);
// The same for a file already in memory (data[0..size), which must outlive s); name stands
// for the path in messages. Start from a zeroed SafeTensors.
void st_open_memory(SafeTensors *s, const char *name, const uint8_t *data, size_t size);
// Open a checkpoint folder: model.safetensors.index.json if present, else its one
// *.safetensors file.
void st_open_dir(SafeTensors *s, const char *dir);
void st_close(SafeTensors *s);

const STTensor *st_find(const SafeTensors *s, const char *name);   // NULL if absent

// Rows [row0, row0 + nrows) of t seen as [rows][ncols], converted to f32.
void st_rows(const STTensor *t, uint64_t row0, uint64_t nrows, uint64_t ncols, float *out);

#endif
