// export.c: the converter's command line. Reads a GGUF file, a Hugging Face folder, or
// makes a random model of a named shape, and writes model.bin (model/modelbin.h).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "export.h"
#include "../util/util.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: export IN OUT [--dtype f32|f16|bf16|q8_0]\n"
        "       export --random SHAPE --tokenizer SRC OUT [--dtype f32|f16|bf16|q8_0] [--seed N]\n"
        "\n"
        "  IN     a GGUF file (llama architecture; tensor types F32 F16 BF16 Q8_0 Q4_0 Q4_1)\n"
        "         or a Hugging Face folder: config.json, *.safetensors (with\n"
        "         model.safetensors.index.json when sharded), tokenizer.json\n"
        "  OUT    the model.bin to write (written to OUT.tmp, then renamed)\n"
        "  --dtype  weight dtype of the embedding and matrices (default f32; norms stay f32).\n"
        "         q8_0: GGUF's Q8_0 blocks (fp16 scale + 32 int8 per 32 weights along a row);\n"
        "         a GGUF tensor already in Q8_0 is copied as it is, others are quantized\n"
        "  --random SHAPE  random weights of a named shape: micro (1 layer, dim 16: fuzzing\n"
        "         seeds), tiny (2 layers, dim 64, untied, Llama-3.1 rope scaling), smollm2-135m,\n"
        "         llama3-8b (Llama-3.1-8B dims)\n"
        "  --tokenizer SRC  tokenizer for --random: a GGUF, a tokenizer.json, a tiktoken\n"
        "         tokenizer.model, or a model.bin. micro, tiny and smollm2-135m take the vocab size of\n"
        "         SRC; llama3-8b keeps its 128256 and needs a tokenizer of that size (Llama-3's)\n"
        "  --seed N  seed of the random weights (default 1)\n");
}

static DType parse_dtype(const char *s) {
    if (strcmp(s, "f32") == 0) return DTYPE_F32;
    if (strcmp(s, "f16") == 0) return DTYPE_F16;
    if (strcmp(s, "bf16") == 0) return DTYPE_BF16;
    if (strcmp(s, "q8_0") == 0) return DTYPE_Q8_0;
    fatal("--dtype: unknown dtype \"%s\" (use f32, f16, bf16 or q8_0)", s);
}

static uint64_t parse_seed(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') fatal("--seed: \"%s\" is not a non-negative integer", s);
    return v;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL}, *shape = NULL, *tok_src = NULL;
    int npos = 0;
    DType dtype = DTYPE_F32;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return 0; }
        if (a[0] == '-' && a[1]) {
            int known = !strcmp(a, "--dtype") || !strcmp(a, "--random") || !strcmp(a, "--tokenizer") ||
                        !strcmp(a, "--seed");
            if (!known) fatal("unknown option %s (see export --help)", a);
            if (i + 1 >= argc) fatal("%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--dtype")) dtype = parse_dtype(v);
            else if (!strcmp(a, "--random")) shape = v;
            else if (!strcmp(a, "--tokenizer")) tok_src = v;
            else seed = parse_seed(v);
            continue;
        }
        if (npos == 2) fatal("unexpected argument %s (see export --help)", a);
        pos[npos++] = a;
    }

    Config c;
    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    WeightSource src = {0};
    GGUFExport *ge = NULL;
    HFExport *he = NULL;
    const char *out;
    double t0 = now();
    if (shape) {
        if (npos != 1) fatal("--random needs exactly one output path (see export --help)");
        if (!tok_src) fatal("--random needs --tokenizer SRC (a GGUF, tokenizer.json or model.bin)");
        out = pos[0];
        if (!random_shape(shape, &c)) fatal("--random: unknown shape \"%s\" (known: %s)", shape, random_shape_names());
        load_any_tokenizer(&tok, tok_src);
        if (strcmp(shape, "llama3-8b") == 0) {
            if (tok.vocab_size != c.vocab_size)
                fatal("%s: llama3-8b needs a tokenizer of %d tokens (Llama-3's), this one has %d",
                      tok_src, c.vocab_size, tok.vocab_size);
        } else {
            c.vocab_size = tok.vocab_size;
        }
        random_source(&src, &c, seed);
    } else {
        if (tok_src) fatal("--tokenizer is only used with --random");
        if (npos != 2) fatal("expected IN and OUT (see export --help)");
        out = pos[1];
        struct stat st;
        if (stat(pos[0], &st) != 0) fatal("%s: cannot open: %s", pos[0], strerror(errno));
        size_t n = strlen(pos[0]);
        if (!S_ISDIR(st.st_mode) && n > 12 && strcmp(pos[0] + n - 12, ".safetensors") == 0)
            fatal("%s: give the Hugging Face folder that holds it (with config.json and tokenizer.json)", pos[0]);
        if (S_ISDIR(st.st_mode)) he = open_hf_export(pos[0], &c, &tok, &src);
        else ge = open_gguf_export(pos[0], &c, &tok, &src);
    }
    c.wdtype = dtype;
    write_model_bin(out, &c, &tok, &src);
    struct stat st;
    double mb = stat(out, &st) == 0 ? (double)st.st_size / 1e6 : 0;
    printf("export: wrote %s: %d layers, dim %d, %d/%d heads, ffn %d, vocab %d, %s weights, %.1f MB in %.1f s\n",
           out, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size, dtype_name(dtype), mb,
           now() - t0);
    if (ge) close_gguf_export(ge);
    if (he) close_hf_export(he);
    free_tokenizer(&tok);
    return 0;
}
