// run.c: the kvtuner.c command line (docs/DESIGN.md §4). Start reading here.
//
// The path a token takes through the code:
//   1. main() parses the flags (parse_args) and load_model() (model/model.c) maps model.bin,
//      validates it, and rebuilds the tokenizer stored inside it.
//   2. The prompt is checked for valid UTF-8 and encoded to ids by tokenizer/ (byte-level BPE
//      with the model's pre-tokenizer; chat mode first wraps it in the model's chat template).
//   3. forward() (model/forward.c) runs the whole prompt as one batch. Per layer: rmsnorm,
//      the Q/K/V matmuls (kernels/kernels.c), RoPE, then position by position append to the
//      KV cache and attend over it (attention_layer; quant/kvcache.c is the cache, fp16 or
//      quantized, kernels/attention.h the attention, kernels/attention_ref.c its plain
//      reference), the output matmul, and the SwiGLU feed-forward. A final
//      rmsnorm and the classifier give the logits of the last position.
//   4. sample() (model/sampler.c) picks the next id: argmax at -t 0, else temperature + top-p
//      with a seeded RNG.
//   5. tokenizer_decode_step() turns the id into bytes, holding back an incomplete UTF-8
//      character until the next token completes it, and the text goes to stdout.
//   6. The new id goes back into forward() as a batch of one at the next position, until the
//      model's end-of-sequence/turn token, -n tokens, or the end of the context.
//
// Output: generated text on stdout; on stderr a summary and, as its last line, the
// machine-readable `tokens N tok_per_s X kv_bytes B kv_bits_per_elem E`. ppl and compare
// (model/eval.c) print their results on stdout, the machine-readable line last.
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/eval.h"
#include "model/sampler.h"
#include "quant/kvcache.h"
#include "quant/kvconfig.h"
#include "quant/tune.h"
#include "tokenizer/tokenizer.h"
#include "util/util.h"
#ifdef KVT_CUDA
#include "kernels/cuda/cuda.h"
#endif

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PREFILL_BATCH 64   // tokens per forward() call while processing a prompt

typedef struct {
    const char *model_path;
    const char *prompt;        // -i
    const char *prompt_file;   // -f
    const char *system;        // -y
    const char *mode;          // -m
    int steps;                 // -n: tokens to generate, 0 = up to the context
    int steps_set;             // -n was given (compare -i -n: generation divergence)
    int per_layer;             // --per-layer (compare): KL with only one layer quantized
    float temperature;         // -t
    float topp;                // -p
    uint64_t seed;             // -s
    int64_t ctx;               // --ctx, 0 = the model's, capped to fit memory
    int64_t tokens;            // --tokens (ppl, compare: 0 = the whole text; tune: of each kind)
    int64_t kl_from;           // --kl-from P (compare): also the mean KL over positions P.. (0 = off)
    int threads;               // --threads, 0 = OpenMP's default
    int verbose;
    KVOptions kv;              // --kv* flags (quant/kvconfig.h)
    char kv_label[32];         // "fp16", "k8v4", "mixed": the `kv` field of the result lines
    int cuda;                  // --device cuda (kernels/cuda/, generate and chat)
    AttnImpl attention;        // --attention fast|reference (kernels/attention.h), every mode
    TuneOptions tune;          // -m tune: --max-bits, --out, --groups, --verify (quant/tune.h)
} Options;

static void usage(void) {
    fprintf(stderr,
        "usage: ./run MODEL [options]\n"
        "  -i PROMPT     prompt text (UTF-8; invalid UTF-8 is an error)\n"
        "  -f FILE       read the prompt / text from FILE\n"
        "  -n STEPS      tokens to generate (default 256, 0 = up to the context)\n"
        "  -t TEMP       temperature >= 0 (default 1.0; 0 = greedy)\n"
        "  -p TOPP       top-p in [0, 1] (default 0.9; 1 = off)\n"
        "  -s SEED       random seed (default: from the clock)\n"
        "  -y SYSTEM     system prompt (chat)\n"
        "  -m MODE       generate | chat | tokenize | ppl | compare | tune (default generate)\n"
        "  --ctx N       context length (default: the model's, capped to fit in memory)\n"
        "  --tokens N    ppl/compare: score only the first N tokens of the text\n"
        "  --kl-from P   compare: also the mean KL over predictions from position P on (the window\n"
        "                llama-perplexity scores: P = N/2), as a line `kl_from P kl X positions M`\n"
        "  --per-layer   compare: also the KL with only one layer quantized, for each layer\n"
        "                (compare -i PROMPT -n N: greedy continuations of both caches, side by side)\n"
        "  --threads N   OpenMP threads (default: the cores not busy when it starts)\n"
        "  --device D    cpu | cuda\n"
        "  --attention A fast | reference (default fast; reference: kernels/attention_ref.c, slow)\n"
        "  --verbose     more detail on stderr\n"
        "KV cache (quant/kvconfig.h; default fp16):\n"
        "  --kv SPEC              fp16 | kv8 | k8v4 | kv4 | k4v2 | kv2 | k<bits>v<bits>, bits in {2,4,8,16}\n"
        "  --kv-config FILE       per-layer / per-head bits, KVTuner YAML or JSON\n"
        "  --kv-preset P          pertoken | kivi (the default when quantizing)\n"
        "  --kv-group G  --kv-residual R  --kv-key-axis token|channel  --kv-sym  --kv-sink N\n"
        "  --kv-rotate            Hadamard-rotate every layer's q, k, v (a config may say rotate: true per layer)\n");
    fputs("KV tuner (-m tune -f CALIB[,CALIB...]; --kv-preset, default kivi):\n", stderr);
    fputs(tune_options_usage(), stderr);
}

// ---- argument parsing: every bad value is one clear line and exit 1 -------------------

static int64_t parse_int(const char *flag, const char *s, int64_t lo, int64_t hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno == ERANGE) fatal("%s: not an integer: '%s'", flag, s);
    if (v < lo || v > hi) fatal("%s: %lld is out of range [%lld, %lld]", flag, v, (long long)lo, (long long)hi);
    return v;
}

static float parse_float(const char *flag, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v)) fatal("%s: not a number: '%s'", flag, s);
    return (float)v;
}

static void parse_args(Options *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->mode = "generate";
    o->steps = 256;
    o->temperature = 1.0f;
    o->topp = 0.9f;
    o->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    kvoptions_init(&o->kv);
    tune_options_init(&o->tune);
    const char *device = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); exit(0); }
        if (a[0] != '-') {
            if (o->model_path) fatal("unexpected argument '%s' (the model is '%s')", a, o->model_path);
            o->model_path = a;
            continue;
        }
        if (!strcmp(a, "--verbose")) { o->verbose = 1; continue; }
        if (!strcmp(a, "--per-layer")) { o->per_layer = 1; continue; }
        if (kvoptions_parse_arg(&o->kv, argc, argv, &i)) continue;   // --kv* flags
        int used = tune_options_parse(&o->tune, argc, argv, i);      // tuner flags
        if (used > 0) { i += used - 1; continue; }
        // every other flag takes one value
        static const char *valued[] = {"-i", "-f", "-n", "-t", "-p", "-s", "-y", "-m", "--ctx", "--tokens",
                                       "--kl-from", "--threads", "--device", "--attention", NULL};
        int known = 0;
        for (int j = 0; valued[j]; j++) known |= !strcmp(a, valued[j]);
        if (!known) fatal("unknown option '%s' (./run -h lists the options)", a);
        if (i + 1 >= argc) fatal("%s: missing value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "-i")) o->prompt = v;
        else if (!strcmp(a, "-f")) o->prompt_file = v;
        else if (!strcmp(a, "-y")) o->system = v;
        else if (!strcmp(a, "-m")) o->mode = v;
        else if (!strcmp(a, "-n")) { o->steps = (int)parse_int("-n", v, 0, INT32_MAX); o->steps_set = 1; }
        else if (!strcmp(a, "-s")) o->seed = (uint64_t)parse_int("-s", v, 0, INT64_MAX);
        else if (!strcmp(a, "--ctx")) o->ctx = parse_int("--ctx", v, 1, INT32_MAX);
        else if (!strcmp(a, "--tokens")) o->tokens = parse_int("--tokens", v, 2, INT32_MAX);
        else if (!strcmp(a, "--kl-from")) o->kl_from = parse_int("--kl-from", v, 1, INT32_MAX);
        else if (!strcmp(a, "--threads")) o->threads = (int)parse_int("--threads", v, 1, 4096);
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--attention")) {
            if (!strcmp(v, "fast")) o->attention = ATTN_FAST;
            else if (!strcmp(v, "reference")) o->attention = ATTN_REFERENCE;
            else fatal("--attention: unknown attention '%s' (fast or reference)", v);
        }
        else if (!strcmp(a, "-t")) {
            o->temperature = parse_float("-t", v);
            if (o->temperature < 0) fatal("-t: temperature %g is negative (must be >= 0)", o->temperature);
        } else if (!strcmp(a, "-p")) {
            o->topp = parse_float("-p", v);
            if (o->topp < 0 || o->topp > 1) fatal("-p: top-p %g is outside [0, 1]", o->topp);
        }
    }
    if (!o->model_path) fatal("no model given (usage: ./run MODEL [options]; ./run -h lists them)");
    static const char *modes[] = {"generate", "chat", "tokenize", "ppl", "compare", "tune", NULL};
    int ok = 0;
    for (int j = 0; modes[j]; j++) ok |= !strcmp(o->mode, modes[j]);
    if (!ok) fatal("-m: unknown mode '%s' (generate, chat, tokenize, ppl, compare, tune)", o->mode);
#ifdef KVT_CUDA
    o->cuda = !strcmp(device, "cuda");
    if (o->cuda && strcmp(o->mode, "generate") && strcmp(o->mode, "chat"))
        fatal("--device cuda: -m %s runs on the CPU only (generate and chat run on CUDA)", o->mode);
    if (o->cuda && o->attention == ATTN_REFERENCE) fatal("--attention reference: runs on the CPU only (not with --device cuda)");
    if (o->cuda) device = "cpu";
#else
    if (!strcmp(device, "cuda")) fatal("--device cuda: this binary was built without CUDA");
#endif
    if (strcmp(device, "cpu")) fatal("--device: unknown device '%s' (cpu or cuda)", device);
    if (o->prompt && o->prompt_file) fatal("-i and -f: give one of them, not both");
}

// ---- input text ----------------------------------------------------------------------

// Byte offset of the first invalid UTF-8 sequence in s[0..n), or -1 if it is all valid
// (overlong forms, surrogates and code points above U+10FFFF are invalid).
static int64_t utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return (int64_t)i;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return (int64_t)i;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (int64_t)i;
        i += len;
    }
    return -1;
}

// The text of -i or -f (xmalloc'd), checked for UTF-8; NULL if neither was given.
static char *input_text(const Options *o, size_t *len) {
    char *text;
    const char *name;
    if (o->prompt_file) { text = read_file(o->prompt_file, len); name = o->prompt_file; }
    else if (o->prompt) { text = xstrdup(o->prompt); *len = strlen(text); name = "-i"; }
    else return NULL;
    int64_t bad = utf8_invalid_at((const unsigned char *)text, *len);
    if (bad >= 0) fatal("%s: invalid UTF-8 at byte %lld", name, (long long)bad);
    return text;
}

// ---- context and cache size ------------------------------------------------------------

static uint64_t available_memory(void) {
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : (uint64_t)8 << 30;
}

// Context length: --ctx, else the model's, capped so that an fp16 cache (the largest) plus
// the attention scratch take at most half of the available memory.
static int64_t choose_context(const Options *o, const Config *c) {
    if (o->ctx > c->max_seq_len) fatal("--ctx: %lld is longer than the model's context of %d", (long long)o->ctx, c->max_seq_len);
    if (o->ctx) return o->ctx;
    uint64_t per_token = (uint64_t)c->n_layers * c->n_kv_heads * c->head_dim * 2 * 2 + (uint64_t)c->n_heads * 4;
    uint64_t fit = available_memory() / 2 / per_token;
    int64_t ctx = c->max_seq_len;
    if ((uint64_t)ctx > fit) {
        ctx = fit > 16 ? (int64_t)fit : 16;
        fprintf(stderr, "note: context capped to %lld tokens (of %d) so that the KV cache fits in memory\n",
                (long long)ctx, c->max_seq_len);
    }
    return ctx;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---- modes ---------------------------------------------------------------------------

static int is_stop_token(const Tokenizer *t, int id) {
    return id == t->eos_id || id == t->eot_id || id == t->eom_id;
}

// Prompt ids: chat mode wraps the text in the model's template (special tokens recognised in
// the template's text only, never in what the user typed); generate mode encodes plain text, with BOS first for models whose tokenizer adds it.
static int encode_prompt(const Model *m, const Options *o, const char *text, size_t len, int **ids) {
    const Tokenizer *t = &m->tokenizer;
    if (!strcmp(o->mode, "chat")) {
        return tokenizer_encode_chat(t, o->system, text, ids);
    }
    int *body;
    int n = tokenizer_encode(t, text, len, 0, &body);
    int bos = eval_wants_bos(t);
    *ids = xmalloc(((size_t)n + 1) * sizeof(int));
    if (bos) (*ids)[0] = t->bos_id;
    memcpy(*ids + bos, body, (size_t)n * sizeof(int));
    free(body);
    return n + bos;
}

// forward() on the device --device chose: cuda_forward() (kernels/cuda/cuda.h) has the same
// contract, with the model and the cache in GPU memory (cm, gc non-NULL).
static float *device_forward(const Model *m, RunState *s, KVCache *cache, void *cm, void *gc, const int *ids,
                             int n, int64_t pos) {
#ifdef KVT_CUDA
    if (cm) return cuda_forward((CudaModel *)cm, (CudaKVCache *)gc, ids, n, pos, 0);
#endif
    (void)cm; (void)gc;
    return forward(m, s, cache, ids, n, pos, 0);
}

static void generate(const Model *m, const Options *o, const KVSpec *spec, const char *text, size_t len) {
    const Config *c = &m->config;
    int *ids;
    int n_prompt = encode_prompt(m, o, text, len, &ids);
    if (n_prompt == 0) fatal("%s: the prompt is empty", o->prompt_file ? o->prompt_file : "-i");
    int64_t ctx = choose_context(o, c);
    if (n_prompt >= ctx)
        fatal("%s: the prompt has %d tokens, the context holds %lld (set --ctx; prompts are never truncated)",
              o->prompt_file ? o->prompt_file : "-i", n_prompt, (long long)ctx);
    int64_t want = o->steps ? (int64_t)n_prompt + o->steps : ctx;
    int64_t cap = want < ctx ? want : ctx;

    KVCache *cache = o->cuda ? NULL : build_kvcache(spec, cap);
    void *cm = NULL, *gc = NULL;     // the CUDA model and cache with --device cuda
#ifdef KVT_CUDA
    if (o->cuda) { cm = build_cuda_model(m, PREFILL_BATCH); gc = build_cuda_kvcache(spec, cap); }
#endif
    RunState s;
    build_runstate(&s, c, PREFILL_BATCH, cap);
    if (o->verbose)
        fprintf(stderr, "context %lld tokens (cache sized for %lld), prompt %d tokens, seed %llu\n",
                (long long)ctx, (long long)cap, n_prompt, (unsigned long long)o->seed);

    double t0 = now_s();
    float *logits = NULL;
    for (int i = 0; i < n_prompt; i += PREFILL_BATCH) {
        int nb = n_prompt - i < PREFILL_BATCH ? n_prompt - i : PREFILL_BATCH;
        logits = device_forward(m, &s, cache, cm, gc, ids + i, nb, i);
    }
    double t_prefill = now_s() - t0;

    Sampler sampler;
    build_sampler(&sampler, c->vocab_size, o->temperature, o->topp, o->seed);
    char *piece = xmalloc(256 + 16);
    DecodeState ds = {0};
    int generated = 0, decode_steps = 0;
    int64_t pos = n_prompt;
    double t_decode = 0;
    for (;;) {
        int next = sample(&sampler, logits);
        if (is_stop_token(&m->tokenizer, next)) break;
        generated++;
        int tl = m->tokenizer.token_len[next];
        if (tl > 256) piece = xrealloc(piece, (size_t)tl + 16);
        tokenizer_decode_step(&m->tokenizer, &ds, next, piece);
        fputs(piece, stdout);
        fflush(stdout);
        if ((o->steps && generated >= o->steps) || pos >= cap) break;
        double t1 = now_s();
        logits = device_forward(m, &s, cache, cm, gc, &next, 1, pos++);
        t_decode += now_s() - t1;
        decode_steps++;
    }
    tokenizer_decode_flush(&ds, piece);
    fputs(piece, stdout);
    fputs("\n", stdout);
    fflush(stdout);

    KVMemory mem = cache ? kvcache_memory(cache, -1) : (KVMemory){0};
#ifdef KVT_CUDA
    if (gc) mem = cuda_kvcache_memory((CudaKVCache *)gc, -1);
#endif
    if (o->verbose && cache) kvcache_print_memory(stderr, cache);   // per layer and total (quant/kvconfig.h)
    double tps = decode_steps ? decode_steps / t_decode : 0.0;
    fprintf(stderr, "prompt %d tokens in %.2f s (%.1f tok/s); generated %d tokens, decode %.2f tok/s; "
                    "KV cache %.2f MB at %.2f bits/element (%s; context %lld, cache sized for %lld tokens)\n",
            n_prompt, t_prefill, n_prompt / (t_prefill > 0 ? t_prefill : 1e-9), generated, tps,
            mem.total / 1e6, mem.bits_per_elem, o->kv_label, (long long)ctx, (long long)cap);
    fprintf(stderr, "tokens %d tok_per_s %.3f kv_bytes %llu kv_bits_per_elem %.4f\n", generated, tps,
            (unsigned long long)mem.total, mem.bits_per_elem);
    free_sampler(&sampler);
    free(piece);
    free(ids);
    free_runstate(&s);
    free_kvcache(cache);
#ifdef KVT_CUDA
    free_cuda_model((CudaModel *)cm);
    free_cuda_kvcache((CudaKVCache *)gc);
#endif
}

static void tokenize(const Model *m, const char *text, size_t len) {
    int *ids;
    int n = tokenizer_encode(&m->tokenizer, text, len, 0, &ids);
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
}

// The text for ppl / compare as ids, cut to --tokens and checked against the context.
static int scored_tokens(const Model *m, const Options *o, const char *text, size_t len, int **ids) {
    const char *name = o->prompt_file ? o->prompt_file : "-i";
    if (len == 0) fatal("%s: the text is empty", name);
    int *body;
    int n = tokenizer_encode(&m->tokenizer, text, len, 0, &body);
    int bos = eval_wants_bos(&m->tokenizer);
    *ids = xmalloc(((size_t)n + 1) * sizeof(int));
    if (bos) (*ids)[0] = m->tokenizer.bos_id;
    memcpy(*ids + bos, body, (size_t)n * sizeof(int));
    free(body);
    n += bos;
    int64_t ctx = choose_context(o, &m->config);
    if (o->tokens) {
        if (o->tokens > ctx) fatal("--tokens: %lld is beyond the context of %lld tokens", (long long)o->tokens, (long long)ctx);
        if (o->tokens > n) fatal("--tokens: %lld, but the text has only %d tokens", (long long)o->tokens, n);
        n = (int)o->tokens;
    } else if (n > ctx) {
        fatal("%s: the text has %d tokens, more than the context of %lld (use --tokens N to score the first N)",
              name, n, (long long)ctx);
    }
    if (n < 2) fatal("%s: the text has %d token, at least 2 are needed to score one prediction", name, n);
    return n;
}

static void ppl(const Model *m, const Options *o, const KVSpec *spec, const char *text, size_t len) {
    int *ids;
    int n = scored_tokens(m, o, text, len, &ids);
    double t0 = now_s();
    EvalStats st;
    eval_ppl(m, spec, ids, n, PREFILL_BATCH, isatty(2), &st);
    double dt = now_s() - t0;
    printf("perplexity %.4f over %lld predictions (mean NLL %.5f nats), %.1f s (%.0f tok/s), KV %s %.2f bits/element\n",
           eval_ppl_kv(&st), (long long)st.n, st.nll_kv / st.n, dt, n / dt, o->kv_label, st.kv_bits_per_elem);
    printf("ppl %.6f tokens %d kv %s\n", eval_ppl_kv(&st), n, o->kv_label);
    free(ids);
}

static void compare(const Model *m, const Options *o, const KVSpec *spec, const char *text, size_t len) {
    int *ids;
    int n = scored_tokens(m, o, text, len, &ids);
    double t0 = now_s();
    EvalStats st;
    eval_compare(m, spec, ids, n, PREFILL_BATCH, isatty(2), &st);
    double dt = now_s() - t0;
    printf("KL(fp16 || %s) mean %.6g (max %.4g at position %lld), top-1 agreement %.2f%%, "
           "perplexity fp16 %.4f vs %s %.4f (%+.3f%%), %lld predictions in %.1f s, KV %.2f bits/element\n",
           o->kv_label, st.kl / st.n, st.kl_max, (long long)st.kl_max_pos, 100.0 * st.top1 / st.n,
           eval_ppl_base(&st), o->kv_label, eval_ppl_kv(&st),
           100.0 * (eval_ppl_kv(&st) / eval_ppl_base(&st) - 1.0), (long long)st.n, dt, st.kv_bits_per_elem);
    if (o->kl_from) {
        if (o->kl_from >= st.n) fatal("--kl-from %lld: only %lld positions are scored", (long long)o->kl_from, (long long)st.n);
        double sum = 0;
        for (int64_t p = o->kl_from; p < st.n; p++) sum += st.kl_at[p];
        printf("kl_from %lld kl %.8f positions %lld\n", (long long)o->kl_from, sum / (double)(st.n - o->kl_from),
               (long long)(st.n - o->kl_from));
    }
    if (o->verbose) eval_print_worst(&m->tokenizer, ids, &st, 10);
    if (o->per_layer) {   // KVTuner's sensitivity step: only layer l at the spec's bits
        double *kl = xmalloc((size_t)m->config.n_layers * sizeof(double));
        eval_layer_kl(m, spec, ids, n, PREFILL_BATCH, isatty(2), kl);
        printf("per-layer KL (only that layer quantized):\n");
        for (int l = 0; l < m->config.n_layers; l++) printf("layer %d kl %.8f\n", l, kl[l]);
        free(kl);
    }
    printf("kl %.8f top1 %.6f ppl_base %.6f ppl_kv %.6f tokens %d kv %s kv_bits_per_elem %.4f\n", st.kl / st.n,
           (double)st.top1 / st.n, eval_ppl_base(&st), eval_ppl_kv(&st), n, o->kv_label, st.kv_bits_per_elem);
    free_evalstats(&st);
    free(ids);
}

// compare -i PROMPT -n N: both caches continue the prompt greedily; show both texts and where
// they part (the first generated token that differs).
static void print_tokens(const Tokenizer *t, const int *ids, int from, int to) {
    DecodeState ds = {0};
    char *piece = xmalloc(64);
    size_t cap = 64;
    for (int i = from; i < to; i++) {
        if ((size_t)t->token_len[ids[i]] + 16 > cap) piece = xrealloc(piece, cap = (size_t)t->token_len[ids[i]] + 16);
        tokenizer_decode_step(t, &ds, ids[i], piece);
        fputs(piece, stdout);
    }
    tokenizer_decode_flush(&ds, piece);
    fputs(piece, stdout);
    free(piece);
}

static void divergence(const Model *m, const Options *o, const KVSpec *spec, const char *text, size_t len) {
    const Config *c = &m->config;
    int *prompt;
    int n_prompt = encode_prompt(m, o, text, len, &prompt);
    int64_t ctx = choose_context(o, c);
    if (n_prompt == 0) fatal("-i: the prompt is empty");
    if (n_prompt + (int64_t)o->steps > ctx)
        fatal("-n: %d prompt + %d generated tokens do not fit the context of %lld", n_prompt, o->steps, (long long)ctx);
    int steps = o->steps ? o->steps : (int)(ctx - n_prompt);
    KVSpec base;
    build_kvspec_uniform(&base, c->n_layers, c->n_kv_heads, c->head_dim, 16, 16);
    const KVSpec *specs[2] = {&base, spec};
    int *out[2], count[2];
    for (int which = 0; which < 2; which++) {     // one greedy run per cache
        int64_t cap = n_prompt + steps;
        KVCache *cache = build_kvcache(specs[which], cap);
        RunState s;
        build_runstate(&s, c, PREFILL_BATCH, cap);
        float *logits = NULL;
        for (int i = 0; i < n_prompt; i += PREFILL_BATCH) {
            int nb = n_prompt - i < PREFILL_BATCH ? n_prompt - i : PREFILL_BATCH;
            logits = forward(m, &s, cache, prompt + i, nb, i, 0);
        }
        out[which] = xmalloc((size_t)steps * sizeof(int));
        count[which] = 0;
        for (int g = 0; g < steps; g++) {
            int next = eval_argmax(logits, c->vocab_size);
            if (is_stop_token(&m->tokenizer, next)) break;
            out[which][count[which]++] = next;
            if (g + 1 < steps) logits = forward(m, &s, cache, &next, 1, n_prompt + g, 0);
        }
        free_runstate(&s);
        free_kvcache(cache);
    }
    int first = 0;
    while (first < count[0] && first < count[1] && out[0][first] == out[1][first]) first++;
    const char *names[2] = {"fp16", o->kv_label};
    for (int which = 0; which < 2; which++) {
        printf("---- %s:\n", names[which]);
        print_tokens(&m->tokenizer, out[which], 0, first);
        if (first < count[which]) { fputs("[[", stdout); print_tokens(&m->tokenizer, out[which], first, count[which]); fputs("]]", stdout); }
        printf("\n");
    }
    int same = first == count[0] && first == count[1];
    if (same) printf("---- identical: %d tokens\n", count[0]);
    else printf("---- the continuations part at generated token %d (marked [[ ]])\n", first);
    printf("first_diff %d tokens %d kv %s\n", same ? -1 : first, count[1], o->kv_label);
    free(out[0]); free(out[1]); free(prompt);
    free_kvspec(&base);
}

// -m tune (quant/tune.c): search per-layer K/V bits on the -f texts (a comma-separated list of
// files, one kind of text each; the tuner reads them). The grouping comes from --kv-preset (kivi
// by default, as for --kv) and the other --kv-* grouping flags.
static void tune(const Model *m, Options *o) {
    if (o->kv.spec || o->kv.config_path) fatal("-m tune: --kv and --kv-config do not apply (the tuner chooses the bits)");
    if (!o->prompt_file) fatal("-m tune: give the calibration text with -f FILE (or FILE,FILE,... one per kind of text)");
    if (!o->kv.preset) o->kv.preset = "kivi";
    KVSpec grouping;
    build_kvspec_from_options(&grouping, &o->kv, &m->config);
    o->tune.calib = o->prompt_file;
    o->tune.preset = o->kv.preset;
    if (o->tokens) o->tune.tokens = (int)o->tokens;
    run_tune(m, &grouping, &o->tune);
    free_kvspec(&grouping);
}

#ifdef _OPENMP
// The default team size: the cores that are free when the program starts, i.e. all of them
// less the other tasks running (the "running/total" field of /proc/loadavg, which counts this
// process too; the least of 5 readings 5 ms apart, so that a short-lived task such as a shell
// command is not counted). On a busy machine a team larger than the free cores waits
// at every barrier for a descheduled thread, which can make decoding ~50x slower. OpenMP's
// own dynamic mode is no substitute: it sizes each team from the 15-minute load average,
// which counts this process's own past work, so a long run (a tune) throttles itself to one
// thread of two within ten minutes and stays there.
static int free_cores(void) {
    int cores = omp_get_num_procs(), running = 0;   // 0: no reading yet
    for (int i = 0; i < 5; i++) {
        if (i) nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
        FILE *f = fopen("/proc/loadavg", "r");
        if (!f) return cores;
        double avg[3];
        int now;
        if (fscanf(f, "%lf %lf %lf %d/", &avg[0], &avg[1], &avg[2], &now) == 4 && (!running || now < running)) running = now;
        fclose(f);
    }
    if (!running) return cores;
    int free = cores - (running - 1);
    return free < 1 ? 1 : free > cores ? cores : free;
}
#endif

int main(int argc, char **argv) {
    Options o;
    parse_args(&o, argc, argv);
#ifdef _OPENMP
    // --threads N: exactly N. Otherwise, unless OMP_NUM_THREADS says so, the free cores.
    if (o.threads) omp_set_num_threads(o.threads);
    else if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(free_cores());
#endif
    Model m;
    load_model(&m, o.model_path);
    m.attention = o.attention;                            // every mode attends through the model
    KVSpec spec;
    build_kvspec_from_options(&spec, &o.kv, &m.config);   // validates the --kv* flags against the model
    kvspec_label(&spec, o.kv_label, sizeof o.kv_label);
    if (o.verbose) kvspec_print(stderr, &spec);

    if (!strcmp(o.mode, "tune")) {              // the tuner reads its own files (-f A,B,...)
        tune(&m, &o);
        free_kvspec(&spec);
        free_model(&m);
        return 0;
    }
    size_t len = 0;
    char *text = input_text(&o, &len);
    int needs_text = strcmp(o.mode, "generate") != 0;
    if (!text && needs_text) fatal("-m %s: give the text with -i TEXT or -f FILE", o.mode);
    if (!text) { text = xstrdup(""); len = 0; }

    if (!strcmp(o.mode, "tokenize")) tokenize(&m, text, len);
    else if (!strcmp(o.mode, "ppl")) ppl(&m, &o, &spec, text, len);
    else if (!strcmp(o.mode, "compare") && o.steps_set && !o.prompt_file) divergence(&m, &o, &spec, text, len);
    else if (!strcmp(o.mode, "compare")) compare(&m, &o, &spec, text, len);
    else generate(&m, &o, &spec, text, len);

    free(text);
    free_kvspec(&spec);
    free_model(&m);
    return 0;
}
