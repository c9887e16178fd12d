// test_cuda.c: the CUDA path against the CPU path. On random-weight models made by
// `export --random` (so no download or network is needed) and on the default model when it
// is present:
//   - cache codes: the same fp16 K/V appended on both devices give byte-identical caches
//     (codes, scales/offsets, fp16 rows) and the same byte accounting, for every grouping;
//   - logits: max |gpu - cpu| / max |cpu| <= 1e-2 per position (3e-2 with 2-bit codes, see
//     TOL_2BIT), for the fp16 cache and every quantized configuration, prefill (cuBLAS) and
//     64 decode steps (the GEMV kernel);
//   - greedy tokens identical at each of the 64 steps for the fp16 cache and 8-bit caches, and
//     `run --device cuda` generating the CPU's text for 64 tokens;
//   - a cache filled on the GPU continues on the CPU with the same logits (interchangeable);
//   - the debug mode KVT_CUDA_SYNC=1 names the launch of a faulting kernel.
// Built without CUDA, or run without a GPU, the suite prints "skipped: <reason>" and checks
// only that `run --device cuda` fails with one clear line.
#include "testutil.h"
#include "../model/model.h"
#include "../util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KVT_CUDA
static int have_device;           // a usable CUDA device (probed in a child process)
#endif
static char skip_reason[300];

// A byte-level tiktoken vocabulary written by the test itself: `export --random` needs a
// tokenizer source, and the parity models must not depend on a download.
static const char *byte_tokenizer(void) {
    static char path[512];
    if (path[0]) return path;
    snprintf(path, sizeof path, "%s/bytes.tiktoken", test_tmpdir());
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *text = xmalloc(256 * 16), *p = text;
    for (int i = 0; i < 256; i++)
        p += sprintf(p, "%c%c== %d\n", b64[i >> 2], b64[(i & 3) << 4], i);
    write_bytes(path, text, (size_t)(p - text));
    free(text);
    return path;
}

// export --random SHAPE --dtype DT into the test's folder (once: later tests reuse the file).
static const char *random_model(const char *shape, const char *dtype) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s_%s.bin", test_tmpdir(), shape, dtype);
    if (file_exists(path)) return path;
    char cmd[2048], *err = NULL;
    snprintf(cmd, sizeof cmd, "%s --random %s --dtype %s --tokenizer %s %s", export_bin(), shape, dtype,
             byte_tokenizer(), path);
    int rc = run_capture(cmd, NULL, &err);
    ck_assert_msg(rc == 0, "%s failed: %s", cmd, err ? err : "");
    free(err);
    return path;
}

#ifdef KVT_CUDA
#include "../kernels/cuda/cuda.h"

#define TOL 1e-2
// A cache with 2-bit codes: the two devices compute K and V in a different summation order
// (within ~1e-6), so a value that lies on a rounding boundary can take neighbouring codes, and
// one such code moves its value by a third of its group's range. Over 30 layers and 100
// positions a few do (measured on an H200: 1.3e-2 to 1.4e-2 on the default model's shape).
#define TOL_2BIT 3e-2

typedef struct { const char *name; int kb, vb, group, residual, axis, sink; } Cfg;
static double tolerance(const Cfg *g) { return g->kb == 2 || g->vb == 2 ? TOL_2BIT : TOL; }

static void make_spec(KVSpec *s, const Config *c, const Cfg *g) {
    build_kvspec_uniform(s, c->n_layers, c->n_kv_heads, c->head_dim, g->kb, g->vb);
    s->group = g->group; s->residual = g->residual; s->key_axis = g->axis; s->sink = g->sink;
}

static double row_rel(const float *g, const float *c, int n) {
    double d = 0, m = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)g[i] - c[i]);
        if (!(e <= d)) d = e;
        if (fabs((double)c[i]) > m) m = fabs((double)c[i]);
    }
    return d / (m + 1e-30);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

// Prefill `prompt` tokens (one batch, all logits) then `steps` greedy decode steps, on both
// devices, teacher-forced by the CPU's greedy tokens. Returns the worst relative logit
// difference; *greedy_same = 1 if the GPU's argmax equalled the CPU's at every step.
static double parity(const char *path, const Cfg *g, int prompt, int steps, int *greedy_same) {
    Model m;
    load_model(&m, path);
    const Config *c = &m.config;
    int V = c->vocab_size, ctx = prompt + steps;
    KVSpec spec;
    make_spec(&spec, c, g);
    KVCache *cc = build_kvcache(&spec, ctx);
    CudaKVCache *gc = build_cuda_kvcache(&spec, ctx);
    RunState s;
    build_runstate(&s, c, prompt, ctx);
    CudaModel *cm = build_cuda_model(&m, prompt);
    int *tok = xmalloc((size_t)ctx * sizeof(int));
    for (int i = 0; i < prompt; i++) tok[i] = (int)((i * 7919u + 17u) % (unsigned)V);
    double worst = 0;
    *greedy_same = 1;
    float *lc = forward(&m, &s, cc, tok, prompt, 0, 1);
    float *lg = cuda_forward(cm, gc, tok, prompt, 0, 1);
    for (int t = 0; t < prompt; t++) {
        double r = row_rel(lg + (size_t)t * V, lc + (size_t)t * V, V);
        if (!(r <= worst)) worst = r;
    }
    int next = argmax(lc + (size_t)(prompt - 1) * V, V);
    *greedy_same &= next == argmax(lg + (size_t)(prompt - 1) * V, V);
    for (int i = 0; i < steps; i++) {
        int pos = prompt + i;
        tok[pos] = next;
        lc = forward(&m, &s, cc, &tok[pos], 1, pos, 0);
        lg = cuda_forward(cm, gc, &tok[pos], 1, pos, 0);
        double r = row_rel(lg, lc, V);
        if (!(r <= worst)) worst = r;
        next = argmax(lc, V);
        *greedy_same &= next == argmax(lg, V);
    }
    printf("  %-28s %-22s max rel logit diff %.2e, greedy %s\n", strrchr(path, '/') + 1, g->name, worst,
           *greedy_same ? "identical" : "differs");
    free(tok);
    free_cuda_model(cm);
    free_runstate(&s);
    free_cuda_kvcache(gc);
    free_kvcache(cc);
    free_kvspec(&spec);
    free_model(&m);
    return worst;
}

#define PT(n, k, v)      { n, k, v, -1, 0, KEY_AXIS_TOKEN, 0 }
// head_dim of the tiny shape is 16: KIVI-style groups of 16 tokens/channels, window 32
#define KIVI16(n, k, v)  { n, k, v, 16, 32, KEY_AXIS_CHANNEL, 0 }
#define KIVI(n, k, v)    { n, k, v, 32, 32, KEY_AXIS_CHANNEL, 0 }

static const Cfg fp16 = PT("fp16", 16, 16);

START_TEST(test_cache_codes_identical) {
    const Cfg cfgs[] = { PT("fp16", 16, 16), PT("kv8", 8, 8), PT("k8v4", 8, 4), { "kv4 sym", 4, 4, -1, 0, 0, 0 },
                         { "kv2 G8 R16 sink3", 2, 2, 8, 16, KEY_AXIS_TOKEN, 3 }, KIVI16("k4v2 kivi", 4, 2),
                         { "kv8 kivi sink5", 8, 8, 16, 32, KEY_AXIS_CHANNEL, 5 } };
    const int layers = 3, heads = 2, hd = 16, T = 150, kvd = heads * hd;
    Config c = { .n_layers = layers, .n_kv_heads = heads, .head_dim = hd };
    float *k = xmalloc((size_t)T * kvd * sizeof(float)), *v = xmalloc((size_t)T * kvd * sizeof(float));
    uint64_t r = 99;
    for (int i = 0; i < T * kvd; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        k[i] = (float)((r >> 40) % 20001) / 2500.0f - 4.0f;
        v[i] = (float)((r >> 20) % 20001) / 5000.0f - 2.0f;
    }
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        KVSpec spec;
        make_spec(&spec, &c, &cfgs[ci]);
        if (cfgs[ci].kb == 4) spec.symmetric = 1;
        spec.bits[1].k_bits = 16;                     // a per-head exception in layer 0
        KVCache *cpu = build_kvcache(&spec, 200), *back = build_kvcache(&spec, 200);
        CudaKVCache *gpu = build_cuda_kvcache(&spec, 200);
        for (int l = 0; l < layers; l++) {
            for (int t = 0; t < T; t++) kvcache_append(cpu, l, k + (size_t)t * kvd, v + (size_t)t * kvd);
            for (int t = 0, n = 1 + l; t < T; t += n, n = n * 3 % 41 + 1)   // uneven batches
                cuda_kvcache_append_host(gpu, l, k + (size_t)t * kvd, v + (size_t)t * kvd, n < T - t ? n : T - t);
        }
        cuda_kvcache_to_host(gpu, back);
        ck_assert_msg(kvcache_equal(cpu, back), "%s: GPU cache differs from the CPU cache", cfgs[ci].name);
        KVMemory a = kvcache_memory(cpu, -1), b = cuda_kvcache_memory(gpu, -1);
        ck_assert_msg(a.total == b.total && a.code_bytes == b.code_bytes && a.fp16_bytes == b.fp16_bytes,
                      "%s: byte accounting differs", cfgs[ci].name);
        cuda_kvcache_from_host(gpu, cpu);             // and back: still the same cache
        kvcache_reset(back);
        cuda_kvcache_to_host(gpu, back);
        ck_assert(kvcache_equal(cpu, back));
        free_cuda_kvcache(gpu); free_kvcache(cpu); free_kvcache(back); free_kvspec(&spec);
    }
    free(k); free(v);
    (void)c;
}
END_TEST

START_TEST(test_parity_fp16) {
    const char *dts[] = { "f32", "f16", "bf16" };
    for (int i = 0; i < 3; i++) {
        int same;
        double r = parity(random_model("tiny", dts[i]), &fp16, 40, 64, &same);
        ck_assert_msg(r <= TOL, "tiny %s fp16 cache: max relative logit difference %g > %g", dts[i], r, TOL);
        ck_assert_msg(same, "tiny %s fp16 cache: greedy continuations differ", dts[i]);
    }
}
END_TEST

START_TEST(test_parity_kv8) {
    const Cfg cfgs[] = { PT("kv8 pertoken", 8, 8), KIVI16("kv8 kivi", 8, 8) };
    for (int i = 0; i < 2; i++) {
        int same;
        double r = parity(random_model("tiny", "f16"), &cfgs[i], 40, 64, &same);
        ck_assert_msg(r <= TOL, "%s: max relative logit difference %g > %g", cfgs[i].name, r, TOL);
        ck_assert_msg(same, "%s: greedy continuations differ", cfgs[i].name);
    }
}
END_TEST

START_TEST(test_parity_quantized) {
    const Cfg cfgs[] = { PT("k8v4 pertoken", 8, 4), PT("kv4 pertoken", 4, 4), PT("k4v2 pertoken", 4, 2),
                         PT("kv2 pertoken", 2, 2), KIVI16("k8v4 kivi", 8, 4), KIVI16("kv4 kivi", 4, 4),
                         KIVI16("k4v2 kivi", 4, 2), KIVI16("kv2 kivi", 2, 2),
                         { "kv4 G8 R16 sink4", 4, 4, 8, 16, KEY_AXIS_TOKEN, 4 } };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        int same;
        double r = parity(random_model("tiny", "f16"), &cfgs[i], 40, 64, &same);
        ck_assert_msg(r <= tolerance(&cfgs[i]), "%s: max relative logit difference %g > %g", cfgs[i].name, r,
                      tolerance(&cfgs[i]));
    }
}
END_TEST

// The default model's shape (30 layers, GQA 3, head_dim 64) with random weights, in the
// seed's kivi preset (G = 32, R = 32) — what `--kv SPEC` means (docs/DESIGN.md §3).
START_TEST(test_parity_smollm2_shape) {
    const Cfg cfgs[] = { PT("fp16", 16, 16), KIVI("kv8 kivi", 8, 8), KIVI("k8v4 kivi", 8, 4), KIVI("kv4 kivi", 4, 4),
                         KIVI("kv2 kivi", 2, 2) };
    for (int i = 0; i < 5; i++) {
        int same;
        double r = parity(random_model("smollm2-135m", "f16"), &cfgs[i], 40, 64, &same);
        ck_assert_msg(r <= tolerance(&cfgs[i]), "smollm2-135m %s: max relative logit difference %g > %g", cfgs[i].name, r,
                      tolerance(&cfgs[i]));
        if (cfgs[i].kb >= 8) ck_assert_msg(same, "smollm2-135m %s: greedy continuations differ", cfgs[i].name);
    }
}
END_TEST

START_TEST(test_parity_default_model) {
    if (!file_exists(DEFAULT_MODEL)) { printf("  %s absent (run make model): default-model parity not run\n", DEFAULT_MODEL); return; }
    const Cfg cfgs[] = { PT("fp16", 16, 16), PT("kv8 pertoken", 8, 8), KIVI("kv4 kivi", 4, 4), KIVI("kv2 kivi", 2, 2) };
    for (int i = 0; i < 4; i++) {
        int same;
        double r = parity(DEFAULT_MODEL, &cfgs[i], 48, 64, &same);
        ck_assert_msg(r <= tolerance(&cfgs[i]), "default model %s: max relative logit difference %g > %g", cfgs[i].name, r,
                      tolerance(&cfgs[i]));
        if (cfgs[i].kb >= 8) ck_assert_msg(same, "default model %s: greedy continuations differ", cfgs[i].name);
    }
}
END_TEST

// Prefill on the GPU, copy the cache to the CPU, decode there: the logits match a run that
// stayed on the CPU.
START_TEST(test_cache_interchangeable) {
    Model m;
    load_model(&m, random_model("tiny", "f16"));
    const Config *c = &m.config;
    const Cfg g = KIVI16("kv4 kivi", 4, 4);
    const int n = 45, V = c->vocab_size;
    KVSpec spec;
    make_spec(&spec, c, &g);
    KVCache *cpu = build_kvcache(&spec, n + 1), *moved = build_kvcache(&spec, n + 1);
    CudaKVCache *gpu = build_cuda_kvcache(&spec, n + 1);
    RunState s;
    build_runstate(&s, c, n, n + 1);
    CudaModel *cm = build_cuda_model(&m, n);
    int tok[46];
    for (int i = 0; i < 46; i++) tok[i] = (i * 131 + 7) % V;
    forward(&m, &s, cpu, tok, n, 0, 0);
    cuda_forward(cm, gpu, tok, n, 0, 0);
    cuda_kvcache_to_host(gpu, moved);
    float *a = xmalloc((size_t)V * sizeof(float));
    memcpy(a, forward(&m, &s, cpu, &tok[n], 1, n, 0), (size_t)V * sizeof(float));
    const float *b = forward(&m, &s, moved, &tok[n], 1, n, 0);
    double r = row_rel(b, a, V);
    ck_assert_msg(r <= TOL, "decode on a GPU-filled cache: max relative logit difference %g", r);
    free(a);
    free_cuda_model(cm); free_runstate(&s); free_cuda_kvcache(gpu); free_kvcache(cpu); free_kvcache(moved);
    free_kvspec(&spec); free_model(&m);
}
END_TEST
#endif

#ifdef KVT_CUDA
#include <sys/wait.h>
#include <unistd.h>
// Ask in a child process whether a device is usable: check forks a process per test, and the
// CUDA runtime must not be initialised in the parent before a fork.
static int probe_device(char *why, size_t n) {
    int fd[2];
    if (pipe(fd) != 0) { snprintf(why, n, "cannot probe for a CUDA device (pipe failed)"); return 0; }
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        char w[300];
        int ok = cuda_device_available(w, sizeof w);
        ssize_t len = (ssize_t)strlen(w);
        if (write(fd[1], w, (size_t)len) != len) _exit(2);
        _exit(ok ? 0 : 1);
    }
    close(fd[1]);
    ssize_t got = pid > 0 ? read(fd[0], why, n - 1) : -1;
    why[got > 0 ? got : 0] = 0;
    close(fd[0]);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (!why[0]) snprintf(why, n, "no CUDA device (the probe failed)");
        return 0;
    }
    return 1;
}
#endif

// `run --device cuda` end to end. With a GPU: greedy text identical to the CPU's. Without one
// (or without CUDA in the build): one clear error line and exit 1. Modes that have no CUDA
// path, and q8_0 weights, are refused with one line in CUDA builds.
START_TEST(test_run_device_cuda) {
    const char *model = random_model("tiny", "f16");
    char cmd[2048], *out = NULL, *err = NULL, *cpu = NULL;
    snprintf(cmd, sizeof cmd, "%s %s --device cuda -i 'The cat' -n 64 -t 0", run_bin(), model);
    int rc = run_capture(cmd, &out, &err);
#ifdef KVT_CUDA
    if (have_device) {
        ck_assert_msg(rc == 0, "%s: exit %d: %s", cmd, rc, err);
        ck_assert_msg(strstr(err, "tokens 64 tok_per_s"), "no result line: %s", err);
        snprintf(cmd, sizeof cmd, "%s %s --device cpu -i 'The cat' -n 64 -t 0", run_bin(), model);
        ck_assert_int_eq(run_capture(cmd, &cpu, NULL), 0);
        ck_assert_msg(!strcmp(out, cpu), "greedy text differs:\ncuda: %s\ncpu:  %s", out, cpu);
        free(cpu); free(err); cpu = err = NULL;
        // the debug mode (a sync after every kernel) changes nothing but the timing
        snprintf(cmd, sizeof cmd, "KVT_CUDA_SYNC=1 %s %s --device cuda -i 'The cat' -n 64 -t 0", run_bin(), model);
        ck_assert_int_eq(run_capture(cmd, &cpu, &err), 0);
        ck_assert_msg(!strcmp(out, cpu), "greedy text differs with KVT_CUDA_SYNC=1:\n%s\n%s", out, cpu);
    } else {
        ck_assert_int_eq(rc, 1);
        ck_assert_msg(!strncmp(err, "error: --device cuda: no CUDA device", 36), "stderr: %s", err);
    }
#else
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(!strcmp(err, "error: --device cuda: this binary was built without CUDA\n"), "stderr: %s", err);
#endif
    ck_assert_msg(rc == 0 || strchr(err, '\n') == err + strlen(err) - 1, "more than one line: %s", err);
    free(out); free(err); free(cpu); out = err = NULL;
    snprintf(cmd, sizeof cmd, "%s %s --device cuda -m ppl -i 'The cat sat on the mat'", run_bin(), model);
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
#ifdef KVT_CUDA
    ck_assert_msg(!strcmp(err, "error: --device cuda: -m ppl runs on the CPU only (generate and chat run on CUDA)\n"),
                  "stderr: %s", err);
    free(err);
    // q8_0 weights have no GPU kernel: refused with one line, before any device is looked for.
    snprintf(cmd, sizeof cmd, "%s %s --device cuda -i 'The cat' -n 4", run_bin(), random_model("tiny", "q8_0"));
    ck_assert_int_eq(run_capture(cmd, NULL, &err), 1);
    ck_assert_msg(!strcmp(err, "error: --device cuda: q8_0 weights are not supported on the GPU (export with --dtype f16 "
                               "or bf16 for it)\n"), "stderr: %s", err);
#endif
    free(err);
}
END_TEST

#ifdef KVT_CUDA
// The debug mode names the launch of a faulting kernel (`cuda_check --fault` plants one);
// without it the fault surfaces at a later call, and the line says how to find the kernel.
START_TEST(test_debug_sync_names_faulting_launch) {
    char cmd[1024], *out = NULL, *err = NULL, where[300] = "";
    snprintf(cmd, sizeof cmd, "KVT_CUDA_SYNC=1 %s --fault", cuda_check_bin());
    ck_assert_int_eq(run_capture(cmd, &out, &err), 1);
    const char *p = strstr(out, "planted fault at ");
    ck_assert_msg(p && sscanf(p, "planted fault at %299s", where) == 1, "stdout: %s", out);
    ck_assert_msg(!strncmp(err, "error: CUDA: ", 13) && strstr(err, "in the kernel launched at ") && strstr(err, where),
                  "KVT_CUDA_SYNC=1: the error does not name %s: %s", where, err);
    ck_assert_msg(strchr(err, '\n') == err + strlen(err) - 1, "more than one line: %s", err);
    free(out); free(err); out = err = NULL;
    snprintf(cmd, sizeof cmd, "KVT_CUDA_SYNC=0 %s --fault", cuda_check_bin());
    ck_assert_int_eq(run_capture(cmd, &out, &err), 1);
    ck_assert_msg(!strncmp(err, "error: CUDA: ", 13) && strstr(err, "KVT_CUDA_SYNC=1 names its launch"), "stderr: %s", err);
    free(out); free(err);
}
END_TEST
#endif

START_TEST(test_skipped) {
    printf("skipped: %s\n", skip_reason);
    ck_assert(skip_reason[0] != 0);
}
END_TEST

static Suite *cuda_suite(void) {
    Suite *s = suite_create("cuda");
    TCase *tc = tcase_create("cuda");
    tcase_set_timeout(tc, 600);
#ifdef KVT_CUDA
    have_device = probe_device(skip_reason, sizeof skip_reason);
    tcase_add_test(tc, test_run_device_cuda);
    if (have_device) {
        tcase_add_test(tc, test_cache_codes_identical);
        tcase_add_test(tc, test_parity_fp16);
        tcase_add_test(tc, test_parity_kv8);
        tcase_add_test(tc, test_parity_quantized);
        tcase_add_test(tc, test_parity_smollm2_shape);
        tcase_add_test(tc, test_parity_default_model);
        tcase_add_test(tc, test_cache_interchangeable);
        tcase_add_test(tc, test_debug_sync_names_faulting_launch);
        suite_add_tcase(s, tc);
        return s;
    }
#else
    snprintf(skip_reason, sizeof skip_reason, "built without CUDA (nvcc was not found at build time)");
    tcase_add_test(tc, test_run_device_cuda);
#endif
    tcase_add_test(tc, test_skipped);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(cuda_suite)
