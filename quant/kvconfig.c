// kvconfig.c: the --kv* options, the presets, and printing the effective configuration.
// Config files: kvconfig_file.c.
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "kvconfig.h"
#include "../util/util.h"

void kvoptions_init(KVOptions *o) {
    memset(o, 0, sizeof *o);
}

static int parse_int(const char *s, const char *flag, long lo) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > INT_MAX) fatal("%s: '%s' is not an integer >= %ld", flag, s, lo);
    return (int)v;
}

int kvoptions_parse_arg(KVOptions *o, int argc, char **argv, int *i) {
    static const char *with_value[] = { "--kv", "--kv-config", "--kv-preset", "--kv-group", "--kv-residual",
                                        "--kv-key-axis", "--kv-sink" };
    const char *arg = argv[*i], *val = NULL;
    if (strcmp(arg, "--kv-sym") == 0) { o->symmetric = 1; return 1; }
    if (strcmp(arg, "--kv-rotate") == 0) { o->rotate = 1; return 1; }
    int which = -1;
    for (int k = 0; k < 7; k++) {
        size_t n = strlen(with_value[k]);
        if (strncmp(arg, with_value[k], n) == 0 && (arg[n] == 0 || arg[n] == '=')) {
            which = k;
            if (arg[n] == '=') val = arg + n + 1;
            break;
        }
    }
    if (which < 0) return 0;
    if (!val) {
        if (*i + 1 >= argc) fatal("%s: missing value", with_value[which]);
        val = argv[++*i];
    }
    const char *flag = with_value[which];
    switch (which) {
    case 0: { int k, v; parse_kv_bits(val, flag, &k, &v); o->spec = val; break; }
    case 1: o->config_path = val; break;
    case 2:
        if (strcmp(val, "pertoken") && strcmp(val, "kivi")) fatal("%s: '%s' is not pertoken or kivi", flag, val);
        o->preset = val;
        break;
    case 3:
        o->group = parse_int(val, flag, -1);
        if (o->group == 0) fatal("%s: group size must be positive or -1 (the whole head vector)", flag);
        o->group_set = 1;
        break;
    case 4: o->residual = parse_int(val, flag, 0); o->residual_set = 1; break;
    case 5:
        if (strcmp(val, "token") == 0) o->key_axis = KEY_AXIS_TOKEN;
        else if (strcmp(val, "channel") == 0) o->key_axis = KEY_AXIS_CHANNEL;
        else fatal("%s: '%s' is not token or channel", flag, val);
        o->key_axis_set = 1;
        break;
    case 6: o->sink = parse_int(val, flag, 0); o->sink_set = 1; break;
    }
    return 1;
}

static int bits_ok(long b) { return b == 2 || b == 4 || b == 8 || b == 16; }

void parse_kv_bits(const char *spec, const char *what, int *k_bits, int *v_bits) {
    char *end;
    if (strcmp(spec, "fp16") == 0) { *k_bits = *v_bits = 16; return; }
    if (strncmp(spec, "kv", 2) == 0) {
        long b = strtol(spec + 2, &end, 10);
        if (spec[2] >= '0' && spec[2] <= '9' && !*end && bits_ok(b)) { *k_bits = *v_bits = (int)b; return; }
    } else if (spec[0] == 'k' && spec[1] >= '0' && spec[1] <= '9') {
        long k = strtol(spec + 1, &end, 10);
        if (*end == 'v' && end[1] >= '0' && end[1] <= '9') {
            long v = strtol(end + 1, &end, 10);
            if (!*end && bits_ok(k) && bits_ok(v)) { *k_bits = (int)k; *v_bits = (int)v; return; }
        }
    }
    fatal("%s: '%s' is not fp16, kv<bits> or k<bits>v<bits> with bits in {2, 4, 8, 16}", what, spec);
}

void build_kvspec_from_options(KVSpec *s, const KVOptions *o, const Config *c) {
    if (o->spec && o->config_path) fatal("--kv and --kv-config: give one or the other");
    int k = 16, v = 16;
    if (o->spec) parse_kv_bits(o->spec, "--kv", &k, &v);
    build_kvspec_uniform(s, c->n_layers, c->n_kv_heads, c->head_dim, k, v);
    if (o->config_path) load_kvconfig(s, o->config_path);
    // Presets (docs/DESIGN.md §3): kivi unless asked otherwise when anything is quantized.
    const char *preset = o->preset ? o->preset : (o->spec || o->config_path) ? "kivi" : "pertoken";
    if (strcmp(preset, "kivi") == 0) { s->group = 32; s->residual = 32; s->key_axis = KEY_AXIS_CHANNEL; }
    else { s->group = -1; s->residual = 0; s->key_axis = KEY_AXIS_TOKEN; }
    if (o->group_set) s->group = o->group;
    if (o->residual_set) s->residual = o->residual;
    if (o->key_axis_set) s->key_axis = o->key_axis;
    if (o->sink_set) s->sink = o->sink;
    s->symmetric = o->symmetric;
    if (o->rotate) memset(build_kvspec_rotate(s), 1, (size_t)s->n_layers);   // every layer
    kvspec_validate(s, "kv cache options");
}

const char *kvspec_label(const KVSpec *s, char *buf, int n) {
    KVBits b0 = s->bits[0];
    for (int i = 1; i < s->n_layers * s->n_kv_heads; i++)
        if (s->bits[i].k_bits != b0.k_bits || s->bits[i].v_bits != b0.v_bits) { snprintf(buf, (size_t)n, "mixed"); return buf; }
    if (b0.k_bits == 16 && b0.v_bits == 16) snprintf(buf, (size_t)n, "fp16");
    else if (b0.k_bits == b0.v_bits) snprintf(buf, (size_t)n, "kv%d", b0.k_bits);
    else snprintf(buf, (size_t)n, "k%dv%d", b0.k_bits, b0.v_bits);
    return buf;
}

void kvspec_print(FILE *f, const KVSpec *s) {
    char g[32];
    if (s->group == -1) snprintf(g, sizeof g, "whole head vector");
    else snprintf(g, sizeof g, "groups of %d", s->group);
    if (s->key_axis == KEY_AXIS_CHANNEL) fprintf(f, "kv cache: keys per channel (groups of %d tokens)", s->group);
    else fprintf(f, "kv cache: keys per token (%s)", g);
    fprintf(f, ", values per token (%s), residual R %d, sink %d, %s\n",
            g, s->residual, s->sink, s->symmetric ? "symmetric" : "asymmetric");
    int H = s->n_kv_heads;
    for (int l = 0; l < s->n_layers; l++) {
        const KVBits *b = s->bits + (int64_t)l * H;
        int uniform = 1;
        for (int h = 1; h < H; h++) uniform &= b[h].k_bits == b[0].k_bits && b[h].v_bits == b[0].v_bits;
        fprintf(f, "kv layer %2d:%s", l, s->rotate && s->rotate[l] ? " rotated" : "");
        for (int h = 0; h < (uniform ? 1 : H); h++) {
            if (!uniform) fprintf(f, " h%d", h);
            fprintf(f, " k%dv%d", b[h].k_bits, b[h].v_bits);
        }
        fprintf(f, "\n");
    }
}

void kvcache_print_memory(FILE *f, const KVCache *c) {
    const KVSpec *s = kvcache_spec(c);
    for (int l = 0; l <= s->n_layers; l++) {              // the layers, then the total
        int layer = l == s->n_layers ? -1 : l;
        KVMemory m = kvcache_memory(c, layer);
        if (layer >= 0) fprintf(f, "kv memory layer %2d:", layer);
        else fprintf(f, "kv memory total   :");
        fprintf(f, " codes %llu scales %llu fp16 %llu total %llu bytes, %.3f bits/elem\n",
                (unsigned long long)m.code_bytes, (unsigned long long)m.scale_bytes,
                (unsigned long long)m.fp16_bytes, (unsigned long long)m.total, m.bits_per_elem);
    }
}
