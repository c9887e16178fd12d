// passkey.c: long-context retrieval under each KV-cache configuration (docs/DESIGN.md §5).
//
// A 5-digit pass key is hidden at several depths of Shakespeare text (data), in
// prompts of about 1k, 2k, 4k and 8k tokens (SmolLM2's trained context is 8192: prompt +
// key + greedy tokens stay within the length). For each prompt and configuration:
//   - key log-likelihood: mean ln p(key token) over the key's tokens, teacher-forced after
//     the prompt. It degrades smoothly, so it shows a cache's damage even where a 135M
//     model fails to answer;
//   - exact match: greedy-decode a few tokens and check the key's digits appear.
// Every configuration sees the same prompts (the keys come from --seed).
// The prompts of one length differ only from the needle on: before it they are the intro and
// the start of the same haystack. So for each length and configuration one shared cache is
// extended along that common prefix, depth by depth in order of the needle's position, and
// each depth copies it (kvcache_copy) and prefills only its needle and what follows. The
// results are those of prefilling every prompt whole (a position's computation does not
// depend on how the prompt is split into batches).
//
//   build/passkey MODEL [--kv fp16,kv8,...] [--presets pertoken,kivi] [--lengths 1024,2048,4096,8192]
//                       [--depths 0.1,0.3,0.5,0.7,0.9] [--seed 1234] [--text FILE] [--out FILE]
// Writes one tab-separated row per (length, configuration, depth) as it goes (to --out, else
// stdout), the depths of one length and configuration in order of the needle's position. A
// row's seconds are its own work: the shared prefix's extension up to its needle, the rest of
// its prompt, scoring and decoding.
#include "benchrun.h"
#include "evaltext.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_SLACK 8   // tokens kept free after the prompt: the key (6) and a little more

static uint64_t splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void usage(void) {
    fprintf(stderr, "usage: passkey MODEL [--kv LIST] [--presets LIST] [--lengths LIST] [--depths LIST] "
                    "[--seed N] [--text FILE] [--out FILE]\n");
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') usage();
    const char *kvs = "fp16,kv8,k8v4,k4v8,kv4,k4v2,kv2", *presets = "pertoken,kivi";
    const char *lengths_s = "1024,2048,4096,8192", *depths_s = "0.1,0.3,0.5,0.7,0.9";
    const char *text_path = "data/tinyshakespeare.txt", *out_path = NULL;
    uint64_t seed = 1234;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) usage();
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--kv")) kvs = v;
        else if (!strcmp(a, "--presets")) presets = v;
        else if (!strcmp(a, "--lengths")) lengths_s = v;
        else if (!strcmp(a, "--depths")) depths_s = v;
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--text")) text_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else usage();
    }
    Model m;
    load_model(&m, argv[1]);
    const Config *c = &m.config;
    int nk, np, nl, nd;
    char **kv = split_list(kvs, &nk), **pre = split_list(presets, &np);
    char **ls = split_list(lengths_s, &nl), **ds = split_list(depths_s, &nd);
    int max_len = 0;
    for (int i = 0; i < nl; i++) {
        int L = atoi(ls[i]);
        if (L < 256 || L > c->max_seq_len) fatal("--lengths: %s not in [256, %d]", ls[i], c->max_seq_len);
        if (L > max_len) max_len = L;
    }
    // the haystack: the start of the text, enough tokens for the longest prompt
    size_t text_len;
    char *text = read_file(text_path, &text_len);
    size_t take = text_len < (size_t)max_len * 6 ? text_len : (size_t)max_len * 6;
    while (take < text_len && (text[take] & 0xC0) == 0x80) take++;   // whole UTF-8 characters
    int *hay, n_hay = tokenizer_encode(&m.tokenizer, text, take, 0, &hay);
    free(text);
    if (n_hay < max_len) fatal("%s: too short for %d-token prompts", text_path, max_len);

    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) fatal("%s: cannot open for writing", out_path);
    fprintf(out, "#preset\tkv\tlength\tdepth\tprompt_tokens\tkey\tkey_tokens\tkey_logprob\texact\tkv_bits\tseconds\tgenerated\n");
    RunState s;
    build_runstate(&s, c, BENCH_BATCH, max_len);
    float *last = xmalloc((size_t)c->vocab_size * sizeof(float));
    char gen[256];
    PasskeyPrompt *pr = xmalloc((size_t)nd * sizeof(PasskeyPrompt));
    int *order = xmalloc((size_t)nd * sizeof(int));
    for (int li = 0; li < nl; li++) {
        int L = atoi(ls[li]);
        for (int di = 0; di < nd; di++) {
            int key = 10000 + (int)(splitmix(seed * 1000003u + (uint64_t)L * 101u + (uint64_t)di) % 90000u);
            build_passkey_prompt(&pr[di], &m.tokenizer, hay, n_hay, key, atof(ds[di]), L - GEN_SLACK);
        }
        // depths in order of the needle's position (insertion sort, stable)
        for (int k = 0; k < nd; k++) {
            int d = k, j = k;
            for (; j > 0 && pr[order[j - 1]].needle_at > pr[d].needle_at; j--) order[j] = order[j - 1];
            order[j] = d;
        }
        // each prompt must start with the tokens the shared cache holds when its turn comes:
        // the previous prompt's tokens before that one's needle
        for (int k = 1; k < nd; k++) {
            const PasskeyPrompt *a = &pr[order[k - 1]], *b = &pr[order[k]];
            if (memcmp(a->ids, b->ids, (size_t)a->needle_at * sizeof(int)) != 0)
                fatal("passkey: length %d, depths %s and %s: the prompts differ before the needle", L, ds[order[k - 1]],
                      ds[order[k]]);
        }
        for (int pi = 0; pi < np; pi++)
            for (int ki = 0; ki < nk; ki++) {
                int is_fp16 = !strcmp(kv[ki], "fp16");
                if (is_fp16 && pi > 0) continue;               // one fp16 baseline for all presets
                KVSpec spec;
                bench_spec(&spec, c, kv[ki], pre[pi]);
                KVCache *shared = build_kvcache(&spec, L), *cache = build_kvcache(&spec, L), *snap = build_kvcache(&spec, L);
                int done = 0;                                  // tokens in shared
                for (int k = 0; k < nd; k++) {
                    int di = order[k];
                    const PasskeyPrompt *p = &pr[di];
                    double depth = atof(ds[di]), t0 = bench_now();
                    if (p->needle_at > done) {
                        bench_prefill(&m, &s, shared, p->ids + done, p->needle_at - done, done, last);
                        done = p->needle_at;
                    }
                    kvcache_copy(cache, shared);
                    bench_prefill(&m, &s, cache, p->ids + done, p->n - done, done, last);
                    kvcache_copy(snap, cache);
                    int top1;
                    double lp = bench_score(&m, &s, cache, last, p->key_ids, p->n_key, p->n, &top1);
                    double bits = kvcache_memory(cache, -1).bits_per_elem;
                    kvcache_copy(cache, snap);                 // back to the prompt alone
                    bench_greedy(&m, &s, cache, last, p->n, p->n_key + 2, NULL, gen, sizeof gen);
                    int exact = strstr(gen, p->key_text) != NULL;
                    double secs = bench_now() - t0;
                    fprintf(out, "%s\t%s\t%d\t%.2f\t%d\t%s\t%d\t%.4f\t%d\t%.3f\t%.1f\t", is_fp16 ? "-" : pre[pi], kv[ki],
                            L, depth, p->n, p->key_text, p->n_key, lp / p->n_key, exact, bits, secs);
                    bench_put_field(out, gen);
                    fputc('\n', out);
                    fflush(out);
                    fprintf(stderr, "passkey: L %d depth %.2f %s %s: key logprob %.3f exact %d (%.1f s)\n", L, depth,
                            is_fp16 ? "-" : pre[pi], kv[ki], lp / p->n_key, exact, secs);
                }
                free_kvcache(shared); free_kvcache(cache); free_kvcache(snap);
                free_kvspec(&spec);
            }
        for (int di = 0; di < nd; di++) free_passkey_prompt(&pr[di]);
    }
    if (out != stdout && fclose(out) != 0) fatal("%s: write failed", out_path);
    free(last); free(pr); free(order);
    free(hay);
    free_runstate(&s);
    free_list(kv, nk); free_list(pre, np); free_list(ls, nl); free_list(ds, nd);
    free_model(&m);
    return 0;
}
