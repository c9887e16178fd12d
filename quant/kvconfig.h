// kvconfig.h: from command-line options and KVTuner config files to a KVSpec (docs/DESIGN.md §3, §4).
//
//   --kv SPEC            fp16 | kv8 | k8v4 | kv4 | k4v2 | kv2 | k<bits>v<bits>, bits in {2,4,8,16}
//   --kv-config FILE     per-layer or per-head bits, KVTuner YAML or the same structure in JSON
//   --kv-preset P        pertoken (G -1, R 0, keys per token) | kivi (G 32, R 32, keys per channel)
//   --kv-group G  --kv-residual R  --kv-key-axis token|channel  --kv-sym  --kv-sink N
//   --kv-rotate          Hadamard-rotate q, k, v of every layer (quant/kvrotate.h); a config file
//                        may instead set `rotate: true` per layer
//
// Without --kv or --kv-config the cache is fp16. With either, the grouping starts from the
// kivi preset (the seed's headline setting) unless --kv-preset says otherwise, and each
// explicit flag then overrides its single field. Bad values are fatal naming the flag.
//
// In run.c:
//     KVOptions kvo; kvoptions_init(&kvo);
//     for (int i = 2; i < argc; i++) { if (kvoptions_parse_arg(&kvo, argc, argv, &i)) continue; ... }
//     KVSpec spec; build_kvspec_from_options(&spec, &kvo, &model.config);
//     if (verbose) kvspec_print(stderr, &spec);
//     KVCache *cache = build_kvcache(&spec, ctx);  ...  kvcache_print_memory(stderr, cache);
#ifndef KVT_KVCONFIG_H
#define KVT_KVCONFIG_H

#include <stdio.h>
#include "kvcache.h"
#include "../model/config.h"

typedef struct {
    const char *spec;          // --kv SPEC, or NULL
    const char *config_path;   // --kv-config FILE, or NULL
    const char *preset;        // --kv-preset, or NULL (kivi when quantizing)
    int group, residual, sink; // explicit overrides, valid when the *_set flag is 1
    int group_set, residual_set, sink_set;
    int key_axis, key_axis_set;
    int symmetric;             // --kv-sym given
    int rotate;                // --kv-rotate given
} KVOptions;

void kvoptions_init(KVOptions *o);
// If argv[*i] is one of the --kv* options (also --opt=value), consume it and its value
// (advancing *i past the value) and return 1; otherwise return 0 and leave *i alone.
int kvoptions_parse_arg(KVOptions *o, int argc, char **argv, int *i);

// The spec the options describe for a model of config c (validated; fatal on any problem).
void build_kvspec_from_options(KVSpec *s, const KVOptions *o, const Config *c);

// "k8v4"-style SPEC: fatal naming `what` unless it is fp16 | kv<b> | k<b>v<b> with b in {2,4,8,16}.
void parse_kv_bits(const char *spec, const char *what, int *k_bits, int *v_bits);

// Read a KVTuner config file (YAML, or JSON when it starts with '{') into s->bits, which must
// already be allocated for s's shape: every layer (and every head, in the per-head form) must
// be present exactly once with nbits_key and nbits_value in {2, 4, 8, 16}; anything else is
// fatal naming the file, the layer/head and the problem. A layer may also say `rotate: true`
// (or false) beside its bits or its heads; any true gives s a rotate array.
void load_kvconfig(KVSpec *s, const char *path);
// The same for the file's text in memory, bytes[0..len); name stands for the path in messages.
void load_kvconfig_text(KVSpec *s, const char *name, const char *bytes, size_t len);

// A short name for the bits: "fp16", "kv4", "k8v4", or "mixed".
const char *kvspec_label(const KVSpec *s, char *buf, int n);
// The effective configuration, one line per layer (for --verbose).
void kvspec_print(FILE *f, const KVSpec *s);
// Exact memory per layer and in total for the cache's current contents.
void kvcache_print_memory(FILE *f, const KVCache *c);

#endif
