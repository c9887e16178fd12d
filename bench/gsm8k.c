// gsm8k.c: GSM8K under each KV-cache configuration (issue 5, part 5).
//
// 4-shot prompts "Question: ...\nAnswer: ...\n\n" (shots: the last problems of the file, so
// never among the scored ones; <<calculator>> annotations removed), then for each of the
// first --problems problems:
//   - the teacher-forced negative log-likelihood of the reference worked answer, per token;
//   - for the first --gen-problems of them, greedy decoding (until a blank line, the next
//     "Question:" or --max-new tokens) and exact match of the final number.
// The shots are the same for every problem, so each configuration prefills them once and
// restores a copy of that cache before every problem (kvcache_copy, quant/kvcache.h).
//
//   build/gsm8k MODEL [--kv fp16,kv8,...] [--presets pertoken,kivi] [--problems 200]
//                     [--gen-problems 200] [--shots 4] [--max-new 192] [--data FILE] [--out FILE]
// Writes one tab-separated row per (configuration, problem) as it goes.
#include "benchrun.h"
#include "evaltext.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    fprintf(stderr, "usage: gsm8k MODEL [--kv LIST] [--presets LIST] [--problems N] [--gen-problems N] "
                    "[--shots K] [--max-new N] [--data FILE] [--out FILE]\n");
    exit(1);
}

static int encode_str(const Tokenizer *t, const char *s, int **ids) {
    return tokenizer_encode(t, s, strlen(s), 0, ids);
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') usage();
    const char *kvs = "fp16,kv8,k8v4,k4v8,kv4,k4v2,kv2", *presets = "pertoken,kivi";
    const char *data = "../shared/data/gsm8k_test.jsonl", *out_path = NULL;
    int n_prob = 200, n_gen = 200, k_shots = 4, max_new = 192;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) usage();
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--kv")) kvs = v;
        else if (!strcmp(a, "--presets")) presets = v;
        else if (!strcmp(a, "--problems")) n_prob = atoi(v);
        else if (!strcmp(a, "--gen-problems")) n_gen = atoi(v);
        else if (!strcmp(a, "--shots")) k_shots = atoi(v);
        else if (!strcmp(a, "--max-new")) max_new = atoi(v);
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else usage();
    }
    int n_all;
    GsmProblem *ps = load_gsm8k(data, &n_all);
    if (k_shots < 0 || n_prob < 1 || n_prob + k_shots > n_all) fatal("--problems/--shots: %d + %d exceed the %d problems", n_prob, k_shots, n_all);
    if (n_gen < 0 || n_gen > n_prob) fatal("--gen-problems: %d not in [0, --problems]", n_gen);
    if (max_new < 1) fatal("--max-new: must be positive");
    Model m;
    load_model(&m, argv[1]);
    const Config *c = &m.config;
    const Tokenizer *tok = &m.tokenizer;

    // tokens: the shots once; per problem its prompt and its target " " + answer
    char *shots = gsm8k_shots(ps + n_all - k_shots, k_shots);
    int *pre_ids, n_pre = encode_str(tok, shots, &pre_ids);
    free(shots);
    int **q_ids = xmalloc((size_t)n_prob * sizeof(int *)), **a_ids = xmalloc((size_t)n_prob * sizeof(int *));
    int *n_q = xmalloc((size_t)n_prob * sizeof(int)), *n_a = xmalloc((size_t)n_prob * sizeof(int)), need = 0;
    for (int i = 0; i < n_prob; i++) {
        char *q = gsm8k_prompt(&ps[i]);
        size_t alen = strlen(ps[i].answer) + 2;
        char *a = xmalloc(alen);
        snprintf(a, alen, " %s", ps[i].answer);
        n_q[i] = encode_str(tok, q, &q_ids[i]);
        n_a[i] = encode_str(tok, a, &a_ids[i]);
        int len = n_pre + n_q[i] + (n_a[i] > max_new ? n_a[i] : max_new) + 1;
        if (len > need) need = len;
        free(q); free(a);
    }
    if (need > c->max_seq_len) fatal("gsm8k: prompts need %d tokens, beyond the model's context %d", need, c->max_seq_len);
    fprintf(stderr, "gsm8k: %d-shot prefix of %d tokens, %d problems (%d generated), cache of %d tokens\n",
            k_shots, n_pre, n_prob, n_gen, need);

    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) fatal("%s: cannot open for writing", out_path);
    fprintf(out, "#preset\tkv\tproblem\tanswer_tokens\tnll_sum\tgreedy_correct\tpredicted\treference\tkv_bits\tgenerated\n");
    int nk, np;
    char **kv = split_list(kvs, &nk), **pre = split_list(presets, &np);
    RunState s;
    build_runstate(&s, c, BENCH_BATCH, need);
    float *last = xmalloc((size_t)c->vocab_size * sizeof(float)), *prefix_last = xmalloc((size_t)c->vocab_size * sizeof(float));
    char gen[2048];
    for (int pi = 0; pi < np; pi++)
        for (int ki = 0; ki < nk; ki++) {
            int is_fp16 = !strcmp(kv[ki], "fp16");
            if (is_fp16 && pi > 0) continue;                   // one fp16 baseline for all presets
            const char *pname = is_fp16 ? "-" : pre[pi];
            double t0 = bench_now(), nll = 0;
            int correct = 0, ntok = 0;
            KVSpec spec;
            bench_spec(&spec, c, kv[ki], pre[pi]);
            KVCache *cache = build_kvcache(&spec, need), *shots_snap = build_kvcache(&spec, need),
                    *prompt_snap = build_kvcache(&spec, need);
            bench_prefill(&m, &s, cache, pre_ids, n_pre, 0, prefix_last);
            kvcache_copy(shots_snap, cache);
            for (int i = 0; i < n_prob; i++) {
                if (i > 0) kvcache_copy(cache, shots_snap);
                bench_prefill(&m, &s, cache, q_ids[i], n_q[i], n_pre, last);
                int pos = n_pre + n_q[i];
                if (i < n_gen) kvcache_copy(prompt_snap, cache);
                int top1;
                double lp = bench_score(&m, &s, cache, last, a_ids[i], n_a[i], pos, &top1);
                double bits = kvcache_memory(cache, -1).bits_per_elem;
                nll -= lp; ntok += n_a[i];
                int ok = -1;
                char pred[32] = "-";
                if (i < n_gen) {
                    kvcache_copy(cache, prompt_snap);
                    bench_greedy(&m, &s, cache, last, pos, max_new, gsm8k_done, gen, sizeof gen);
                    if (!gsm8k_final_number(gen, pred, sizeof pred)) strcpy(pred, "-");
                    ok = strcmp(pred, ps[i].number) == 0;
                    correct += ok;
                }
                fprintf(out, "%s\t%s\t%d\t%d\t%.4f\t%d\t%s\t%s\t%.3f\t", pname, kv[ki], i, n_a[i], -lp, ok, pred,
                        ps[i].number, bits);
                bench_put_field(out, i < n_gen ? gen : "");
                fputc('\n', out);
                fflush(out);
                fprintf(stderr, "\rgsm8k %s %s: %d/%d problems, NLL/token %.4f, correct %d (%.0f s)", pname, kv[ki],
                        i + 1, n_prob, nll / ntok, correct, bench_now() - t0);
            }
            fprintf(stderr, "\n");
            free_kvcache(cache); free_kvcache(shots_snap); free_kvcache(prompt_snap);
            free_kvspec(&spec);
        }
    if (out != stdout && fclose(out) != 0) fatal("%s: write failed", out_path);
    for (int i = 0; i < n_prob; i++) { free(q_ids[i]); free(a_ids[i]); }
    free(q_ids); free(a_ids); free(n_q); free(n_a); free(pre_ids);
    free(last); free(prefix_last);
    free_runstate(&s);
    free_list(kv, nk); free_list(pre, np);
    free_gsm8k(ps, n_all);
    free_model(&m);
    return 0;
}
