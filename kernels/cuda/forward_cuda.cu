// forward_cuda.cu: the Llama forward pass on the GPU, the same computation as
// model/forward.c: embed -> per layer [RMSNorm -> Q,K,V -> RoPE -> attention over the cache
// and the position's own K/V -> append to the cache -> output projection -> residual; RMSNorm -> gate, up -> SwiGLU -> down ->
// residual] -> RMSNorm -> classifier.
//
// Weights stay in their file dtype (f32, f16 or bf16) on the device; every projection is one
// cublasGemmEx over the whole batch with fp32 accumulation (CUBLAS_COMPUTE_32F), so a prompt
// is processed through GEMMs and a decode step through the same call with n = 1. cuBLAS is
// column-major: a row-major W[d][k] is a column-major k x d matrix, so out[n][d] = x W^T is
// C(d x n) = op_T(W) · X(k x n). cublasGemmEx wants A and B of one type, so the kernels that
// feed a GEMM (RMSNorm, SwiGLU, attention) write their f32 result as 1-3 planes in the
// weights' dtype whose sum is the f32 value (store_split, cuda_common.h); the GEMM takes the
// planes as extra columns, reading the weights once, and cuda_add_splits sums its outputs.
// That keeps Q, K and V within f32 rounding of the CPU's, so the quantized caches of the two
// devices hold the same codes. The residual stream, Q/K/V and the GEMM outputs are f32.
//
// The cache append and the attention follow docs/DESIGN.md §3 exactly as the CPU does: when every
// token of the batch would see the same cache contents whether appended at once or one by
// one (all streams fp16, or per-token quantization on append, R = 0), the batch is appended
// and attended in one launch each (query i reading the cached tokens before it); otherwise
// position by position, each attending and then appending.
#include "kvcache_cuda.h"
extern "C" {
#include "../../kernels/kernels.h"
#include "../../quant/kvrotate.h"
#include "cuda.h"
}
#include <stdio.h>
#include <string.h>

// ---- device --------------------------------------------------------------------------------

int cuda_device_available(char *why, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) { snprintf(why, n, "no CUDA device (%s)", cudaGetErrorString(e)); return 0; }
    if (count == 0) { snprintf(why, n, "no CUDA device"); return 0; }
    snprintf(why, n, "%d CUDA device(s)", count);
    return 1;
}

const char *cuda_init(void) {
    static char name[256];
    if (name[0]) return name;
    char why[200];
    if (!cuda_device_available(why, sizeof why)) fatal("--device cuda: %s", why);
    cudaDeviceProp p;
    CUDA_CHECK(cudaSetDevice(0));
    CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    if (p.major < 8)
        fatal("--device cuda: %s has compute capability %d.%d; this build needs 8.0 or newer", p.name, p.major, p.minor);
    snprintf(name, sizeof name, "%s", p.name);
    return name;
}

// ---- the model -------------------------------------------------------------------------------

typedef struct {
    const float *attn_norm, *ffn_norm;                   // [dim]
    const void *wq, *wk, *wv, *wo, *w_down;              // as model.h, in wdtype
    const void *w_gate_up;       // [2*hidden][dim]: w_gate's rows then w_up's, one GEMM for both
} DevLayer;

struct CudaModel {
    Config c;
    DevLayer *layers;            // [n_layers], device pointers into wpool
    const void *embedding, *classifier;
    const float *final_norm;
    void *wpool;                 // every weight, one allocation
    uint64_t weight_bytes;       // read per decode step
    float *rope_freqs;           // [head_dim/2], from the CPU's rope_freqs()
    int max_batch;
    float *x, *q, *k, *v, *hgu, *logits;   // f32 activations, [max_batch][...] (hgu: [gate | up])
    int nsplit;                  // planes per GEMM input (act_splits: 1 f32, 2 f16, 3 bf16)
    void *act;                   // GEMM inputs in wdtype, [nsplit][max_batch][max(dim, q_dim, hidden)]
    float *gout;                 // GEMM outputs per plane, [nsplit][max_batch][max(q_dim, dim, hidden, vocab)]
    int *tokens;                 // [max_batch]
    float *h_logits;             // pinned host copy of the returned logits
    AttnScratch att;
    cublasHandle_t blas;
    cudaStream_t st;
};

static cudaDataType cuda_type(DType t) {
    return t == DTYPE_F32 ? CUDA_R_32F : t == DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

// Byte sizes of one layer's tensors on the device: attn_norm, wq, wk, wv, wo, ffn_norm,
// w_gate_up (w_gate and w_up stacked), w_down (norms f32, matrices wdtype).
#define LAYER_TENSORS 8
static void layer_sizes(const Config *c, uint64_t sz[LAYER_TENSORS]) {
    uint64_t ws = (uint64_t)dtype_size(c->wdtype), d = (uint64_t)c->dim, h = (uint64_t)c->hidden_dim;
    uint64_t qd = (uint64_t)c->n_heads * c->head_dim, kvd = (uint64_t)c->n_kv_heads * c->head_dim;
    uint64_t s[LAYER_TENSORS] = { d * 4, qd * d * ws, kvd * d * ws, kvd * d * ws, d * qd * ws, d * 4, 2 * h * d * ws, d * h * ws };
    memcpy(sz, s, sizeof s);
}

static uint64_t align256(uint64_t x) { return (x + 255) / 256 * 256; }

// Widest GEMM input (k) and output (d) of the model.
static size_t widest_in(const Config *c) {
    size_t qd = (size_t)c->n_heads * c->head_dim, w = qd > (size_t)c->hidden_dim ? qd : (size_t)c->hidden_dim;
    return (size_t)c->dim > w ? (size_t)c->dim : w;
}
static size_t widest_out(const Config *c) {
    size_t w = widest_in(c);
    return (size_t)c->vocab_size > w ? (size_t)c->vocab_size : w;
}

static uint64_t activation_bytes(const Config *c, int b) {
    uint64_t qd = (uint64_t)c->n_heads * c->head_dim, kvd = (uint64_t)c->n_kv_heads * c->head_dim, ns = act_splits(c->wdtype);
    uint64_t f32 = (uint64_t)b * ((uint64_t)c->dim + qd + 2 * kvd + 2 * (uint64_t)c->hidden_dim + c->vocab_size);
    if (2 * (uint64_t)c->hidden_dim > widest_out(c)) f32 += ns * b * 2 * (uint64_t)c->hidden_dim;   // gout
    uint64_t att = (uint64_t)ATT_MAX_Q * c->n_heads * ATT_MAX_CHUNKS * (c->head_dim + 2);
    return 4 * (f32 + att + ns * b * widest_out(c)) + ns * b * widest_in(c) * dtype_size(c->wdtype);
}

// Allocate the weight pool and lay the tensors out in it; the caller fills them.
static void carve_weights(CudaModel *cm, uint64_t sizes[], int n_sizes, void *ptrs[]) {
    uint64_t total = 0;
    for (int i = 0; i < n_sizes; i++) total += align256(sizes[i]);
    uint64_t need = total + activation_bytes(&cm->c, cm->max_batch);
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (need > free_b)
        fatal("--device cuda: too little GPU memory: the model needs %.2f GiB (weights %.2f GiB), %.2f GiB are free",
              need / 1073741824.0, total / 1073741824.0, free_b / 1073741824.0);
    CUDA_CHECK(cudaMalloc(&cm->wpool, total));
    uint8_t *p = (uint8_t *)cm->wpool;
    for (int i = 0; i < n_sizes; i++) { ptrs[i] = p; p += align256(sizes[i]); }
}

// Tensor list: embedding, [layer x LAYER_TENSORS], final norm, classifier (size 0 when tied).
static int n_tensors(const Config *c) { return 3 + LAYER_TENSORS * c->n_layers; }
static int weight_list(const Config *c, uint64_t *sizes) {
    uint64_t emb = (uint64_t)c->vocab_size * c->dim * dtype_size(c->wdtype);
    int n = 0;
    sizes[n++] = emb;
    for (int l = 0; l < c->n_layers; l++) { layer_sizes(c, sizes + n); n += LAYER_TENSORS; }
    sizes[n++] = (uint64_t)c->dim * 4;
    sizes[n++] = c->tied_classifier ? 0 : emb;
    return n;
}

static void point_weights(CudaModel *cm, void *ptrs[]) {
    const Config *c = &cm->c;
    cm->embedding = ptrs[0];
    cm->layers = (DevLayer *)xcalloc((size_t)c->n_layers, sizeof(DevLayer));
    for (int l = 0; l < c->n_layers; l++) {
        void **p = ptrs + 1 + LAYER_TENSORS * l;
        DevLayer *d = &cm->layers[l];
        d->attn_norm = (const float *)p[0]; d->wq = p[1]; d->wk = p[2]; d->wv = p[3]; d->wo = p[4];
        d->ffn_norm = (const float *)p[5]; d->w_gate_up = p[6]; d->w_down = p[7];
    }
    cm->final_norm = (const float *)ptrs[1 + LAYER_TENSORS * c->n_layers];
    cm->classifier = c->tied_classifier ? cm->embedding : ptrs[2 + LAYER_TENSORS * c->n_layers];
    uint64_t sz[LAYER_TENSORS];
    layer_sizes(c, sz);
    uint64_t per_layer = 0;
    for (int i = 0; i < LAYER_TENSORS; i++) per_layer += sz[i];
    cm->weight_bytes = per_layer * c->n_layers + (uint64_t)c->vocab_size * c->dim * dtype_size(c->wdtype) + c->dim * 4;
}

static void build_buffers(CudaModel *cm) {
    const Config *c = &cm->c;
    size_t b = (size_t)cm->max_batch, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t ns = (size_t)(cm->nsplit = act_splits(c->wdtype));
    size_t gw = widest_out(c) > 2 * (size_t)c->hidden_dim ? widest_out(c) : 2 * (size_t)c->hidden_dim;
    float **f[] = { &cm->x, &cm->q, &cm->k, &cm->v, &cm->hgu, &cm->logits, &cm->gout };
    size_t n[] = { b * c->dim, b * qd, b * kvd, b * kvd, 2 * b * c->hidden_dim, b * c->vocab_size, ns * b * gw };
    for (int i = 0; i < 7; i++) CUDA_CHECK(cudaMalloc(f[i], n[i] * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&cm->act, ns * b * widest_in(c) * dtype_size(c->wdtype)));
    CUDA_CHECK(cudaMalloc(&cm->tokens, b * sizeof(int)));
    CUDA_CHECK(cudaMallocHost(&cm->h_logits, b * c->vocab_size * sizeof(float)));
    build_attn_scratch(&cm->att, c->n_heads, c->head_dim);
    float *freqs = (float *)xmalloc((size_t)c->head_dim / 2 * sizeof(float));
    rope_freqs(freqs, c);
    CUDA_CHECK(cudaMalloc(&cm->rope_freqs, (size_t)c->head_dim / 2 * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(cm->rope_freqs, freqs, (size_t)c->head_dim / 2 * sizeof(float), cudaMemcpyHostToDevice));
    free(freqs);
    CUDA_CHECK(cudaStreamCreate(&cm->st));
    CUBLAS_CHECK(cublas()->create(&cm->blas));
    CUBLAS_CHECK(cublas()->set_stream(cm->blas, cm->st));
}

static CudaModel *new_model(const Config *c, int max_batch) {
    if (max_batch < 1) fatal("build_cuda_model: max_batch %d < 1", max_batch);
    // The projections here are cuBLAS GEMMs on f32, f16 or bf16 weights; the GPU path has no
    // Q8_0 kernel, so a q8_0 file is refused rather than dequantized behind the user's back.
    if (c->wdtype != DTYPE_F32 && c->wdtype != DTYPE_F16 && c->wdtype != DTYPE_BF16)
        fatal("--device cuda: %s weights are not supported on the GPU (export with --dtype f16 or bf16 for it)",
              dtype_name(c->wdtype));
    cuda_init();
    cuda_attention_check_shape(c->n_heads, c->n_kv_heads, c->head_dim, c->max_seq_len);
    CudaModel *cm = (CudaModel *)xcalloc(1, sizeof *cm);
    cm->c = *c;
    cm->max_batch = max_batch;
    return cm;
}

CudaModel *build_cuda_model(const Model *m, int max_batch) {
    CudaModel *cm = new_model(&m->config, max_batch);
    const Config *c = &cm->c;
    int nt = n_tensors(c);
    uint64_t *sizes = (uint64_t *)xcalloc((size_t)nt, sizeof(uint64_t));
    void **ptrs = (void **)xcalloc((size_t)nt, sizeof(void *));
    weight_list(c, sizes);
    carve_weights(cm, sizes, nt, ptrs);
    const void **src = (const void **)xcalloc((size_t)nt, sizeof(void *));
    src[0] = m->weights.token_embedding;
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->weights.layers[l];
        const void *s[LAYER_TENSORS] = { w->attn_norm, w->wq, w->wk, w->wv, w->wo, w->ffn_norm, w->w_gate, w->w_down };
        memcpy(src + 1 + LAYER_TENSORS * l, s, sizeof s);
    }
    src[1 + LAYER_TENSORS * c->n_layers] = m->weights.final_norm;
    src[2 + LAYER_TENSORS * c->n_layers] = m->weights.classifier;
    for (int i = 0; i < nt; i++) {
        int j = (i - 1) % LAYER_TENSORS, gate_up = i >= 1 && i < 1 + LAYER_TENSORS * c->n_layers && j == 6;
        uint64_t bytes = gate_up ? sizes[i] / 2 : sizes[i];           // w_gate now, w_up below
        if (bytes) CUDA_CHECK(cudaMemcpy(ptrs[i], src[i], bytes, cudaMemcpyHostToDevice));
        if (gate_up) CUDA_CHECK(cudaMemcpy((char *)ptrs[i] + bytes, m->weights.layers[(i - 1) / LAYER_TENSORS].w_up,
                                           bytes, cudaMemcpyHostToDevice));
    }
    point_weights(cm, ptrs);
    free(src); free(ptrs); free(sizes);
    build_buffers(cm);
    return cm;
}

// Uniform values with standard deviation `std` (random.c's scales), or the constant `std`
// for norms (ones).
__global__ static void fill_kernel(void *p, int t, size_t n, uint64_t seed, float std, int constant) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = std;
    if (!constant) {
        uint64_t h = (seed ^ (i * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        v = ((float)(h >> 40) / 16777216.0f - 0.5f) * 3.4641016f * std;    // U(-√3, √3)·std
    }
    store_as(p, t, i, v);
}

CudaModel *build_cuda_model_random(const Config *c0, int max_batch, uint64_t seed) {
    CudaModel *cm = new_model(c0, max_batch);
    const Config *c = &cm->c;
    int nt = n_tensors(c);
    uint64_t *sizes = (uint64_t *)xcalloc((size_t)nt, sizeof(uint64_t));
    void **ptrs = (void **)xcalloc((size_t)nt, sizeof(void *));
    weight_list(c, sizes);
    carve_weights(cm, sizes, nt, ptrs);
    for (int i = 0; i < nt; i++) {
        if (!sizes[i]) continue;
        int in_layer = i >= 1 && i < 1 + LAYER_TENSORS * c->n_layers, j = (i - 1) % LAYER_TENSORS;
        int is_norm = i == 1 + LAYER_TENSORS * c->n_layers || (in_layer && (j == 0 || j == 5));
        int fan_in = in_layer && j == 7 ? c->hidden_dim : c->dim;   // w_down reads hidden
        float std = i == 0 ? powf((float)c->dim, -0.25f) : 1.0f / sqrtf((float)fan_in);
        DType t = is_norm ? DTYPE_F32 : c->wdtype;
        size_t n = sizes[i] / dtype_size(t);
        fill_kernel<<<cdiv(n, 256), 256>>>(ptrs[i], (int)t, n, seed + (uint64_t)i * 0x1234567ull, is_norm ? 1.0f : std, is_norm);
        CUDA_LAUNCH_CHECK();
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    point_weights(cm, ptrs);
    free(ptrs); free(sizes);
    build_buffers(cm);
    return cm;
}

void free_cuda_model(CudaModel *cm) {
    if (!cm) return;
    float *f[] = { cm->x, cm->q, cm->k, cm->v, cm->hgu, cm->logits, cm->gout, cm->rope_freqs };
    for (int i = 0; i < 8; i++) CUDA_CHECK(cudaFree(f[i]));
    CUDA_CHECK(cudaFree(cm->act));
    CUDA_CHECK(cudaFree(cm->tokens));
    CUDA_CHECK(cudaFree(cm->wpool));
    CUDA_CHECK(cudaFreeHost(cm->h_logits));
    free_attn_scratch(&cm->att);
    CUBLAS_CHECK(cublas()->destroy(cm->blas));
    CUDA_CHECK(cudaStreamDestroy(cm->st));
    free(cm->layers);
    free(cm);
}

uint64_t cuda_model_weight_bytes(const CudaModel *cm) { return cm->weight_bytes; }

// ---- forward -----------------------------------------------------------------------------------

// Two ways to run a projection. A decode step (a few tokens) streams each weight once with
// the GEMV kernel (gemv.cu) on f32 activations; a prefill batch is a real matrix product and
// goes to cuBLAS, which needs the activations as planes in the weights' dtype (cuda_common.h).
// The kernels that produce GEMM inputs (rmsnorm, swiglu, attention) write act_type's form.
static int use_gemv(const CudaModel *cm, int n) {
    const Config *c = &cm->c;
    return cuda_gemv_fits(c->wdtype, n, c->dim) && cuda_gemv_fits(c->wdtype, n, c->n_heads * c->head_dim) &&
           cuda_gemv_fits(c->wdtype, n, c->hidden_dim);
}
static DType act_type(const CudaModel *cm, int n) { return use_gemv(cm, n) ? DTYPE_F32 : cm->c.wdtype; }

// out[n][d] (f32) = x[n][k] · W[d][k]^T (+ out if accumulate), fp32 accumulation. x is in
// act_type(cm, n): f32 for the GEMV, else the cm->nsplit planes [nsplit][n][k] in wdtype that
// the producing kernel wrote: one GEMM with nsplit * n columns, then the planes' outputs
// summed (into out, or added to it).
static void gemm(CudaModel *cm, float *out, const void *x, const void *w, int n, int k, int d, int accumulate) {
    if (use_gemv(cm, n)) {
        GemvRows m = { 1, { w }, { out }, { d }, { 0, d } };
        cuda_gemv(&m, (const float *)x, n, k, cm->c.wdtype, accumulate, cm->st);
        return;
    }
    const float alpha = 1.0f, beta = cm->nsplit == 1 && accumulate ? 1.0f : 0.0f;
    cudaDataType t = cuda_type(cm->c.wdtype);
    float *dst = cm->nsplit == 1 ? out : cm->gout;
    CUBLAS_CHECK(cublas()->gemm_ex(cm->blas, CUBLAS_OP_T, CUBLAS_OP_N, d, n * cm->nsplit, k, &alpha, w, t, k, x, t, k,
                                   &beta, dst, CUDA_R_32F, d, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (cm->nsplit > 1) cuda_add_splits(out, cm->gout, (size_t)n * d, cm->nsplit, accumulate, cm->st);
}

// 1 if appending a whole batch before attending gives every position the cache contents it
// would see token by token (the tokens before it, as stored): no token changes representation
// after it is appended.
static int batch_safe(const CudaKVCache *c) {
    int64_t n = (int64_t)c->spec.n_layers * c->spec.n_kv_heads * 2;
    for (int64_t i = 0; i < n; i++) {
        const DevStream *s = &c->streams[i];
        if (s->bits != 16 && (s->per_channel || c->spec.residual > 0)) return 0;
    }
    return 1;
}

static void attention_block(CudaModel *cm, CudaKVCache *cache, int l, int n, int64_t pos) {
    const Config *c = &cm->c;
    const DevLayer *w = &cm->layers[l];
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    DType at = act_type(cm, n);
    size_t asz = (size_t)dtype_size(at), plane = (size_t)n * qd;   // attention output planes
    cuda_rmsnorm(cm->act, at, cm->x, w->attn_norm, n, c->dim, c->norm_eps, cm->st);
    if (use_gemv(cm, n)) {                      // q, k, v read the same x: one launch
        GemvRows m = { 3, { w->wq, w->wk, w->wv }, { cm->q, cm->k, cm->v }, { qd, kvd, kvd },
                       { 0, qd, qd + kvd, qd + 2 * kvd } };
        cuda_gemv(&m, (const float *)cm->act, n, c->dim, c->wdtype, 0, cm->st);
    } else {
        gemm(cm, cm->q, cm->act, w->wq, n, c->dim, qd, 0);
        gemm(cm, cm->k, cm->act, w->wk, n, c->dim, kvd, 0);
        gemm(cm, cm->v, cm->act, w->wv, n, c->dim, kvd, 0);
    }
    cuda_rope(cm->q, c->n_heads, cm->k, c->n_kv_heads, n, c->head_dim, pos, cm->rope_freqs,
              kv_keys_rotate_half(&cache->spec), cm->st);    // the cache's channel order (quant/kvrotate.h)
    if (batch_safe(cache)) {                    // the batch appended, each query sees the tokens before it
        cuda_kvcache_append(cache, l, cm->k, cm->v, n, cm->st);
        AttnQueries x = { cm->q, cm->k, cm->v, n, c->n_heads };
        cuda_attention(cache, l, &x, pos, cm->act, at, plane, &cm->att, cm->st);
    } else {
        for (int t = 0; t < n; t++) {           // in position order: attend, then append (docs/DESIGN.md §3.3)
            AttnQueries x = { cm->q + (size_t)t * qd, cm->k + (size_t)t * kvd, cm->v + (size_t)t * kvd, 1, c->n_heads };
            cuda_attention(cache, l, &x, pos + t, (char *)cm->act + (size_t)t * qd * asz, at, plane, &cm->att, cm->st);
            cuda_kvcache_append(cache, l, cm->k + (size_t)t * kvd, cm->v + (size_t)t * kvd, 1, cm->st);
        }
    }
    gemm(cm, cm->x, cm->act, w->wo, n, qd, c->dim, 1);          // x += attention branch
}

static void ffn_block(CudaModel *cm, int l, int n) {
    const Config *c = &cm->c;
    const DevLayer *w = &cm->layers[l];
    DType at = act_type(cm, n);
    cuda_rmsnorm(cm->act, at, cm->x, w->ffn_norm, n, c->dim, c->norm_eps, cm->st);
    gemm(cm, cm->hgu, cm->act, w->w_gate_up, n, c->dim, 2 * c->hidden_dim, 0);   // [gate | up] per token
    cuda_swiglu(cm->act, at, cm->hgu, n, c->hidden_dim, cm->st);
    gemm(cm, cm->x, cm->act, w->w_down, n, c->hidden_dim, c->dim, 1);   // x += FFN branch
}

float *cuda_forward(CudaModel *cm, CudaKVCache *cache, const int *tokens, int n, int64_t pos, int all_logits) {
    const Config *c = &cm->c;
    const KVSpec *sp = &cache->spec;
    if (n < 1 || n > cm->max_batch) fatal("cuda_forward: batch of %d tokens (max %d)", n, cm->max_batch);
    if (sp->n_layers != c->n_layers || sp->n_kv_heads != c->n_kv_heads || sp->head_dim != c->head_dim)
        fatal("cuda_forward: the KV cache's shape (%d layers, %d kv heads, head_dim %d) is not the model's",
              sp->n_layers, sp->n_kv_heads, sp->head_dim);
    cuda_attention_check_shape(c->n_heads, c->n_kv_heads, c->head_dim, cache->max_tokens);
    if (pos != cache->len[0])
        fatal("cuda_forward: position %lld but the cache holds %lld tokens", (long long)pos, (long long)cache->len[0]);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size) fatal("forward: token id %d outside the vocabulary", tokens[t]);
    CUDA_CHECK(cudaMemcpyAsync(cm->tokens, tokens, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, cm->st));
    cuda_embed(cm->x, cm->tokens, n, cm->embedding, c->wdtype, c->dim, cm->st);
    for (int l = 0; l < c->n_layers; l++) {
        attention_block(cm, cache, l, n, pos);
        ffn_block(cm, l, n);
    }
    int first = all_logits ? 0 : n - 1, rows = n - first;
    cuda_rmsnorm(cm->act, act_type(cm, rows), cm->x + (size_t)first * c->dim, cm->final_norm, rows, c->dim, c->norm_eps,
                 cm->st);
    gemm(cm, cm->logits, cm->act, cm->classifier, rows, c->dim, c->vocab_size, 0);
    CUDA_CHECK(cudaMemcpyAsync(cm->h_logits, cm->logits, (size_t)rows * c->vocab_size * sizeof(float),
                               cudaMemcpyDeviceToHost, cm->st));
    CUDA_CHECK(cudaStreamSynchronize(cm->st));
    cuda_kvcache_check_error(cache);
    return cm->h_logits;
}
