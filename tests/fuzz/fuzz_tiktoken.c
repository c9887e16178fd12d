// fuzz_tiktoken.c: Meta's tiktoken tokenizer.model ("<base64> <rank>" per line;
// tokenizer/build.c). A tokenizer that loads must survive the model.bin section and encode
// and decode sample texts, as in fuzz_tokenizer_json.c.
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../util/util.h"

typedef struct { const uint8_t *data; size_t size; Tokenizer t; } Ctx;

static void do_load(void *p) {
    Ctx *x = p;
    build_tokenizer_from_tiktoken_text(&x->t, "fuzz.model", (const char *)x->data, x->size);
}

static void run(const uint8_t *data, size_t size) {
    Ctx x = { data, size, {0} };
    if (!fuzz_call(do_load, &x)) return;
    fuzz_check_blob_roundtrip(&x.t);
    fuzz_check_tokenizer_samples(&x.t);
    free_tokenizer(&x.t);
}

FUZZ_TARGET(tiktoken)
