// tokenizer_src.c: `export --random ... --tokenizer SRC` takes the tokenizer from whatever
// SRC is, recognised by its first bytes: a GGUF, a model.bin, a tokenizer.json ('{'), or
// Meta's tiktoken tokenizer.model (base64 and rank per line).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#include "export.h"
#include "gguf.h"
#include "../model/modelbin.h"
#include "../util/util.h"

void load_any_tokenizer(Tokenizer *t, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fatal("%s: cannot open: %s", path, strerror(errno));
    unsigned char head[MODELBIN_HEADER_SIZE];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n >= 4 && memcmp(head, "GGUF", 4) == 0) {
        GGUFFile g;
        gguf_open(&g, path);
        tokenizer_from_gguf(t, &g);
        gguf_close(&g);
        return;
    }
    uint32_t magic = n >= 4 ? (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 |
                                  (uint32_t)head[3] << 24 : 0;
    if (magic == MODELBIN_MAGIC) {   // read only the header and the tokenizer section
        f = fopen(path, "rb");
        struct stat st;
        if (!f || fstat(fileno(f), &st) != 0) fatal("%s: cannot open: %s", path, strerror(errno));
        if (n < MODELBIN_HEADER_SIZE) fatal("%s: truncated model.bin header", path);
        ModelHeader h;
        memcpy(&h, head, sizeof h);
        const char *e = header_check(&h, (uint64_t)st.st_size);
        if (e) fatal("%s: %s", path, e);
        uint8_t *blob = xmalloc((size_t)h.tok_size);
        if (fseeko(f, (off_t)h.tok_offset, SEEK_SET) != 0 || fread(blob, 1, (size_t)h.tok_size, f) != h.tok_size)
            fatal("%s: cannot read the tokenizer section", path);
        fclose(f);
        tokenizer_from_blob(t, blob, h.tok_size);
        free(blob);
        return;
    }
    size_t i = 0;
    while (i < n && (head[i] == ' ' || head[i] == '\t' || head[i] == '\n' || head[i] == '\r')) i++;
    if (i < n && head[i] == '{') build_tokenizer_from_hf_json(t, path);
    else if (n > 0) build_tokenizer_from_tiktoken(t, path);
    else fatal("%s: empty file, not a tokenizer", path);
}
