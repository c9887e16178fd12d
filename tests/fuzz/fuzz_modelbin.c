// fuzz_modelbin.c: the model.bin loader (model/model.c, model/modelbin.c): header, tensor
// layout, tokenizer section. A file it accepts must also run: one token through the
// forward pass with an fp16 cache and with a 2-bit quantized one, without any sanitizer
// report (a fatal error on non-finite keys or values is allowed: random bytes as weights).
// Its tokenizer section must come back byte for byte from tokenizer_to_blob.
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../model/model.h"
#include "../../model/modelbin.h"
#include "../../quant/kvcache.h"
#include "../../util/util.h"

typedef struct {
    const uint8_t *data;
    size_t size;
    Model m;
    KVSpec spec;
    KVCache *cache;
    RunState s;
    int token;
    float *logits;
} Ctx;

static void do_load(void *p) { Ctx *x = p; load_model_memory(&x->m, "fuzz.bin", x->data, x->size); }

static void do_forward(void *p) {
    Ctx *x = p;
    x->cache = build_kvcache(&x->spec, 1);
    build_runstate(&x->s, &x->m.config, 1, 1);
    x->logits = forward(&x->m, &x->s, x->cache, &x->token, 1, 0, 0);
}

static void run(const uint8_t *data, size_t size) {
    // The loader reads the tensors in place: give it the 64-byte alignment a mapping has.
    uint8_t *copy = aligned_alloc(64, (size + 64) / 64 * 64);
    if (size) memcpy(copy, data, size);
    Ctx x = { .data = copy, .size = size };
    if (fuzz_call(do_load, &x)) {
        const Config *c = &x.m.config;
        ModelHeader h;
        memcpy(&h, copy, sizeof h);
        uint64_t n;
        uint8_t *blob = tokenizer_to_blob(&x.m.tokenizer, &n);
        if (n != h.tok_size || memcmp(blob, copy + h.tok_offset, n))
            fuzz_fail("the tokenizer section does not come back from tokenizer_to_blob");
        free(blob);
        fuzz_check_tokenizer_samples(&x.m.tokenizer);
        x.token = (int)(size % (size_t)c->vocab_size);
        for (int bits = 16; bits >= 2; bits -= 14) {
            build_kvspec_uniform(&x.spec, c->n_layers, c->n_kv_heads, c->head_dim, bits, bits);
            x.cache = NULL;
            if (fuzz_call(do_forward, &x)) {
                char piece[64];
                DecodeState ds = {0};
                int best = 0;
                for (int i = 1; i < c->vocab_size; i++) if (x.logits[i] > x.logits[best]) best = i;
                if (x.m.tokenizer.token_len[best] <= 48) tokenizer_decode_step(&x.m.tokenizer, &ds, best, piece);
                free_runstate(&x.s);
                free_kvcache(x.cache);
            }
            free_kvspec(&x.spec);
        }
        free_model(&x.m);
    }
    free(copy);
}

FUZZ_TARGET(modelbin)
