// weights_kl.c: what quantizing the weights does to the model's predictions. Two exports of one
// model (say f16 and q8_0) run teacher-forced over the same tokens, both with the fp16 KV cache;
// the first is the baseline. Reported as `run -m compare` reports a KV cache (model/eval.c,
// DESIGN §5): mean KL(p_base || p_test) over the full vocabulary, top-1 agreement, both
// perplexities.
//
//   make bench        (builds build/weights_kl)
//   build/weights_kl BASE.bin TEST.bin TEXT [--tokens N] [--threads T]
//
// The text's first N tokens (default 1024; BOS first where the model's tokenizer wants it, as
// `run -m ppl/compare` do) are scored at every position 0..N-2. A second line scores only
// positions N/2..N-2: the window that `llama-perplexity -c N --chunks 1 --kl-divergence`
// scores (it skips the first half of each chunk), so the two programs can be compared on the
// same predictions (bench/peer_weights.sh). Last line, machine-readable:
//   kl X top1 P ppl_base X ppl_test X tokens N kl_half X top1_half P positions_half M
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "../model/eval.h"
#include "../model/model.h"
#include "../util/util.h"

#define BATCH 64

static void load_checked(Model *m, const char *path, const Model *base) {
    load_model(m, path);
    if (!base) return;
    const Config *a = &base->config, *b = &m->config;
    if (a->vocab_size != b->vocab_size || a->dim != b->dim || a->n_layers != b->n_layers)
        fatal("%s: not the baseline's model (vocab %d/%d, dim %d/%d, layers %d/%d)", path, b->vocab_size, a->vocab_size,
              b->dim, a->dim, b->n_layers, a->n_layers);
}

int main(int argc, char **argv) {
    const char *pos[3];
    int npos = 0, tokens = 1024;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoi(argv[++i]);
#ifdef _OPENMP
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) omp_set_num_threads(atoi(argv[++i]));
#endif
        else if (argv[i][0] == '-') fatal("unknown option %s (usage: weights_kl BASE.bin TEST.bin TEXT [--tokens N] [--threads T])", argv[i]);
        else if (npos < 3) pos[npos++] = argv[i];
        else fatal("unexpected argument %s", argv[i]);
    }
    if (npos != 3) fatal("usage: weights_kl BASE.bin TEST.bin TEXT [--tokens N] [--threads T]");
    if (tokens < 4) fatal("--tokens: %d, at least 4", tokens);
    Model base, test;
    load_checked(&base, pos[0], NULL);
    load_checked(&test, pos[1], &base);
    const Config *c = &base.config;
    if (tokens > c->max_seq_len) fatal("--tokens %d is beyond the model's context of %d", tokens, c->max_seq_len);

    size_t len;
    char *text = read_file(pos[2], &len);
    int *body, bos = eval_wants_bos(&base.tokenizer);
    int n = tokenizer_encode(&base.tokenizer, text, len, 0, &body);
    if (n + bos < tokens) fatal("%s: %d tokens, fewer than --tokens %d", pos[2], n + bos, tokens);
    int *ids = xmalloc((size_t)tokens * sizeof(int));
    if (bos) ids[0] = base.tokenizer.bos_id;
    memcpy(ids + bos, body, (size_t)(tokens - bos) * sizeof(int));
    int *check;
    int n2 = tokenizer_encode(&test.tokenizer, text, len, 0, &check);
    if (n2 != n || memcmp(check, body, (size_t)n * sizeof(int)))
        fatal("%s and %s tokenize the text differently: not the same model", pos[0], pos[1]);
    free(check);
    free(body);
    free(text);

    // Baseline log-probs at every position, then the test model scored against them.
    size_t V = (size_t)c->vocab_size;
    float *base_logp = xmalloc((size_t)(tokens - 1) * V * sizeof(float));
    eval_base_logprobs(&base, ids, tokens, BATCH, base_logp);
    EvalStats all, half;
    memset(&all, 0, sizeof all);
    memset(&half, 0, sizeof half);
    KVSpec spec;
    build_kvspec_uniform(&spec, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
    KVCache *cache = build_kvcache(&spec, tokens);
    RunState s;
    build_runstate(&s, &test.config, BATCH, tokens);
    for (int i = 0; i < tokens - 1; i += BATCH) {
        int nb = tokens - 1 - i < BATCH ? tokens - 1 - i : BATCH;
        float *lg = forward(&test, &s, cache, ids + i, nb, i, 1);
        for (int t = 0; t < nb; t++) {
            const float *bl = base_logp + (size_t)(i + t) * V;
            eval_score_position(&all, bl, lg + t * V, (int)V, ids[i + t + 1]);
            if (i + t >= tokens / 2) eval_score_position(&half, bl, lg + t * V, (int)V, ids[i + t + 1]);
        }
    }
    printf("%s vs %s, %d tokens of %s (fp16 KV cache):\n", pos[1], pos[0], tokens, pos[2]);
    printf("  every position (%lld): KL %.6f  top-1 %.4f  ppl %.4f -> %.4f\n", (long long)all.n, all.kl / all.n,
           (double)all.top1 / all.n, eval_ppl_base(&all), eval_ppl_kv(&all));
    printf("  positions %d..%d (%lld, llama-perplexity's window): KL %.6f  top-1 %.4f\n", tokens / 2, tokens - 2,
           (long long)half.n, half.kl / half.n, (double)half.top1 / half.n);
    printf("kl %.6f top1 %.4f ppl_base %.4f ppl_test %.4f tokens %d kl_half %.6f top1_half %.4f positions_half %lld\n",
           all.kl / all.n, (double)all.top1 / all.n, eval_ppl_base(&all), eval_ppl_kv(&all), tokens, half.kl / half.n,
           (double)half.top1 / half.n, (long long)half.n);
    free_runstate(&s);
    free_kvcache(cache);
    free_kvspec(&spec);
    free(base_logp);
    free(ids);
    free_model(&base);
    free_model(&test);
    return 0;
}
