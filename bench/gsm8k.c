// gsm8k.c: GSM8K under each KV-cache configuration (docs/DESIGN.md §5).
//
// 4-shot prompts "Question: ...\nAnswer: ...\n\n" (shots: the last problems of the file, so
// never among the scored ones; <<calculator>> annotations removed), then for each of the
// first --problems problems:
//   - the teacher-forced negative log-likelihood of the reference worked answer, per token;
//   - for the first --gen-problems of them, greedy decoding (until a blank line, the next
//     "Question:" or --max-new tokens) and exact match of the final number.
// The shots are the same for every problem, so each configuration prefills them once and
// restores a copy of that cache before every problem (kvcache_copy, quant/kvcache.h).
// Greedy decoding runs up to GSM_GROUP problems at once, each in its own cache
// (bench_greedy_step): one token at a time is bound by reading the weights, and a step of 16
// rows reads them once. When a problem's answer is complete, the next problem is prefilled,
// scored and started in its place, so the steps stay full. The tokens are exactly those of
// decoding each problem alone; rows wait until the problems before them are written.
//
//   build/gsm8k MODEL [--kv fp16,kv8,...] [--presets pertoken,kivi] [--problems 200]
//                     [--gen-problems 200] [--shots 4] [--max-new 192] [--data FILE] [--out FILE]
// Writes one tab-separated row per (configuration, problem), in that order, as it goes.
#include "benchrun.h"
#include "evaltext.h"
#include "../quant/kvcache.h"
#include "../util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GSM_GROUP 16    // problems greedy-decoded together (at most BENCH_BATCH)
#define GEN_SIZE 2048   // bytes of generated text kept per problem
_Static_assert(GSM_GROUP <= BENCH_BATCH, "a decoding step runs one row per slot");

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
    const char *data = "data/gsm8k_test.jsonl", *out_path = NULL;
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
    int V = c->vocab_size;
    float *last = xmalloc((size_t)V * sizeof(float));
    // per problem until its row is written: score, cache bits, generated text, done
    double *lp = xmalloc((size_t)n_prob * sizeof(double)), *bits = xmalloc((size_t)n_prob * sizeof(double));
    char *gen = xmalloc((size_t)(n_gen + 1) * GEN_SIZE);
    int *done = xmalloc((size_t)n_prob * sizeof(int));
    for (int pi = 0; pi < np; pi++)
        for (int ki = 0; ki < nk; ki++) {
            int is_fp16 = !strcmp(kv[ki], "fp16");
            if (is_fp16 && pi > 0) continue;                   // one fp16 baseline for all presets
            const char *pname = is_fp16 ? "-" : pre[pi];
            double t0 = bench_now(), nll = 0, gen_secs = 0;
            int correct = 0, ntok = 0, gen_tok = 0;
            KVSpec spec;
            bench_spec(&spec, c, kv[ki], pre[pi]);
            // the shots' cache, a scratch cache for scoring, and one cache per decoding slot
            KVCache *shots_snap = build_kvcache(&spec, need), *scratch = build_kvcache(&spec, need), *work[GSM_GROUP];
            for (int j = 0; j < GSM_GROUP; j++) work[j] = build_kvcache(&spec, need);
            bench_prefill(&m, &s, shots_snap, pre_ids, n_pre, 0, last);
            GreedySeq slot[GSM_GROUP];
            int in_slot[GSM_GROUP], next = 0, written = 0;     // problem in each slot (-1: free)
            memset(slot, 0, sizeof slot);
            for (int j = 0; j < GSM_GROUP; j++) in_slot[j] = -1;
            memset(done, 0, (size_t)n_prob * sizeof(int));
            while (written < n_prob) {
                // fill the free slots: restore the shots, prefill the question, score the
                // reference answer on a copy (work[j] stays at the prompt), start decoding.
                // A problem past --gen-problems is only scored and leaves its slot free.
                for (int j = 0; j < GSM_GROUP && next < n_prob;) {
                    if (in_slot[j] >= 0) { j++; continue; }
                    int i = next++, top1;
                    kvcache_copy(work[j], shots_snap);
                    bench_prefill(&m, &s, work[j], q_ids[i], n_q[i], n_pre, last);
                    kvcache_copy(scratch, work[j]);
                    lp[i] = bench_score(&m, &s, scratch, last, a_ids[i], n_a[i], n_pre + n_q[i], &top1);
                    bits[i] = kvcache_memory(scratch, -1).bits_per_elem;
                    if (i >= n_gen) { done[i] = 1; continue; }
                    bench_greedy_start(&slot[j], &m, work[j], last, n_pre + n_q[i], max_new, gsm8k_done,
                                       gen + (size_t)i * GEN_SIZE, GEN_SIZE);
                    in_slot[j] = i;
                }
                double tg = bench_now();
                bench_greedy_step(&m, &s, slot, GSM_GROUP);
                gen_secs += bench_now() - tg;
                for (int j = 0; j < GSM_GROUP; j++)
                    if (in_slot[j] >= 0 && !slot[j].live) {
                        done[in_slot[j]] = 1;
                        gen_tok += slot[j].n;
                        in_slot[j] = -1;
                    }
                // the rows of the finished problems, in problem order
                for (; written < n_prob && done[written]; written++) {
                    int i = written, ok = -1;
                    char pred[32] = "-";
                    nll -= lp[i]; ntok += n_a[i];
                    if (i < n_gen) {
                        if (!gsm8k_final_number(gen + (size_t)i * GEN_SIZE, pred, sizeof pred)) strcpy(pred, "-");
                        ok = strcmp(pred, ps[i].number) == 0;
                        correct += ok;
                    }
                    fprintf(out, "%s\t%s\t%d\t%d\t%.4f\t%d\t%s\t%s\t%.3f\t", pname, kv[ki], i, n_a[i], -lp[i], ok, pred,
                            ps[i].number, bits[i]);
                    bench_put_field(out, i < n_gen ? gen + (size_t)i * GEN_SIZE : "");
                    fputc('\n', out);
                    fflush(out);
                    fprintf(stderr, "\rgsm8k %s %s: %d/%d problems, NLL/token %.4f, correct %d, greedy %d tokens at %.1f "
                            "tok/s (%.0f s)", pname, kv[ki], i + 1, n_prob, nll / ntok, correct, gen_tok,
                            gen_secs > 0 ? gen_tok / gen_secs : 0.0, bench_now() - t0);
                }
            }
            fprintf(stderr, "\n");
            free_kvcache(shots_snap); free_kvcache(scratch);
            for (int j = 0; j < GSM_GROUP; j++) free_kvcache(work[j]);
            free_kvspec(&spec);
        }
    if (out != stdout && fclose(out) != 0) fatal("%s: write failed", out_path);
    for (int i = 0; i < n_prob; i++) { free(q_ids[i]); free(a_ids[i]); }
    free(q_ids); free(a_ids); free(n_q); free(n_a); free(pre_ids);
    free(last); free(lp); free(bits); free(gen); free(done);
    free_runstate(&s);
    free_list(kv, nk); free_list(pre, np);
    free_gsm8k(ps, n_all);
    free_model(&m);
    return 0;
}
