// util.h: the few helpers every module uses: fatal errors, checked allocation,
// whole-file reads, and fp16/bf16 <-> fp32 conversion.
#ifndef KVT_UTIL_H
#define KVT_UTIL_H

#include <stddef.h>
#include <stdint.h>

// Print "error: <message>" as one line on stderr and exit(1).
// Every bad input in kvtuner.c ends here: one clear line, non-zero exit, never a crash.
void fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

// Tests and fuzz harnesses only (the programs never call it): with a handler set, fatal()
// prints nothing and calls handler(message) instead of exiting, message being the text of the
// line without "error: ". The handler must not return (it longjmps back to its caller); if it
// does, fatal() prints and exits as usual. NULL restores the default.
typedef void (*FatalHandler)(const char *message);
void set_fatal_handler(FatalHandler handler);

// s for an error message that quotes it: control characters escaped (\xNN), cut to 80
// bytes ("..."), so that text from a file can neither break the one error line nor send
// terminal control codes. Returns one of a few rotating static buffers (up to four per message).
const char *printable(const char *s);

void *xmalloc(size_t n);             // malloc or fatal("out of memory ...")
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

// Read a whole file into a NUL-terminated buffer; *len (if non-NULL) gets its size.
// Missing or unreadable files are fatal with the path in the message.
char *read_file(const char *path, size_t *len);

// Overflow-checked arithmetic for sizes that scale with layers x context x dims.
// Return 0 on success, -1 on overflow.
int mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out);
int add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out);

// IEEE binary16 and bfloat16 conversions (round to nearest even).
static inline float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {                                   // subnormal: renormalise
            exp = 127 - 15 + 1;
            while ((man & 0x400) == 0) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);   // inf / nan
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    union { uint32_t u; float f; } v = { bits };
    return v.f;
}

static inline uint16_t fp32_to_fp16(float f) {
    union { float f; uint32_t u; } v = { f };
    uint32_t x = v.u, sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00);           // nan
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);          // overflow -> inf
    if (absx < 0x38800000u) {                                           // subnormal or zero
        if (absx < 0x33000000u) return (uint16_t)sign;                  // < half of smallest subnormal
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;   // e in 102..112
        // exact: value = m * 2^(e-150); subnormal unit = 2^-24 -> code = m * 2^(e-126)
        uint32_t rs = 126 - e;                                          // right shift of m to get code
        uint32_t code = m >> rs, rem = m & ((1u << rs) - 1), halfway = 1u << (rs - 1);
        if (rem > halfway || (rem == halfway && (code & 1))) code++;
        return (uint16_t)(sign | code);
    }
    uint32_t r = absx - 0x38000000u;                                    // rebias exponent 127 -> 15
    uint32_t code = r >> 13, rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (code & 1))) code++;
    return (uint16_t)(sign | code);
}

// f rounded to the nearest fp16 value (what an fp16 store and load give).
static inline float fp16_round(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }

static inline float bf16_to_fp32(uint16_t b) {
    union { uint32_t u; float f; } v = { (uint32_t)b << 16 };
    return v.f;
}

static inline uint16_t fp32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);  // quiet nan
    uint32_t rounding = 0x7fff + ((v.u >> 16) & 1);
    return (uint16_t)((v.u + rounding) >> 16);
}

#endif
