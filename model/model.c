// model.c: load model.bin (model/modelbin.h) with mmap and validate every field before any
// pointer into the file is formed. Each problem is one fatal line naming the path.
#include "model.h"
#include "modelbin.h"
#include "../util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((noreturn)) static void short_file(const char *path, uint64_t size) {
    fatal("%s: not a model.bin file (%llu bytes, shorter than the %d-byte header)", path, (unsigned long long)size,
          MODELBIN_HEADER_SIZE);
}

// Map the whole file read-only. Pages are loaded on first touch, so load time does not
// depend on the model size and several processes share one copy in the page cache.
static void *map_file(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) fatal("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) fatal("%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) fatal("%s: not a regular file", path);
    if ((uint64_t)st.st_size < MODELBIN_HEADER_SIZE) short_file(path, (uint64_t)st.st_size);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) fatal("%s: cannot mmap: %s", path, strerror(errno));
    close(fd);
    *size = (size_t)st.st_size;
    return p;
}

// A section [off, off + size) must lie inside the file (without wrapping around).
static void check_section(const char *path, const char *name, uint64_t off, uint64_t size, uint64_t file_size) {
    uint64_t end;
    if (add_overflow_u64(off, size, &end) || end > file_size)
        fatal("%s: %s section [%llu, +%llu) lies outside the file (%llu bytes)", path, name,
              (unsigned long long)off, (unsigned long long)size, (unsigned long long)file_size);
}

static void check_header(const char *path, const ModelHeader *h, uint64_t actual_size) {
    if (h->magic != MODELBIN_MAGIC) fatal("%s: not a model.bin file (bad magic)", path);
    if (h->version > MODELBIN_VERSION)
        fatal("%s: newer format version %u, this runner reads %d", path, h->version, MODELBIN_VERSION);
    if (h->version != MODELBIN_VERSION) fatal("%s: unknown format version %u", path, h->version);
    if (h->file_size > actual_size)
        fatal("%s: truncated: the header says %llu bytes, the file has %llu", path,
              (unsigned long long)h->file_size, (unsigned long long)actual_size);
    if (h->file_size < actual_size)
        fatal("%s: %llu bytes, but the header says %llu (trailing data)", path,
              (unsigned long long)actual_size, (unsigned long long)h->file_size);
    check_section(path, "tokenizer", h->tok_offset, h->tok_size, h->file_size);
    check_section(path, "weights", h->wt_offset, h->wt_size, h->file_size);
    if (h->tok_offset < MODELBIN_HEADER_SIZE || h->wt_offset < MODELBIN_HEADER_SIZE)
        fatal("%s: a section overlaps the header", path);
    if (h->wt_offset % MODELBIN_WEIGHTS_ALIGN)
        fatal("%s: weights offset %llu is not %d-aligned", path, (unsigned long long)h->wt_offset,
              MODELBIN_WEIGHTS_ALIGN);
}

// Point the Weights at the tensors of the mapped file (the layout was validated above).
static void point_weights(Model *m, const WeightLayout *l, const uint8_t *base) {
    const Config *c = &m->config;
    Weights *w = &m->weights;
    w->token_embedding = base + l->token_embedding;
    w->layers = xcalloc((size_t)c->n_layers, sizeof(LayerWeights));
    for (int i = 0; i < c->n_layers; i++) {
        const LayerOffsets *o = &l->layers[i];
        LayerWeights *lw = &w->layers[i];
        lw->attn_norm = (const float *)(base + o->attn_norm);
        lw->wq = base + o->wq;
        lw->wk = base + o->wk;
        lw->wv = base + o->wv;
        lw->wo = base + o->wo;
        lw->ffn_norm = (const float *)(base + o->ffn_norm);
        lw->w_gate = base + o->w_gate;
        lw->w_down = base + o->w_down;
        lw->w_up = base + o->w_up;
    }
    w->final_norm = (const float *)(base + l->final_norm);
    w->classifier = base + l->classifier;
}

// Everything once the bytes are in m->map: header, layout, tokenizer.
static void parse(Model *m, const char *path) {
    if (m->map_size < MODELBIN_HEADER_SIZE) short_file(path, m->map_size);
    ModelHeader h;
    memcpy(&h, m->map, sizeof h);
    check_header(path, &h, m->map_size);

    config_from_header(&m->config, &h);
    const char *e = config_check(&m->config);
    if (e) fatal("%s: bad header: %s", path, e);

    WeightLayout l;
    build_weight_layout(&l, &m->config);
    if (l.total != h.wt_size)
        fatal("%s: the header's dims need %llu bytes of weights, the weights section has %llu", path,
              (unsigned long long)l.total, (unsigned long long)h.wt_size);
    point_weights(m, &l, (const uint8_t *)m->map + h.wt_offset);
    free_weight_layout(&l);

    tokenizer_from_blob(&m->tokenizer, (const uint8_t *)m->map + h.tok_offset, h.tok_size);
    if (m->tokenizer.vocab_size != m->config.vocab_size)
        fatal("%s: the tokenizer has %d tokens, the model %d", path, m->tokenizer.vocab_size, m->config.vocab_size);
}

void load_model(Model *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->map = map_file(path, &m->map_size);
    m->mapped = 1;
    parse(m, path);
}

void load_model_memory(Model *m, const char *name, const void *data, size_t size) {
    if ((uintptr_t)data % MODELBIN_TENSOR_ALIGN) fatal("load_model_memory: %s: the bytes are not 64-byte aligned", name);
    memset(m, 0, sizeof *m);
    m->map = data;
    m->map_size = size;
    parse(m, name);
}

void free_model(Model *m) {
    free_tokenizer(&m->tokenizer);
    free(m->weights.layers);
    if (m->mapped) munmap((void *)m->map, m->map_size);
    memset(m, 0, sizeof *m);
}
