// tokenizer_speed.c: encode speed of our tokenizer, in MB of UTF-8 text per CPU second, on
// one thread. bench/tokenizer_speed.py runs it beside the Hugging Face `tokenizers` library.
//
//   build/tokenizer_speed TOKENIZER TEXT [REPEATS]
//     TOKENIZER  a tokenizer.json, GGUF, model.bin or tiktoken tokenizer.model
//     TEXT       a UTF-8 file: encoded whole, and cut into 2,000-byte chunks
// Prints one line: load_s X whole_mb_s X chunks_mb_s X tokens N
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../export/export.h"
#include "../tokenizer/tokenizer.h"
#include "../util/util.h"

// Process CPU time, not wall time: one thread either way, and on a shared machine (2 cores,
// other jobs) CPU time is what stays comparable between the two tokenizers.
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Best time over `repeats` runs of encoding text in pieces of `chunk` bytes (cut at a
// character boundary); returns seconds and the token count.
static double time_encode(const Tokenizer *t, const char *text, size_t len, size_t chunk, int repeats, long *n_tok) {
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t0 = now();
        long n = 0;
        for (size_t a = 0; a < len;) {
            size_t b = a + chunk < len ? a + chunk : len;
            while (b < len && (text[b] & 0xc0) == 0x80) b++;        // don't split a character
            int *ids;
            n += tokenizer_encode(t, text + a, b - a, 0, &ids);
            free(ids);
            a = b;
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
        *n_tok = n;
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc < 3) fatal("usage: tokenizer_speed TOKENIZER TEXT [REPEATS]");
    int repeats = argc > 3 ? atoi(argv[3]) : 3;
    if (repeats < 1) fatal("REPEATS must be >= 1");
    Tokenizer t;
    double t0 = now();
    load_any_tokenizer(&t, argv[1]);
    double load = now() - t0;
    size_t len;
    char *text = read_file(argv[2], &len);
    long n_whole, n_chunks;
    double whole = time_encode(&t, text, len, len, repeats, &n_whole);
    double chunks = time_encode(&t, text, len, 2000, repeats, &n_chunks);
    printf("load_s %.3f whole_mb_s %.2f chunks_mb_s %.2f tokens %ld\n", load, (double)len / 1e6 / whole,
           (double)len / 1e6 / chunks, n_whole);
    free(text);
    free_tokenizer(&t);
    return 0;
}
