// fuzz_safetensors.c: the safetensors reader (export/safetensors.c): the u64 length, the
// JSON header, every tensor's dtype, shape and data_offsets, then every tensor read back
// whole as f32 (as export reads rows), checked against its own bytes.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../export/safetensors.h"
#include "../../util/util.h"

#define MAX_READ ((uint64_t)1 << 20)    // elements read back per input

typedef struct { const uint8_t *data; size_t size; SafeTensors st; } Ctx;

static void do_open(void *p) {
    Ctx *x = p;
    memset(&x->st, 0, sizeof x->st);
    st_open_memory(&x->st, "fuzz.safetensors", x->data, x->size);
}

// Each element is its stored bits widened: f32 as is, and f16 / bf16 narrow back to the very
// bits stored (NaNs aside: their payload need not survive).
static void read_back(const STTensor *t, uint64_t *budget) {
    uint64_t n = t->n_elements;
    if (n == 0 || n > *budget) return;
    *budget -= n;
    uint64_t cols = t->n_dims ? t->shape[t->n_dims - 1] : 1, rows = n / cols, es = t->dtype == ST_F32 ? 4 : 2;
    float *y = xmalloc(n * sizeof *y);
    st_rows(t, 0, rows, cols, y);
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *b = t->data + i * es;
        uint16_t h = (uint16_t)(b[0] | b[1] << 8);
        int ok = t->dtype == ST_F32 ? memcmp(&y[i], b, 4) == 0
                 : isnan(y[i]) || (t->dtype == ST_F16 ? fp32_to_fp16(y[i]) : fp32_to_bf16(y[i])) == h;
        if (!ok) fuzz_fail("tensor %s: element %llu reads as %g", t->name, (unsigned long long)i, (double)y[i]);
    }
    free(y);
}

static void run(const uint8_t *data, size_t size) {
    Ctx x = { data, size, {0} };
    if (!fuzz_call(do_open, &x)) return;
    uint64_t budget = MAX_READ;
    for (int i = 0; i < x.st.n_tensors; i++) {
        const STTensor *t = &x.st.tensors[i];
        if (st_find(&x.st, t->name) != t) fuzz_fail("tensor %s: st_find finds another", t->name);
        read_back(t, &budget);
    }
    st_close(&x.st);
}

FUZZ_TARGET(safetensors)
