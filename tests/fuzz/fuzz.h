// fuzz.h: what the libFuzzer harnesses in tests/fuzz/ share.
//
// Each harness drives a real loader on the input bytes through its memory API. A loader ends
// a bad input in fatal(): here a handler (set only by the harnesses and the tests that replay
// them) longjmps back instead of exiting, so one process runs millions of inputs.
//
// Memory on that path. The programs exit after fatal() and the loaders do not free what they
// built so far; over millions of runs that garbage would grow without bound, and the leak
// checker would report every rejected input. Rather than give every loader an unwinding
// path, a call made through fuzz_call() records each block allocated while it runs (through
// the sanitizer's malloc/free hooks) and, if it ends in fatal(), frees the blocks of that
// call still alive. A call that returns keeps its blocks, which the harness frees as a
// program would: leak detection stays on for every input the loaders accept. (Files are not
// involved: the memory APIs take the bytes, so a failed call leaves no mapping or descriptor.)
#ifndef KVT_FUZZ_H
#define KVT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include "../../tokenizer/tokenizer.h"

// Run step(ctx). Returns 1 if it returned, 0 if it ended in fatal() (the message is then in
// fuzz_last_error()). Calls do not nest. A fatal() outside any fuzz_call aborts: a harness
// calls a loader directly where that call must succeed (a property, or a harness bug).
int fuzz_call(void (*step)(void *ctx), void *ctx);
const char *fuzz_last_error(void);
// The verdict of the loader on the current input: the message of the input's first
// fuzz_call (each harness loads first) if it ended in fatal(), "" if it returned. This is the
// one error line a program given the same bytes prints (without "error: " and with the
// harness's name for the file). fuzz_begin_input() resets it; FUZZ_TARGET calls it.
const char *fuzz_verdict(void);
void fuzz_begin_input(void);

// A broken property: print it and abort, so that libFuzzer (or the test) reports the input.
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

// The tokenizer properties, on text[0..len):
//   - invalid UTF-8 is refused with the offset tokenizer_utf8_check names;
//   - valid UTF-8 either encodes, with and without special tokens, to ids in the vocabulary
//     (and no special id unless asked), that decode (streaming) back to the text byte for
//     byte; or it is refused naming a byte that has no token, at its offset.
void fuzz_check_tokenizer(const Tokenizer *t, const uint8_t *text, size_t len);
// The same on a few fixed texts and on texts made of t's own special tokens between
// multi-byte characters (where a special token that split a character would show).
void fuzz_check_tokenizer_samples(const Tokenizer *t);

// A tokenizer a builder made must survive the model.bin section: written, read back (a
// fatal error there is a broken property: export would write a file the runner refuses) and
// written again, the same bytes.
void fuzz_check_blob_roundtrip(const Tokenizer *t);

// One libFuzzer entry point per harness binary; the tests link every harness at once and
// call fuzz_NAME(data, size) to replay saved inputs.
#ifdef KVT_LIBFUZZER
#define FUZZ_TARGET(name)                                                  \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {         \
        fuzz_begin_input();                                                \
        run(data, size);                                                   \
        return 0;                                                          \
    }
#else
#define FUZZ_TARGET(name)                                                  \
    void fuzz_##name(const uint8_t *data, size_t size);                    \
    void fuzz_##name(const uint8_t *data, size_t size) {                   \
        fuzz_begin_input();                                                \
        run(data, size);                                                   \
    }
#endif

#endif
