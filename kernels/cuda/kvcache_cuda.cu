// kvcache_cuda.cu: the KV cache in GPU memory, quantize-and-append (docs/DESIGN.md §3).
// Layout and rules are the CPU's (quant/kvview.h, quant/kvcache.c, quant/quantize.c); the
// kernels reproduce them bit for bit: values rounded to fp16 first, group min/max and the
// scale, zero point and codes computed in float64 with round-half-even (rint = nearbyint),
// scale and offset rounded to fp16 through f32, codes packed little-endian within a byte.
//
// An append of n tokens to one layer runs two kernels, in this order:
//   quantize  the groups that leave the fp16 window during this append (per-token: one
//             thread per (token, KV head, K or V, group of G channels); per-channel keys:
//             one thread per (block of G tokens, KV head, channel)). A token's fp16 value
//             is read from the window ring if it was appended earlier, else from the input.
//   store     the new tokens that stay fp16 (sinks, fp16 streams, the window): one thread
//             per (token, KV head, K or V, channel), so consecutive threads write
//             consecutive halves of a row. It also checks every new value (finite, within
//             fp16's range), as kvcache_append does.
// Quantize runs first because the window is a ring: a stored row may overwrite the slot of
// a token that is being quantized in the same append.
#include "kvcache_cuda.h"
extern "C" {
#include "../../quant/kvstore.h"
#include "../../quant/quantize.h"
#include "cuda.h"
}
#include <string.h>

#define FP16_MAX 65504.0f

// ---- device: one group ---------------------------------------------------------------------

// The per-item functions below are __host__ __device__ so that cuda_emulate.cu can run them
// on a machine without a GPU, against the CPU cache (`make cuda-emulate`).
#ifdef __CUDA_ARCH__
#define DDIV(a, b) __ddiv_rn(a, b)      // IEEE double ops, spelled out so that nothing fuses
#define DSUB(a, b) __dsub_rn(a, b)
#define DADD(a, b) __dadd_rn(a, b)
#define DMUL(a, b) __dmul_rn(a, b)
#else
#define DDIV(a, b) ((a) / (b))
#define DSUB(a, b) ((a) - (b))
#define DADD(a, b) ((a) + (b))
#define DMUL(a, b) ((a) * (b))
#endif

// Record the first error: code 1 = a value not finite or beyond fp16, 2 = a group whose
// scale or offset does not fit fp16 (quantize_group's -1).
__host__ __device__ static void set_error(int *err, int code, int layer, int stream, int64_t t) {
#ifdef __CUDA_ARCH__
    if (atomicCAS(err, 0, code) != 0) return;
#else
    if (err[0] != 0) return;
    err[0] = code;
#endif
    err[1] = layer; err[2] = stream; err[3] = (int)t;
}

// fp16 rounding of an input value, or NaN if the cache would refuse it.
__host__ __device__ __forceinline__ float to_fp16_value(float x) {
    if (!isfinite(x) || fabsf(x) > FP16_MAX) return NAN;
    return __half2float(__float2half_rn(x));
}

// quantize_group (quant/quantize.c) for n values given by load(i); writes packed codes and
// the (scale, offset) pair. Returns 0; -1 if the group cannot be represented; -2 if a value
// is one the cache refuses (load gives NaN: not finite or beyond fp16), so that the error
// names the value, as the CPU's kvcache_append does, rather than the group.
// A decode step quantizes a single token, so this runs as a handful of threads and its time
// is the latency of its loads: the loops are unrolled, and the refused-value test is a flag
// checked after the loop, so that the loads of eight elements are in flight at once.
template <class Load>
__host__ __device__ static int quantize_group_dev(Load load, int n, int bits, int symmetric, uint8_t *codes, uint16_t *sm) {
    double lo = INFINITY, hi = -INFINITY;
    int refused = 0;
#ifdef __CUDA_ARCH__
#pragma unroll 8
#endif
    for (int i = 0; i < n; i++) {
        double x = load(i);
        refused |= isnan(x);
        lo = fmin(lo, x);
        hi = fmax(hi, x);
    }
    if (refused) return -2;
    const double q_min = -(double)(1 << (bits - 1)), q_max = (double)((1 << (bits - 1)) - 1);
    double s, z;
    if (symmetric) {
        s = DDIV(fmax(fmax(fabs(lo), fabs(hi)), 1e-5), q_max);
        z = 0.0;
    } else {
        s = DDIV(fmax(DSUB(hi, lo), 1e-5), (double)((1 << bits) - 1));
        z = DSUB(rint(DDIV(lo, s)), q_min);
    }
    double m = DMUL(DADD(z, q_min), s);
    if (s > 65504.0 || fabs(m) > 65504.0) return -1;
    int per_byte = 8 / bits;
    unsigned byte = 0;
#ifdef __CUDA_ARCH__
#pragma unroll 8
#endif
    for (int i = 0; i < n; i++) {
        double q = rint(DSUB(DDIV((double)load(i), s), z));
        q = q < q_min ? q_min : q > q_max ? q_max : q;
        byte |= (unsigned)(q - q_min) << ((i % per_byte) * bits);
        if (i % per_byte == per_byte - 1 || i == n - 1) { codes[i / per_byte] = (uint8_t)byte; byte = 0; }
    }
    sm[0] = __half_as_ushort(__float2half_rn((float)s));
    sm[1] = __half_as_ushort(__float2half_rn((float)m));
    return 0;
}

// Where token t's fp16 value lives during an append starting at t0: the input (t >= t0)
// or the stream's fp16 rows (earlier tokens still in the window).
struct TokenSource {
    const DevStream *s;
    const float *in;            // k or v input, [n][kvd]
    int64_t t0, S, R;
    int kvd, hd, head;
    // Token t's row: exactly one of *in_row (the input) and *fp16_row_p (its window row) is set.
    __host__ __device__ void row(int64_t t, const float **in_row, const uint16_t **fp16_row_p) const {
        *in_row = t >= t0 ? in + (t - t0) * kvd + (int64_t)head * hd : NULL;
        *fp16_row_p = t >= t0 ? NULL : s->fp16 + fp16_row(s, t, S, R) * hd;
    }
    // Element c of a row, as the cache sees it (NaN: a value it refuses).
    __host__ __device__ static float at(const float *in_row, const uint16_t *fp16_row_p, int c) {
        return in_row ? to_fp16_value(in_row[c]) : __half2float(__ushort_as_half(fp16_row_p[c]));
    }
    __host__ __device__ float operator()(int64_t t, int c) const {
        const float *in_row;
        const uint16_t *fp16_row_p;
        row(t, &in_row, &fp16_row_p);
        return at(in_row, fp16_row_p, c);
    }
};

// ---- kernels ---------------------------------------------------------------------------------

// Per-token groups of tokens [q0, q0 + ntok): one thread per (token, head, K/V, group).
__host__ __device__ static void quantize_tokens_item(int64_t idx, const DevStream *streams, const float *k,
                                                     const float *v, int64_t q0, int n_kv, int hd,
                                                     int groups_per_token, int64_t t0, int64_t S, int64_t R,
                                                     int symmetric, int layer, int *err) {
    int64_t per_token = (int64_t)n_kv * 2 * groups_per_token;
    int64_t t = q0 + idx / per_token;
    int rem = (int)(idx % per_token), g = rem % groups_per_token, sv = rem / groups_per_token;  // sv = head*2 + is_value
    const DevStream *s = &streams[sv];
    if (s->bits == 16 || s->per_channel) return;
    // Every value of the group is token t's: find its row once rather than per element.
    TokenSource src = { s, (sv & 1) ? v : k, t0, S, R, n_kv * hd, hd, sv >> 1 };
    const float *in_row;
    const uint16_t *fp16_row_p;
    src.row(t, &in_row, &fp16_row_p);
    int G = s->group, c0 = g * G;
    int64_t gi = (t - S) * s->groups_per_token + g;
    auto load = [&](int i) { return TokenSource::at(in_row, fp16_row_p, c0 + i); };
    int r = quantize_group_dev(load, G, s->bits, symmetric, s->codes + gi * s->group_bytes, s->sm + 2 * gi);
    if (r) set_error(err, r == -2 ? 1 : 2, layer, sv, t);
}

__global__ static void quantize_tokens_kernel(const DevStream *streams, const float *k, const float *v, int64_t q0,
                                              int64_t ntok, int n_kv, int hd, int groups_per_token, int64_t t0,
                                              int64_t S, int64_t R, int symmetric, int layer, int *err) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < ntok * n_kv * 2 * groups_per_token)
        quantize_tokens_item(idx, streams, k, v, q0, n_kv, hd, groups_per_token, t0, S, R, symmetric, layer, err);
}

// Per-channel key blocks [b0, b0 + nblk): one thread per (block, head, channel).
__host__ __device__ static void quantize_blocks_item(int64_t idx, const DevStream *streams, const float *k, int64_t b0,
                                                     int n_kv, int hd, int64_t t0, int64_t S, int64_t R, int symmetric,
                                                     int layer, int *err) {
    int c = (int)(idx % hd), head = (int)(idx / hd % n_kv);
    int64_t b = b0 + idx / ((int64_t)hd * n_kv);
    const DevStream *s = &streams[head * 2];
    if (s->bits == 16 || !s->per_channel) return;
    TokenSource src = { s, k, t0, S, R, n_kv * hd, hd, head };
    int G = s->group;
    int64_t gi = b * hd + c, tb = S + b * G;
    auto load = [&](int i) { return src(tb + i, c); };
    int r = quantize_group_dev(load, G, s->bits, symmetric, s->codes + gi * s->group_bytes, s->sm + 2 * gi);
    if (r) set_error(err, r == -2 ? 1 : 2, layer, head * 2, tb);
}

__global__ static void quantize_blocks_kernel(const DevStream *streams, const float *k, int64_t b0, int64_t nblk,
                                              int n_kv, int hd, int64_t t0, int64_t S, int64_t R, int symmetric,
                                              int layer, int *err) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < nblk * n_kv * hd) quantize_blocks_item(idx, streams, k, b0, n_kv, hd, t0, S, R, symmetric, layer, err);
}

// Store new tokens [t0, t0 + n) that stay fp16 after the append (cache length t_end).
__host__ __device__ static void store_rows_item(int64_t idx, const DevStream *streams, const float *k, const float *v,
                                                int64_t t0, int n_kv, int hd, int64_t S, int64_t R, int64_t t_end,
                                                int layer, int *err) {
    int64_t row = (int64_t)n_kv * 2 * hd;
    int i = (int)(idx / row), rem = (int)(idx % row), c = rem % hd, sv = rem / hd;
    int64_t t = t0 + i;
    float x = ((sv & 1) ? v : k)[(int64_t)i * n_kv * hd + (int64_t)(sv >> 1) * hd + c];
    if (!isfinite(x) || fabsf(x) > FP16_MAX) { set_error(err, 1, layer, sv, t); return; }
    const DevStream *s = &streams[sv];
    if (s->bits != 16 && t >= S && t < S + stream_n_quant(s, t_end, S, R)) return;   // quantized already
    s->fp16[fp16_row(s, t, S, R) * hd + c] = __half_as_ushort(__float2half_rn(x));
}

__global__ static void store_rows_kernel(const DevStream *streams, const float *k, const float *v, int64_t t0, int n,
                                         int n_kv, int hd, int64_t S, int64_t R, int64_t t_end, int layer, int *err) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < (int64_t)n * n_kv * 2 * hd) store_rows_item(idx, streams, k, v, t0, n_kv, hd, S, R, t_end, layer, err);
}

// What an append of n tokens to `layer` must do: quantize per-token tokens [q0, q1) and
// per-channel blocks [b0, b1); groups_per_token of the per-token streams.
typedef struct { int64_t q0, q1, b0, b1; int groups_per_token; } AppendPlan;

static AppendPlan append_plan(const CudaKVCache *c, int layer, int n) {
    const KVSpec *sp = &c->spec;
    int64_t t0 = c->len[layer], t1 = t0 + n, S = sp->sink, R = sp->residual;
    AppendPlan p = { 0, 0, 0, 0, 1 };
    // The streams of a layer that quantize share their regime, so the first one of each kind
    // tells the range of tokens (or blocks) that leave the window in this append.
    const DevStream *tok = NULL, *chan = NULL;
    for (int i = 0; i < sp->n_kv_heads * 2; i++) {
        const DevStream *s = &c->streams[(int64_t)layer * sp->n_kv_heads * 2 + i];
        if (s->bits == 16) continue;
        if (s->per_channel) { if (!chan) chan = s; } else if (!tok) tok = s;
    }
    if (tok) {
        p.q0 = S + stream_n_quant(tok, t0, S, R);
        p.q1 = S + stream_n_quant(tok, t1, S, R);
        p.groups_per_token = tok->groups_per_token;
    }
    if (chan) {
        p.b0 = stream_n_quant(chan, t0, S, R) / chan->group;
        p.b1 = stream_n_quant(chan, t1, S, R) / chan->group;
    }
    return p;
}

// ---- append ------------------------------------------------------------------------------------

void cuda_kvcache_append(CudaKVCache *c, int layer, const float *k, const float *v, int n, cudaStream_t st) {
    const KVSpec *sp = &c->spec;
    if (layer < 0 || layer >= sp->n_layers) fatal("kv cache (cuda): layer %d out of range", layer);
    int64_t t0 = c->len[layer], t1 = t0 + n;
    if (t1 > c->max_tokens)
        fatal("kv cache: context full at layer %d (%lld tokens; raise --ctx)", layer, (long long)c->max_tokens);
    int n_kv = sp->n_kv_heads, hd = sp->head_dim;
    int64_t S = sp->sink, R = sp->residual;
    const DevStream *ds = c->d_streams + (int64_t)layer * n_kv * 2;
    AppendPlan p = append_plan(c, layer, n);
    if (p.q1 > p.q0) {
        int64_t threads = (p.q1 - p.q0) * n_kv * 2 * p.groups_per_token;
        quantize_tokens_kernel<<<cdiv(threads, 128), 128, 0, st>>>(ds, k, v, p.q0, p.q1 - p.q0, n_kv, hd,
            p.groups_per_token, t0, S, R, sp->symmetric, layer, c->d_err);
        CUDA_LAUNCH_CHECK();
    }
    if (p.b1 > p.b0) {
        int64_t threads = (p.b1 - p.b0) * n_kv * hd;
        quantize_blocks_kernel<<<cdiv(threads, 128), 128, 0, st>>>(ds, k, p.b0, p.b1 - p.b0, n_kv, hd, t0, S, R,
            sp->symmetric, layer, c->d_err);
        CUDA_LAUNCH_CHECK();
    }
    int64_t threads = (int64_t)n * n_kv * 2 * hd;
    store_rows_kernel<<<cdiv(threads, 256), 256, 0, st>>>(ds, k, v, t0, n, n_kv, hd, S, R, t1, layer, c->d_err);
    CUDA_LAUNCH_CHECK();
    c->len[layer] = t1;
}

void cuda_kvcache_check_error(CudaKVCache *c) {
    int e[4];
    CUDA_CHECK(cudaMemcpy(e, c->d_err, sizeof e, cudaMemcpyDeviceToHost));
    if (e[0] == 1)
        fatal("kv cache: layer %d kv head %d %s at position %d: an element is not finite or beyond fp16",
              e[1], e[2] >> 1, (e[2] & 1) ? "value" : "key", e[3]);
    if (e[0] == 2)
        fatal("kv cache: layer %d kv head %d %s at position %d: group cannot be quantized (scale or offset beyond fp16)",
              e[1], e[2] >> 1, (e[2] & 1) ? "value" : "key", e[3]);
}

// ---- build / free -----------------------------------------------------------------------------

static uint64_t align256(uint64_t x) { return (x + 255) / 256 * 256; }

// The stream's three array sizes in bytes, as quant/kvcache.c's build_stream allocates them.
static void stream_sizes(DevStream *s, const KVSpec *sp, int bits, int per_channel, int64_t max_tokens, uint64_t sz[3]) {
    int hd = sp->head_dim;
    memset(s, 0, sizeof *s);
    s->bits = bits;
    s->per_channel = per_channel;
    if (bits == 16) { sz[0] = (uint64_t)max_tokens * hd * 2; sz[1] = sz[2] = 0; return; }
    s->group = per_channel ? sp->group : (sp->group == -1 ? hd : sp->group);
    s->groups_per_token = per_channel ? 0 : hd / s->group;
    s->group_bytes = packed_bytes(s->group, bits);
    int64_t max_groups = per_channel ? (max_tokens / s->group + 1) * hd : max_tokens * s->groups_per_token;
    sz[0] = (uint64_t)(sp->sink + sp->residual) * hd * 2;
    sz[1] = (uint64_t)max_groups * s->group_bytes;
    sz[2] = (uint64_t)max_groups * 4;
}

CudaKVCache *build_cuda_kvcache(const KVSpec *spec, int64_t max_tokens) {
    kvspec_validate(spec, "kv cache");
    if (max_tokens <= 0) fatal("kv cache: max_tokens %lld must be positive", (long long)max_tokens);
    for (int l = 0; spec->rotate && l < spec->n_layers; l++)
        if (spec->rotate[l])
            fatal("--device cuda: the rotated cache (--kv-rotate, rotate: true in a config) is not supported on the CUDA path; "
                  "run it with --device cpu");
    cuda_init();
    CudaKVCache *c = (CudaKVCache *)xcalloc(1, sizeof *c);
    c->spec = *spec;
    int64_t n = (int64_t)spec->n_layers * spec->n_kv_heads;
    c->spec.bits = (KVBits *)xmalloc((size_t)n * sizeof(KVBits));
    memcpy(c->spec.bits, spec->bits, (size_t)n * sizeof(KVBits));
    c->spec.rotate = NULL;                       // refused above
    c->max_tokens = max_tokens;
    c->len = (int64_t *)xcalloc((size_t)spec->n_layers, sizeof(int64_t));
    c->streams = (DevStream *)xcalloc((size_t)n * 2, sizeof(DevStream));
    // One pool: sizes first (so a too-small GPU is one clear line), then carve it up.
    uint64_t total = 0, (*sz)[3] = (uint64_t (*)[3])xcalloc((size_t)n * 2, sizeof *sz);
    for (int64_t i = 0; i < 2 * n; i++) {
        KVBits b = spec->bits[i / 2];
        stream_sizes(&c->streams[i], spec, i % 2 ? b.v_bits : b.k_bits,
                     i % 2 == 0 && spec->key_axis == KEY_AXIS_CHANNEL, max_tokens, sz[i]);
        for (int j = 0; j < 3; j++) total += align256(sz[i][j]);
    }
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (total > free_b)
        fatal("--device cuda: too little GPU memory: the KV cache for %lld tokens needs %.2f GiB, %.2f GiB are free "
              "(lower --ctx)", (long long)max_tokens, total / 1073741824.0, free_b / 1073741824.0);
    c->pool_bytes = total;
    CUDA_CHECK(cudaMalloc(&c->pool, total ? total : 256));
    uint8_t *p = (uint8_t *)c->pool;
    for (int64_t i = 0; i < 2 * n; i++) {
        c->streams[i].fp16 = (uint16_t *)p;  p += align256(sz[i][0]);
        c->streams[i].codes = p;             p += align256(sz[i][1]);
        c->streams[i].sm = (uint16_t *)p;    p += align256(sz[i][2]);
    }
    free(sz);
    CUDA_CHECK(cudaMalloc(&c->d_streams, (size_t)n * 2 * sizeof(DevStream)));
    CUDA_CHECK(cudaMemcpy(c->d_streams, c->streams, (size_t)n * 2 * sizeof(DevStream), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc(&c->d_err, 4 * sizeof(int)));
    CUDA_CHECK(cudaMemset(c->d_err, 0, 4 * sizeof(int)));
    return c;
}

void free_cuda_kvcache(CudaKVCache *c) {
    if (!c) return;
    CUDA_CHECK(cudaFree(c->pool));
    CUDA_CHECK(cudaFree(c->d_streams));
    CUDA_CHECK(cudaFree(c->d_err));
    CUDA_CHECK(cudaFree(c->d_tmp));
    free(c->streams);
    free(c->len);
    free(c->spec.bits);
    free(c);
}

void cuda_kvcache_reset(CudaKVCache *c) {
    for (int l = 0; l < c->spec.n_layers; l++) c->len[l] = 0;
}

int64_t cuda_kvcache_len(const CudaKVCache *c, int layer) { return c->len[layer]; }

void cuda_kvcache_append_host(CudaKVCache *c, int layer, const float *k, const float *v, int n) {
    size_t kvd = (size_t)c->spec.n_kv_heads * c->spec.head_dim;
    if (n > c->tmp_tokens) {
        CUDA_CHECK(cudaFree(c->d_tmp));
        CUDA_CHECK(cudaMalloc(&c->d_tmp, (size_t)n * kvd * 2 * sizeof(float)));
        c->tmp_tokens = n;
    }
    float *dk = c->d_tmp, *dv = c->d_tmp + (size_t)n * kvd;
    CUDA_CHECK(cudaMemcpy(dk, k, (size_t)n * kvd * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dv, v, (size_t)n * kvd * sizeof(float), cudaMemcpyHostToDevice));
    cuda_kvcache_append(c, layer, dk, dv, n, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    cuda_kvcache_check_error(c);
}

// ---- copies between devices ----------------------------------------------------------------------

static void check_same_cache(const CudaKVCache *c, const KVCache *h) {
    const KVSpec *a = &c->spec, *b = kvcache_spec(h);
    int same = a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
               a->group == b->group && a->residual == b->residual && a->key_axis == b->key_axis &&
               a->symmetric == b->symmetric && a->sink == b->sink && c->max_tokens == kvcache_max_tokens(h);
    for (int64_t i = 0; same && i < (int64_t)a->n_layers * a->n_kv_heads; i++)
        same = a->bits[i].k_bits == b->bits[i].k_bits && a->bits[i].v_bits == b->bits[i].v_bits;
    if (!same) fatal("kv cache copy between devices: the two caches differ in spec or capacity");
}

// Groups in use by a quantized stream holding n_quant tokens (kvcache_equal's count).
static int64_t groups_in_use(const DevStream *s, int64_t n_quant, int hd) {
    return s->per_channel ? n_quant / s->group * hd : n_quant * s->groups_per_token;
}

static void copy_cache(const CudaKVCache *c, KVCache *h, int to_host) {
    check_same_cache(c, h);
    const KVSpec *sp = &c->spec;
    int hd = sp->head_dim;
    CUDA_CHECK(cudaDeviceSynchronize());
    for (int l = 0; l < sp->n_layers; l++) {
        if (to_host) h->len[l] = c->len[l]; else c->len[l] = h->len[l];
        int64_t len = c->len[l];
        for (int i = 0; i < sp->n_kv_heads * 2; i++) {
            const DevStream *d = &c->streams[(int64_t)l * sp->n_kv_heads * 2 + i];
            KVStream *s = &h->streams[(int64_t)l * sp->n_kv_heads * 2 + i];
            int64_t nq = stream_n_quant(d, len, sp->sink, sp->residual), rows;
            rows = d->bits == 16 ? len : (sp->sink + sp->residual < len ? sp->sink + sp->residual : len);
            int64_t g = d->bits == 16 ? 0 : groups_in_use(d, nq, hd);
            size_t b[3] = { (size_t)(rows * hd * 2), (size_t)(g * d->group_bytes), (size_t)(g * 4) };
            void *hp[3] = { s->fp16, s->codes, s->sm }, *dp[3] = { d->fp16, d->codes, d->sm };
            for (int j = 0; j < 3; j++) {
                if (!b[j]) continue;
                if (to_host) CUDA_CHECK(cudaMemcpy(hp[j], dp[j], b[j], cudaMemcpyDeviceToHost));
                else CUDA_CHECK(cudaMemcpy(dp[j], hp[j], b[j], cudaMemcpyHostToDevice));
            }
        }
    }
}

void cuda_kvcache_to_host(const CudaKVCache *c, KVCache *host) { copy_cache(c, host, 1); }
void cuda_kvcache_from_host(CudaKVCache *c, const KVCache *host) { copy_cache(c, (KVCache *)host, 0); }

// ---- accounting (the formula of quant/kvcache.c's kvcache_memory) ---------------------------------

KVMemory cuda_kvcache_memory(const CudaKVCache *c, int layer) {
    const KVSpec *sp = &c->spec;
    KVMemory m;
    memset(&m, 0, sizeof m);
    uint64_t elems = 0;
    for (int l = 0; l < sp->n_layers; l++) {
        if (layer >= 0 && l != layer) continue;
        for (int i = 0; i < sp->n_kv_heads * 2; i++) {
            const DevStream *s = &c->streams[(int64_t)l * sp->n_kv_heads * 2 + i];
            int64_t nq = stream_n_quant(s, c->len[l], sp->sink, sp->residual);
            m.fp16_bytes += (uint64_t)(c->len[l] - nq) * sp->head_dim * 2;
            if (s->bits == 16) continue;
            int64_t g = groups_in_use(s, nq, sp->head_dim);
            m.code_bytes += (uint64_t)(g * s->group_bytes);
            m.scale_bytes += (uint64_t)g * 4;
        }
        elems += (uint64_t)c->len[l] * sp->n_kv_heads * sp->head_dim * 2;
    }
    m.total = m.code_bytes + m.scale_bytes + m.fp16_bytes;
    m.bits_per_elem = elems ? 8.0 * (double)m.total / (double)elems : 0.0;
    return m;
}

// ---- synthetic contents for benchmarks --------------------------------------------------------------

__global__ static void random_kv_kernel(float *x, size_t n, uint64_t seed) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint64_t h = (seed + i) * 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 31)) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    x[i] = ((float)(h >> 40) / 16777216.0f - 0.5f) * 4.0f;     // uniform in [-2, 2)
}

void cuda_kvcache_fill_random(CudaKVCache *c, int64_t n_tokens, uint64_t seed) {
    const int batch = 4096;
    size_t kvd = (size_t)c->spec.n_kv_heads * c->spec.head_dim;
    float *buf;
    CUDA_CHECK(cudaMalloc(&buf, (size_t)batch * kvd * 2 * sizeof(float)));
    for (int l = 0; l < c->spec.n_layers; l++)
        for (int64_t done = 0; done < n_tokens; done += batch) {
            int n = (int)(n_tokens - done < batch ? n_tokens - done : batch);
            size_t cnt = (size_t)n * kvd * 2;
            random_kv_kernel<<<cdiv(cnt, 256), 256>>>(buf, cnt, seed + ((uint64_t)l << 40) + (uint64_t)done * kvd * 2);
            CUDA_LAUNCH_CHECK();
            cuda_kvcache_append(c, l, buf, buf + (size_t)n * kvd, n, 0);
        }
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaFree(buf));
    cuda_kvcache_check_error(c);
}
