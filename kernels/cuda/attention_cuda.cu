// attention_cuda.cu: decode attention over the (quantized) GPU KV cache, reading packed
// groups where they lie (docs/DESIGN.md §3: never a dequantized copy of the cache).
//
// Split by chunks of tokens ("flash decoding"), because one decode query has too little
// work per head to fill the GPU otherwise. Two kernels:
//   chunk    grid (chunk, KV head, query); one block reads its chunk of the KV head's keys
//            and values once for all the query heads that share them (GQA) and writes, per
//            query head, the chunk's max score m, sum of exponentials l and the unnormalised
//            output o = Σ_t e^(s_t - m) v_t. Inside the block:
//              scores  one thread per token: the thread dequantizes its token's key on the
//                      fly (fp16 row, per-token groups, or one code per channel for KIVI
//                      per-channel blocks) and dots it with the queries held in shared
//                      memory; scores stay in shared memory;
//              softmax block reductions per query head over the chunk;
//              values  one thread per (channel, token subset): consecutive threads read
//                      consecutive codes of a token's value row (coalesced), and subsets
//                      are summed through shared memory.
//   combine  grid (query head, query); threads over head_dim: merge the chunks with the
//            log-sum-exp rule, out = Σ_c e^(m_c - M) o_c / Σ_c e^(m_c - M) l_c, and with them
//            the position's own key and value as one more chunk of one token (the seed's
//            timing, docs/DESIGN.md §3.3: a position sees itself unquantized, rounded to
//            fp16, and is appended after it attends), written in the output projection's
//            input planes (store_split in cuda_common.h).
// Dequantization is x̂ = u·s + m (quant/quantize.h); for a per-token key group the dot is
// s·(q·u) + m·Σq, as in kernels/attention.c. The chunking depends only on the context length.
#include "kvcache_cuda.h"

__host__ __device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// acc[h] += q_h · k_t for an fp16 key row.
// The per-token functions are __host__ __device__ so that cuda_emulate.cu can check them
// on a machine without a GPU.
template <int MG>
__host__ __device__ __forceinline__ void key_fp16(float *acc, const uint16_t *row, const float *qs, int hd, int gq) {
    if ((hd & 7) == 0) {
        for (int c = 0; c < hd; c += 8) {
            uint4 w = *(const uint4 *)(row + c);     // 8 halves in one 16-byte load
            UNROLL
            for (int j = 0; j < 4; j++) {
                uint32_t wj = j == 0 ? w.x : j == 1 ? w.y : j == 2 ? w.z : w.w;
                float2 f = make_float2(h2f((uint16_t)(wj & 0xffff)), h2f((uint16_t)(wj >> 16)));
                UNROLL
                for (int h = 0; h < MG; h++)
                    if (h < gq) acc[h] += qs[h * hd + c + 2 * j] * f.x + qs[h * hd + c + 2 * j + 1] * f.y;
            }
        }
    } else {
        for (int c = 0; c < hd; c++) {
            float k = h2f(row[c]);
            UNROLL
            for (int h = 0; h < MG; h++) if (h < gq) acc[h] += qs[h * hd + c] * k;
        }
    }
}

// acc[h] += q_h · k̂_t for a key stored as per-token groups of BITS-bit codes.
template <int MG, int BITS>
__host__ __device__ __forceinline__ void key_per_token(float *acc, const DevStream *s, int64_t j, const float *qs,
                                              const float *qsum, int hd, int gq) {
    const int per_word = 32 / BITS, mask = (1 << BITS) - 1;
    int G = s->group, ng = s->groups_per_token;
    for (int g = 0; g < ng; g++) {
        int64_t gi = j * ng + g;
        const uint8_t *p = s->codes + gi * s->group_bytes;
        float d[MG];
        UNROLL
        for (int h = 0; h < MG; h++) d[h] = 0.0f;
        int c0 = g * G;
        if ((s->group_bytes & 3) == 0) {
            for (int w = 0; w < (int)(s->group_bytes >> 2); w++) {
                uint32_t word = ((const uint32_t *)p)[w];
                UNROLL
                for (int k = 0; k < per_word; k++) {
                    float u = (float)((word >> (k * BITS)) & mask);
                    int c = c0 + w * per_word + k;
                    UNROLL
                    for (int h = 0; h < MG; h++) if (h < gq) d[h] += qs[h * hd + c] * u;
                }
            }
        } else {
            for (int i = 0; i < G; i++) {
                float u = (float)((p[i * BITS / 8] >> ((i * BITS) & 7)) & mask);
                UNROLL
                for (int h = 0; h < MG; h++) if (h < gq) d[h] += qs[h * hd + c0 + i] * u;
            }
        }
        float sc = h2f(s->sm[2 * gi]), m = h2f(s->sm[2 * gi + 1]);
        UNROLL
        for (int h = 0; h < MG; h++) if (h < gq) acc[h] += sc * d[h] + m * qsum[h * ng + g];
    }
}

// acc[h] += q_h · k̂_t for a key in a KIVI per-channel block: one code per channel.
template <int MG>
__host__ __device__ __forceinline__ void key_per_channel(float *acc, const DevStream *s, int64_t j, const float *qs, int hd, int gq) {
    int G = s->group, bits = s->bits, mask = (1 << bits) - 1;
    int64_t b = j / G;
    int w = (int)(j % G), byte = w * bits / 8, shift = (w * bits) & 7;
    for (int c = 0; c < hd; c++) {
        int64_t gi = b * hd + c;
        float u = (float)((s->codes[gi * s->group_bytes + byte] >> shift) & mask);
        float x = u * h2f(s->sm[2 * gi]) + h2f(s->sm[2 * gi + 1]);
        UNROLL
        for (int h = 0; h < MG; h++) if (h < gq) acc[h] += qs[h * hd + c] * x;
    }
}

// Value of token t, channel c, as attention sees it.
__host__ __device__ __forceinline__ float value_at(const DevStream *s, int64_t t, int c, int hd, int64_t S, int64_t R, int64_t nq) {
    if (s->bits == 16 || t < S || t >= S + nq) return h2f(s->fp16[fp16_row(s, t, S, R) * hd + c]);
    int G = s->group, bits = s->bits, w = c % G;
    int64_t gi = (t - S) * s->groups_per_token + c / G;
    float u = (float)((s->codes[gi * s->group_bytes + w * bits / 8] >> ((w * bits) & 7)) & ((1 << bits) - 1));
    return u * h2f(s->sm[2 * gi]) + h2f(s->sm[2 * gi + 1]);
}

// acc[h] = q_h · k̂_t for the query heads of one KV head, whatever form token t is held in.
template <int MG>
__host__ __device__ __forceinline__ void key_scores(float *acc, const DevStream *ks, int64_t t, int64_t S, int64_t R,
                                                    int64_t nq_k, const float *qs, const float *qsum, int hd, int gq) {
    UNROLL
    for (int h = 0; h < MG; h++) acc[h] = 0.0f;
    if (ks->bits == 16 || t < S || t >= S + nq_k) key_fp16<MG>(acc, ks->fp16 + fp16_row(ks, t, S, R) * hd, qs, hd, gq);
    else if (ks->per_channel) key_per_channel<MG>(acc, ks, t - S, qs, hd, gq);
    else if (ks->bits == 8) key_per_token<MG, 8>(acc, ks, t - S, qs, qsum, hd, gq);
    else if (ks->bits == 4) key_per_token<MG, 4>(acc, ks, t - S, qs, qsum, hd, gq);
    else key_per_token<MG, 2>(acc, ks, t - S, qs, qsum, hd, gq);
}

template <int MG>
__global__ static void attn_chunk_kernel(const DevStream *streams, const float *q, int64_t len0, int64_t cache_len,
                                         int n_heads, int gq, int hd, int64_t S, int64_t R, int chunk, float scale,
                                         float2 *ml, float *po) {
    extern __shared__ float sh[];
    float *qs = sh, *qsum = qs + gq * hd, *sc = qsum + gq * hd, *red = sc + gq * chunk;
    int ch = blockIdx.x, kh = blockIdx.y, qi = blockIdx.z, tid = threadIdx.x;
    int64_t T = len0 + qi, tb = (int64_t)ch * chunk, te = tb + chunk < T ? tb + chunk : T;
    if (tb >= te) return;                           // past this query's causal end (uniform)
    int n = (int)(te - tb);
    const DevStream *ks = &streams[kh * 2], *vs = &streams[kh * 2 + 1];
    int64_t nq_k = stream_n_quant(ks, cache_len, S, R), nq_v = stream_n_quant(vs, cache_len, S, R);

    const float *qg = q + ((int64_t)qi * n_heads + (int64_t)kh * gq) * hd;
    for (int i = tid; i < gq * hd; i += blockDim.x) qs[i] = qg[i];
    __syncthreads();
    int ng = ks->bits != 16 && !ks->per_channel ? ks->groups_per_token : 0;
    for (int i = tid; i < gq * ng; i += blockDim.x) {   // Σq over each key group, per head
        int h = i / ng, g = i % ng, G = ks->group;
        float a = 0.0f;
        for (int c = 0; c < G; c++) a += qs[h * hd + g * G + c];
        qsum[i] = a;
    }
    __syncthreads();

    // scores: one thread per token
    for (int i = tid; i < n; i += blockDim.x) {
        int64_t t = tb + i;
        float acc[MG];
        key_scores<MG>(acc, ks, t, S, R, nq_k, qs, qsum, hd, gq);
        UNROLL
        for (int h = 0; h < MG; h++) if (h < gq) sc[h * chunk + i] = acc[h] * scale;
    }
    __syncthreads();

    // softmax within the chunk, per query head
    size_t slot = ((size_t)qi * n_heads + (size_t)kh * gq) * ATT_MAX_CHUNKS + ch;
    for (int h = 0; h < gq; h++) {
        float mx = -INFINITY;
        for (int i = tid; i < n; i += blockDim.x) mx = fmaxf(mx, sc[h * chunk + i]);
        mx = block_max(mx);
        float l = 0.0f;
        for (int i = tid; i < n; i += blockDim.x) { float e = expf(sc[h * chunk + i] - mx); sc[h * chunk + i] = e; l += e; }
        l = block_sum(l);
        if (tid == 0) ml[slot + (size_t)h * ATT_MAX_CHUNKS] = make_float2(mx, l);
    }
    __syncthreads();

    // values: thread (sub, c) sums tokens sub, sub + n_sub, ... of channel c
    int n_sub = blockDim.x / hd, c = tid % hd, sub = tid / hd;
    float acc[MG];
    UNROLL
    for (int h = 0; h < MG; h++) acc[h] = 0.0f;
    if (sub < n_sub)
        for (int i = sub; i < n; i += n_sub) {
            float v = value_at(vs, tb + i, c, hd, S, R, nq_v);
            UNROLL
            for (int h = 0; h < MG; h++) if (h < gq) acc[h] += sc[h * chunk + i] * v;
        }
    if (sub < n_sub) {
        UNROLL
        for (int h = 0; h < MG; h++) if (h < gq) red[((size_t)sub * gq + h) * hd + c] = acc[h];
    }
    __syncthreads();
    if (sub == 0)
        for (int h = 0; h < gq; h++) {
            float o = 0.0f;
            for (int k = 0; k < n_sub; k++) o += red[((size_t)k * gq + h) * hd + c];
            po[(slot + (size_t)h * ATT_MAX_CHUNKS) * hd + c] = o;
        }
}

__host__ __device__ __forceinline__ float fp16_rounded(float x) { return __half2float(__float2half_rn(x)); }

// The score of a position's own key: q · fp16(k) · scale (each thread computes it whole: one
// head vector, far less work than the chunks).
__host__ __device__ __forceinline__ float own_score(const float *q, const float *k, int hd, float scale) {
    float a = 0.0f;
    for (int c = 0; c < hd; c++) a += q[c] * fp16_rounded(k[c]);
    return a * scale;
}

// q, k, v: the launch's queries [m][n_heads][hd] and their own keys and values [m][n_kv][hd].
__global__ static void attn_combine_kernel(const float2 *ml, const float *po, const float *q, const float *k,
                                           const float *v, int64_t len0, int chunk, int n_heads, int n_kv, int hd,
                                           float scale, void *out, int ot, size_t plane) {
    int hh = blockIdx.x, qi = blockIdx.y, kh = hh / (n_heads / n_kv);
    int64_t T = len0 + qi;
    int nch = (int)((T + chunk - 1) / chunk);
    size_t base = ((size_t)qi * n_heads + hh) * ATT_MAX_CHUNKS, own = ((size_t)qi * n_kv + kh) * hd;
    float a = own_score(q + ((size_t)qi * n_heads + hh) * hd, k + own, hd, scale);
    float M = a, L = 0.0f;
    for (int c = 0; c < nch; c++) M = fmaxf(M, ml[base + c].x);
    for (int c = 0; c < nch; c++) L += ml[base + c].y * expf(ml[base + c].x - M);
    L += expf(a - M);
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float o = 0.0f;
        for (int j = 0; j < nch; j++) o += po[(base + j) * hd + c] * expf(ml[base + j].x - M);
        o += expf(a - M) * fp16_rounded(v[own + c]);
        store_split(out, ot, plane, ((size_t)qi * n_heads + hh) * hd + c, o / L);
    }
}

// ---- host ----------------------------------------------------------------------------------

static int block_threads(int hd) { return hd <= 128 ? 128 : (hd + 31) / 32 * 32; }

// Tokens per chunk for a context of T tokens: at most ATT_MAX_CHUNKS chunks, at least 64
// tokens each (a multiple of 32).
static int chunk_tokens(int64_t T) {
    int64_t c = (T + ATT_MAX_CHUNKS - 1) / ATT_MAX_CHUNKS;
    c = (c + 31) / 32 * 32;
    return (int)(c < 64 ? 64 : c);
}

static size_t shared_bytes(int gq, int hd, int chunk) {
    return sizeof(float) * ((size_t)gq * hd * 2 + (size_t)gq * chunk + (size_t)gq * block_threads(hd));
}

void cuda_attention_check_shape(int n_heads, int n_kv_heads, int head_dim, int64_t max_tokens) {
    int gq = n_heads / n_kv_heads;
    if (n_heads % n_kv_heads) fatal("--device cuda: %d query heads do not share %d kv heads evenly", n_heads, n_kv_heads);
    if (gq > ATT_MAX_GQ)
        fatal("--device cuda: unsupported configuration: %d query heads per kv head (at most %d)", gq, ATT_MAX_GQ);
    if (head_dim > 1024) fatal("--device cuda: unsupported configuration: head_dim %d (at most 1024)", head_dim);
    size_t sh = shared_bytes(gq, head_dim, chunk_tokens(max_tokens));
    if (sh > 47 * 1024)     // 48 KiB per block without opt-in, less the reductions' static 256 bytes
        fatal("--device cuda: unsupported configuration: attention over %lld tokens needs %zu bytes of shared memory "
              "per block (at most 49152); lower --ctx", (long long)max_tokens, sh);
}

void build_attn_scratch(AttnScratch *a, int n_heads, int head_dim) {
    size_t slots = (size_t)ATT_MAX_Q * n_heads * ATT_MAX_CHUNKS;
    CUDA_CHECK(cudaMalloc(&a->ml, slots * sizeof(float2)));
    CUDA_CHECK(cudaMalloc(&a->po, slots * head_dim * sizeof(float)));
}

void free_attn_scratch(AttnScratch *a) {
    CUDA_CHECK(cudaFree(a->ml));
    CUDA_CHECK(cudaFree(a->po));
    a->ml = NULL;
    a->po = NULL;
}

template <int MG>
static void launch_chunks(dim3 grid, int threads, size_t sh, cudaStream_t st, const DevStream *ds, const float *q,
                          int64_t len0, int64_t cache_len, int n_heads, int gq, int hd, int64_t S, int64_t R,
                          int chunk, float scale, AttnScratch *scr) {
    attn_chunk_kernel<MG><<<grid, threads, sh, st>>>(ds, q, len0, cache_len, n_heads, gq, hd, S, R, chunk, scale,
                                                     scr->ml, scr->po);
}

void cuda_attention(const CudaKVCache *c, int layer, const AttnQueries *x, int64_t len0, void *out, DType ot,
                    size_t plane, AttnScratch *scr, cudaStream_t st) {
    const KVSpec *sp = &c->spec;
    int nq = x->n, n_heads = x->n_heads;
    int hd = sp->head_dim, n_kv = sp->n_kv_heads, gq = n_heads / n_kv, threads = block_threads(hd);
    int64_t cache_len = c->len[layer];
    if (len0 < 0 || len0 + nq - 1 > cache_len) fatal("cuda_attention: queries see %lld cached tokens, the cache holds %lld",
                                                    (long long)(len0 + nq - 1), (long long)cache_len);
    const DevStream *ds = c->d_streams + (int64_t)layer * n_kv * 2;
    float scale = 1.0f / sqrtf((float)hd);
    size_t qd = (size_t)n_heads * hd, kvd = (size_t)n_kv * hd, osz = (size_t)dtype_size(ot);
    for (int q0 = 0; q0 < nq; q0 += ATT_MAX_Q) {
        int m = nq - q0 < ATT_MAX_Q ? nq - q0 : ATT_MAX_Q;
        int64_t l0 = len0 + q0, T = l0 + m - 1;       // the most cached tokens a query of this launch sees
        int chunk = chunk_tokens(T);
        size_t sh = shared_bytes(gq, hd, chunk);
        dim3 grid(cdiv(T, chunk), n_kv, m);
        const float *qb = x->q + q0 * qd;
        if (T > 0) {                                  // (no cached token before the first position)
            if (gq <= 1)      launch_chunks<1>(grid, threads, sh, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else if (gq <= 2) launch_chunks<2>(grid, threads, sh, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else if (gq <= 4) launch_chunks<4>(grid, threads, sh, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else if (gq <= 8) launch_chunks<8>(grid, threads, sh, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else              launch_chunks<16>(grid, threads, sh, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            CUDA_LAUNCH_CHECK();
        }
        attn_combine_kernel<<<dim3(n_heads, m), 128, 0, st>>>(scr->ml, scr->po, qb, x->k + q0 * kvd, x->v + q0 * kvd, l0,
                                                              chunk, n_heads, n_kv, hd, scale,
                                                              (char *)out + q0 * qd * osz, (int)ot, plane);
        CUDA_LAUNCH_CHECK();
    }
}
