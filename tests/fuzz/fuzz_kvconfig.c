// fuzz_kvconfig.c: KVTuner config files, YAML and JSON (quant/kvconfig_file.c), read for
// three model shapes (Llama-3-8B's 32 layers x 8 KV heads, SmolLM2's 30 x 3, a small 4 x 2).
// A config that loads must
//   - read the same when written out again in the other syntax (per-head JSON, per-layer
//     YAML where the heads agree);
//   - give a cache whose byte count after every append equals the closed form, for the
//     per-token grouping and for KIVI's per-channel keys with a sink.
// The head size does not matter to the config; 8 keeps the caches cheap.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../../quant/kvcache.h"
#include "../../quant/kvconfig.h"
#include "../../util/util.h"

#define HD 8
static const int shapes[][2] = { { 32, 8 }, { 30, 3 }, { 4, 2 } };

typedef struct { const char *text; size_t len; KVSpec *s; } Ctx;

static void do_load(void *p) { Ctx *x = p; load_kvconfig_text(x->s, "fuzz.yaml", x->text, x->len); }

// The config of s written out: JSON layer -> head -> bits, or YAML layer -> bits.
static char *write_config(const KVSpec *s, int json, size_t *len) {
    size_t cap = 128 + (size_t)s->n_layers * s->n_kv_heads * 64, n = 0;
    char *o = xmalloc(cap);
    int H = s->n_kv_heads;
    if (json) n += (size_t)snprintf(o + n, cap - n, "{");
    for (int l = 0; l < s->n_layers; l++) {
        const KVBits *b = s->bits + l * H;
        if (json) {
            n += (size_t)snprintf(o + n, cap - n, "%s\"%d\": {", l ? ", " : "", l);
            for (int h = 0; h < H; h++)
                n += (size_t)snprintf(o + n, cap - n, "%s\"%d\": {\"nbits_key\": %d, \"nbits_value\": %d}",
                                      h ? ", " : "", h, b[h].k_bits, b[h].v_bits);
            n += (size_t)snprintf(o + n, cap - n, "}");
        } else {
            n += (size_t)snprintf(o + n, cap - n, "%d:\n  nbits_key: %d\n  nbits_value: %d\n", l, b[0].k_bits,
                                  b[0].v_bits);
        }
    }
    if (json) n += (size_t)snprintf(o + n, cap - n, "}\n");
    *len = n;
    return o;
}

static int heads_agree(const KVSpec *s) {
    for (int i = 0; i < s->n_layers * s->n_kv_heads; i++)
        if (memcmp(&s->bits[i], &s->bits[i - i % s->n_kv_heads], sizeof(KVBits))) return 0;
    return 1;
}

static void check_rewrite(const KVSpec *s, int json) {
    KVSpec again;
    build_kvspec_uniform(&again, s->n_layers, s->n_kv_heads, HD, 16, 16);
    size_t len;
    char *text = write_config(s, json, &len);
    Ctx x = { text, len, &again };
    if (!fuzz_call(do_load, &x)) fuzz_fail("config written as %s refused: %s", json ? "JSON" : "YAML", fuzz_last_error());
    if (memcmp(again.bits, s->bits, (size_t)s->n_layers * s->n_kv_heads * sizeof(KVBits)))
        fuzz_fail("config written as %s reads differently", json ? "JSON" : "YAML");
    free(text);
    free_kvspec(&again);
}

// Bytes of one stream after T appends (DESIGN §3): sink rows and the fp16 window in fp16,
// the quantized tokens as groups of packed codes plus an fp16 scale and offset each.
static uint64_t stream_bytes(const KVSpec *s, int bits, int per_channel, int64_t T) {
    if (bits == 16) return (uint64_t)T * HD * 2;
    int64_t S = s->sink, R = s->residual, n = T > S ? T - S : 0;
    int64_t nq = per_channel ? n - n % R : (n > R ? n - R : 0);
    int64_t G = per_channel || s->group != -1 ? s->group : HD;
    int64_t groups = per_channel ? nq / G * HD : nq * (HD / G);
    return (uint64_t)(groups * ((G * bits + 7) / 8) + groups * 4 + (T - nq) * HD * 2);
}

static void check_cache(KVSpec *s, uint32_t seed) {
    static const struct { int group, residual, axis, sink; } grouping[] = {
        { -1, 0, KEY_AXIS_TOKEN, 0 },       // pertoken: quantize on append
        { 4, 8, KEY_AXIS_CHANNEL, 1 },      // KIVI: keys per channel in blocks of 4 tokens
    };
    const int64_t T = 20;
    float *k = xmalloc((size_t)s->n_kv_heads * HD * sizeof(float)), *v = xmalloc((size_t)s->n_kv_heads * HD * sizeof(float));
    for (size_t g = 0; g < sizeof grouping / sizeof grouping[0]; g++) {
        s->group = grouping[g].group; s->residual = grouping[g].residual;
        s->key_axis = grouping[g].axis; s->sink = grouping[g].sink; s->symmetric = seed & 1;
        KVCache *c = build_kvcache(s, T);
        for (int64_t t = 1; t <= T; t++) {
            for (int l = 0; l < s->n_layers; l++) {
                for (int i = 0; i < s->n_kv_heads * HD; i++) {
                    seed = seed * 1664525u + 1013904223u;
                    k[i] = (float)(seed >> 8) / 16777216.0f * 8 - 4;
                    v[i] = -k[i] * 0.5f;
                }
                kvcache_append(c, l, k, v);
            }
            uint64_t total = 0;
            for (int l = 0; l < s->n_layers; l++) {
                uint64_t want = 0;
                for (int h = 0; h < s->n_kv_heads; h++) {
                    KVBits b = s->bits[l * s->n_kv_heads + h];
                    want += stream_bytes(s, b.k_bits, s->key_axis == KEY_AXIS_CHANNEL, t) + stream_bytes(s, b.v_bits, 0, t);
                }
                KVMemory m = kvcache_memory(c, l);
                if (m.total != want || m.code_bytes + m.scale_bytes + m.fp16_bytes != m.total)
                    fuzz_fail("layer %d after %lld tokens: %llu bytes, closed form %llu", l, (long long)t,
                              (unsigned long long)m.total, (unsigned long long)want);
                total += want;
            }
            if (kvcache_memory(c, -1).total != total) fuzz_fail("the cache total is not the sum of its layers");
        }
        free_kvcache(c);
    }
    free(k);
    free(v);
}

static void run(const uint8_t *data, size_t size) {
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++) seed = (seed ^ data[i]) * 16777619u;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        KVSpec s;
        build_kvspec_uniform(&s, shapes[i][0], shapes[i][1], HD, 16, 16);
        Ctx x = { (const char *)data, size, &s };
        if (fuzz_call(do_load, &x)) {
            check_rewrite(&s, 1);
            if (heads_agree(&s)) check_rewrite(&s, 0);
            check_cache(&s, seed);
        }
        free_kvspec(&s);
    }
}

FUZZ_TARGET(kvconfig)
