// fuzz_tokblob.c: the tokenizer section of model.bin on its own (tokenizer/blob.c), so that
// the fuzzer reaches deep into it without first matching a whole model.bin header. The
// format has one encoding per tokenizer: what loads must write back byte for byte, and
// encode and decode sample texts (fuzz_check_tokenizer_samples).
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../util/util.h"

typedef struct { const uint8_t *data; size_t size; Tokenizer t; } Ctx;

static void do_load(void *p) { Ctx *x = p; tokenizer_from_blob(&x->t, x->data, x->size); }

static void run(const uint8_t *data, size_t size) {
    Ctx x = { data, size, {0} };
    if (!fuzz_call(do_load, &x)) return;
    uint64_t n;
    uint8_t *blob = tokenizer_to_blob(&x.t, &n);
    if (n != size || memcmp(blob, data, size)) fuzz_fail("tokenizer_to_blob does not give back the section");
    free(blob);
    fuzz_check_tokenizer_samples(&x.t);
    free_tokenizer(&x.t);
}

FUZZ_TARGET(tokblob)
