// attention_cuda.cu: decode attention over the (quantized) GPU KV cache, reading packed
// groups where they lie (docs/DESIGN.md §3: never a dequantized copy of the cache).
//
// Split by chunks of tokens ("flash decoding"), because one decode query has too little
// work per head to fill the GPU otherwise. Two kernels:
//   chunk    grid (chunk, KV head, query); one block reads its chunk of the KV head's keys
//            and values once for all the query heads that share them (GQA) and writes, per
//            query head, the chunk's max score m, sum of exponentials l and the unnormalised
//            output o = Σ_t e^(s_t - m) v_t. Inside the block ("the chunk kernel" below):
//              staging each tile of 64 tokens' packed bytes copied into shared memory
//                      (coalesced 16-byte copies, the next tile's in flight);
//              scores  two threads per token, on the codes (per-token groups: s·(q·u) +
//                      m·Σq; KIVI blocks: the block's scales folded into the query);
//              softmax block reductions per query head over the chunk;
//              values  each thread 8 channels of a subset of the tile's tokens, summed
//                      through shared memory at the end.
//   combine  grid (query head, query); threads over head_dim: merge the chunks with the
//            log-sum-exp rule, out = Σ_c e^(m_c - M) o_c / Σ_c e^(m_c - M) l_c, and with them
//            the position's own key and value as one more chunk of one token (the seed's
//            timing, docs/DESIGN.md §3.3: a position sees itself unquantized, rounded to
//            fp16, and is appended after it attends), written in the output projection's
//            input planes (store_split in cuda_common.h).
// Dequantization is x̂ = u·s + m (quant/quantize.h); for a per-token key group the dot is
// s·(q·u) + m·Σq, as in kernels/attention.c. A query's chunking depends only on its own context
// length (chunk_tokens), not on the batch it comes in.
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
        if ((G * BITS & 31) == 0) {                 // whole 32-bit words of codes, no padding codes
            for (int w = 0; w < G * BITS / 32; w++) {
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

// Tokens per chunk for a query that sees T cached tokens: about T / 128 (at most ATT_MAX_CHUNKS
// / 2 chunks), a multiple of 32, at least 32. Short contexts still make enough blocks (1024
// tokens × 8 KV heads: 256 blocks for an H200's 132 SMs); long ones make chunks of several tiles,
// so that a block's fixed costs (queries, softmax, partial sums) and its pipeline's start are
// spread over many tokens, and the combine has fewer chunks to merge. A function of T alone,
// so that a query is split the same way whether it comes in a batch (prefill) or alone
// (decode): docs/DESIGN.md §3.5.
__host__ __device__ static inline int chunk_tokens(int64_t T) {
    int64_t c = (T + ATT_MAX_CHUNKS / 2 - 1) / (ATT_MAX_CHUNKS / 2);
    c = (c + 31) / 32 * 32;
    return (int)(c < 32 ? 32 : c);
}

// ---- the chunk kernel -----------------------------------------------------------------------
// A block reads its chunk a tile of ATT_TILE tokens at a time. It first copies the tile's raw
// cache bytes (fp16 rows, packed codes, fp16 scales and offsets) into shared memory with 16-byte
// cp.async copies, consecutive threads taking consecutive bytes (coalesced), the next tile's
// copy in flight while the current one is computed (two buffers); then it computes from shared
// memory, where a thread can read a whole token cheaply. (One thread per token reading its row
// from global memory made each warp load touch 32 rows and kept few loads in flight: about
// 0.5 TB/s on an H200.) The scores of all the chunk's tiles come first (keys), then the
// softmax, then the values, in one pipeline of 2 × tiles stages.
// A tile's buffer holds:
//   token slots  `pitch` bytes per token: an fp16 row (sink, window, 16-bit stream), or a
//                per-token quantized token's codes (its groups are contiguous in the cache)
//                and, 16-byte aligned after them, its (s, m) pairs. pitch ≡ 32 (mod 128)
//                bytes, so that the 16-byte reads of neighbouring tokens use different banks.
//   KIVI blocks  up to ATT_KIVI_NB per-channel key blocks overlapping the tile (docs/DESIGN.md
//                §3.2): the block's hd groups of codes (contiguous), then its hd (s, m) pairs.
// Tokens that no tile form covers (per-token groups of a size not a multiple of 8; KIVI blocks
// beyond ATT_KIVI_NB, which only groups of fewer than 32 tokens produce) are read from global
// memory by the per-token functions above: correct, slower.
#define ATT_TILE 64
#define ATT_KIVI_NB 3           // KIVI blocks of G >= 32 tokens overlapping 64 tokens: at most 3

// What every thread of a chunk block knows (host and device: cuda_emulate.cu runs the
// per-thread functions below on the CPU).
typedef struct {
    const DevStream *ks, *vs;   // the KV head's keys and values
    int64_t S, R, nq_k, nq_v;   // sink, window; quantized tokens of each stream
    int64_t tb;                 // the chunk's first token
    int n;                      // tokens in the chunk
    int hd, gq, nt, parts;      // head_dim, query heads, threads, threads per token (scores)
    int stride;                 // floats between score rows (shared memory)
    int pitch, kivi_block, buf_bytes;   // bytes: token slot, staged KIVI block, one tile buffer
} ChunkCtx;

// How token t of stream s is read (s holding nq quantized tokens).
enum { TOK_FP16, TOK_CODES, TOK_KIVI, TOK_GLOBAL };
__host__ __device__ __forceinline__ int token_kind(const DevStream *s, int64_t t, int64_t S, int64_t nq) {
    if (s->bits == 16 || t < S || t >= S + nq) return TOK_FP16;
    if (s->per_channel) return TOK_KIVI;
    return s->group % 8 == 0 ? TOK_CODES : TOK_GLOBAL;     // codes read 8 channels at a time
}

__host__ __device__ __forceinline__ int round16(int b) { return (b + 15) & ~15; }
__host__ __device__ __forceinline__ int min_int(int a, int b) { return a < b ? a : b; }

// Tokens of tile `tile` of the chunk.
__host__ __device__ __forceinline__ int tile_tokens(const ChunkCtx *x, int tile) {
    return min_int(x->n - tile * ATT_TILE, ATT_TILE);
}

// The KIVI blocks holding quantized tokens of [t0, t0 + m) of key stream s: the first in *b0,
// and how many of them the tile stages (the rest, if any, are read from global memory).
__host__ __device__ __forceinline__ int kivi_blocks(const DevStream *s, int64_t t0, int m, int64_t S, int64_t nq,
                                                    int64_t *b0) {
    int64_t lo = t0 > S ? t0 : S, hi = t0 + m < S + nq ? t0 + m : S + nq;
    *b0 = 0;
    if (s->bits == 16 || !s->per_channel || lo >= hi) return 0;
    *b0 = (lo - S) / s->group;
    int64_t nb = (hi - 1 - S) / s->group - *b0 + 1;
    return nb < ATT_KIVI_NB ? (int)nb : ATT_KIVI_NB;
}

// Copy n <= 16 bytes from global to shared memory: one asynchronous 16-byte copy where both
// are aligned (always, for the common shapes), else 4-byte copies, else bytes (synchronous).
__host__ __device__ __forceinline__ void stage_bytes(char *dst, const char *src, int n) {
#ifdef __CUDA_ARCH__
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if (n == 16 && (((uintptr_t)src | d) & 15) == 0)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
    else if ((((uintptr_t)src | d | (unsigned)n) & 3) == 0)
        for (int k = 0; k < n; k += 4) asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d + k), "l"(src + k));
    else
        for (int k = 0; k < n; k++) dst[k] = src[k];
#else
    memcpy(dst, src, (size_t)n);
#endif
}

// Thread tid's share of copying tile `tile` of stream s (nq quantized tokens) into buf: items of
// 16 bytes, item k = (token slot k / cpt, 16-byte piece k % cpt), then the KIVI blocks' pieces,
// so that consecutive threads read consecutive bytes of the cache.
__host__ __device__ inline void stage_tile(const ChunkCtx *x, const DevStream *s, int64_t nq, int tile, char *buf,
                                           int tid) {
    int64_t t0 = x->tb + (int64_t)tile * ATT_TILE, S = x->S, qe = S + nq;
    int m = tile_tokens(x, tile), hd = x->hd, ng = s->groups_per_token;
    int per_token = s->bits != 16 && !s->per_channel && s->group % 8 == 0;
    int cb = per_token ? ng * (int)s->group_bytes : 0, cq = round16(cb) / 16, smb = 4 * ng, cs = round16(smb) / 16;
    int any_q = per_token && t0 < qe && t0 + m > S, any_f = s->bits == 16 || t0 < S || t0 + m > qe;
    int cpt = any_f ? hd / 8 : 0;                       // pieces per token slot
    if (any_q && cq + cs > cpt) cpt = cq + cs;
    int64_t b0;
    int nb = kivi_blocks(s, t0, m, S, nq, &b0);
    int kcb = nb ? hd * (int)s->group_bytes : 0, kc = round16(kcb) / 16, kpb = kc + hd / 4;   // KIVI pieces per block
    int items = m * cpt, total = items + nb * kpb;
    for (int k = tid; k < total; k += x->nt) {
        if (k < items) {
            int i = k / cpt, j = k - i * cpt;
            int64_t t = t0 + i;
            char *slot = buf + (size_t)i * x->pitch;
            int kind = token_kind(s, t, S, nq);
            if (kind == TOK_FP16) {
                if (j < hd / 8) stage_bytes(slot + 16 * j, (const char *)(s->fp16 + fp16_row(s, t, S, x->R) * hd) + 16 * j, 16);
            } else if (kind == TOK_CODES) {
                if (j < cq) stage_bytes(slot + 16 * j, (const char *)s->codes + (t - S) * cb + 16 * j, min_int(16, cb - 16 * j));
                else if (j < cq + cs) {
                    int o = 16 * (j - cq);
                    stage_bytes(slot + 16 * cq + o, (const char *)(s->sm + (t - S) * 2 * ng) + o, min_int(16, smb - o));
                }
            }
        } else {
            int kb = (k - items) / kpb, j = (k - items) - kb * kpb;
            char *blk = buf + (size_t)ATT_TILE * x->pitch + (size_t)kb * x->kivi_block;
            int64_t b = b0 + kb;
            if (j < kc) stage_bytes(blk + 16 * j, (const char *)s->codes + b * kcb + 16 * j, min_int(16, kcb - 16 * j));
            else stage_bytes(blk + 16 * j, (const char *)(s->sm + b * 2 * hd) + 16 * (j - kc), 16);
        }
    }
}

// A code as a float. On the GPU without I2F (a quarter-rate instruction): the code ORed into
// the mantissa of 2^23, minus 2^23 (exact for codes below 2^23).
__host__ __device__ __forceinline__ float code_f(unsigned u) {
#ifdef __CUDA_ARCH__
    return __int_as_float(0x4B000000u | u) - 8388608.0f;
#else
    return (float)u;
#endif
}

// n (2, 4 or 8) fp16 values at p (aligned to 2n bytes) as floats.
template <int N>
__host__ __device__ __forceinline__ void halves(const char *p, float *f) {
    uint32_t w[4];
    if (N == 8) { uint4 v = *(const uint4 *)p; w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w; }
    else if (N == 4) { uint2 v = *(const uint2 *)p; w[0] = v.x; w[1] = v.y; }
    else w[0] = *(const uint32_t *)p;
    UNROLL
    for (int k = 0; k < N / 2; k++) {
        f[2 * k] = h2f((uint16_t)(w[k] & 0xffff));
        f[2 * k + 1] = h2f((uint16_t)(w[k] >> 16));
    }
}

// N codes of `bits` bits (N·bits of 16, 32 or 64... bits, or fewer) starting at bit `bit` of the
// code row at p (bit a multiple of N·bits, so they lie in one aligned 32-bit word, or, for
// 64 bits, one aligned 8-byte pair), dequantized with the group's s and m.
template <int N>
__host__ __device__ __forceinline__ void codes_at(const char *p, int bit, int bits, float s, float m, float *f) {
    const unsigned mask = (1u << bits) - 1;
    if (N * bits == 64) {
        uint2 v = *(const uint2 *)(p + bit / 8);
        UNROLL
        for (int k = 0; k < N; k++) f[k] = fmaf(code_f(((k < N / 2 ? v.x : v.y) >> ((k % (N / 2)) * bits)) & mask), s, m);
    } else {
        uint32_t w = *(const uint32_t *)(p + bit / 32 * 4) >> (bit % 32);
        UNROLL
        for (int k = 0; k < N; k++) f[k] = fmaf(code_f((w >> (k * bits)) & mask), s, m);
    }
}

// KIVI blocks staged in buf: the query with each block's per-channel scales folded in,
// qf[kb][h][c] = q_h,c · s_kb,c, so that q_h · k̂_t = Σ_c qf[kb][h][c] u_c,t + Σ_c q_h,c m_kb,c
// (docs/DESIGN.md §7, as the CPU does): no dequantization per token.
__host__ __device__ inline void kivi_fold(const ChunkCtx *x, const char *buf, int nb, const float *qs, float *qf, int tid) {
    int hd = x->hd, gq = x->gq, smo = round16(hd * (int)x->ks->group_bytes);
    for (int e = tid; e < nb * gq * hd; e += x->nt) {
        int kb = e / (gq * hd), c = e % hd, h = e / hd % gq;
        const uint16_t *sm = (const uint16_t *)(buf + (size_t)ATT_TILE * x->pitch + (size_t)kb * x->kivi_block + smo);
        qf[e] = qs[h * hd + c] * h2f(sm[2 * c]);
    }
}

// Σ_c q_h,c m_kb,c over channels c = c0, c0 + dc, ... of staged KIVI block kb.
__host__ __device__ inline float kivi_const(const ChunkCtx *x, const char *buf, int kb, int h, const float *qs, int c0, int dc) {
    int hd = x->hd, smo = round16(hd * (int)x->ks->group_bytes);
    const uint16_t *sm = (const uint16_t *)(buf + (size_t)ATT_TILE * x->pitch + (size_t)kb * x->kivi_block + smo);
    float a = 0.0f;
    for (int c = c0; c < hd; c += dc) a += qs[h * hd + c] * h2f(sm[2 * c + 1]);
    return a;
}

// Scores of tile `tile`, thread tid's share: token i = tid / parts, channels split among its
// `parts` threads (8-channel units, or 4-channel quads of KIVI codes, interleaved); acc[h] gets
// the share of q_h · k̂_t (the caller sums the parts). qs: the queries; qsum: Σq per key group
// (for TOK_GLOBAL); qf, kc: the folded queries and constants of the tile's KIVI blocks.
template <int MG>
__host__ __device__ inline void tile_scores(const ChunkCtx *x, int tile, const char *buf, const float *qs,
                                            const float *qsum, const float *qf, const float *kc, int tid, float *acc) {
    UNROLL
    for (int h = 0; h < MG; h++) acc[h] = 0.0f;
    int i = tid / x->parts, p = tid % x->parts, hd = x->hd, gq = x->gq, m = tile_tokens(x, tile);
    if (i >= m) return;
    const DevStream *s = x->ks;
    int64_t t0 = x->tb + (int64_t)tile * ATT_TILE, t = t0 + i, S = x->S;
    const char *slot = buf + (size_t)i * x->pitch;
    int kind = token_kind(s, t, S, x->nq_k);
    if (kind == TOK_FP16 || kind == TOK_CODES) {
        int bits = s->bits, G = s->group;
        const uint16_t *sm = (const uint16_t *)(slot + round16(s->groups_per_token * (int)s->group_bytes));
        for (int u = p; u < hd / 8; u += x->parts) {
            float f[8];
            if (kind == TOK_FP16) halves<8>(slot + 16 * u, f);
            else {
                int g = 8 * u / G;                      // (G a multiple of 8: the unit is in one group)
                codes_at<8>(slot, 8 * u * bits, bits, h2f(sm[2 * g]), h2f(sm[2 * g + 1]), f);
            }
            UNROLL
            for (int h = 0; h < MG; h++)
                if (h < gq) {
                    float4 a = *(const float4 *)(qs + h * hd + 8 * u), b = *(const float4 *)(qs + h * hd + 8 * u + 4);
                    acc[h] += a.x * f[0] + a.y * f[1] + a.z * f[2] + a.w * f[3] + b.x * f[4] + b.y * f[5] + b.z * f[6] + b.w * f[7];
                }
        }
    } else if (kind == TOK_KIVI) {
        int64_t b0, j = t - S;
        int nb = kivi_blocks(s, t0, m, S, x->nq_k, &b0), G = s->group, kb = (int)(j / G - b0);
        if (kb < nb) {
            const uint8_t *cod = (const uint8_t *)buf + (size_t)ATT_TILE * x->pitch + (size_t)kb * x->kivi_block;
            int w = (int)(j % G), bits = s->bits, off = w * bits / 8, sh = (w * bits) & 7, gb = (int)s->group_bytes;
            unsigned mask = (1u << bits) - 1;
            const float *qb = qf + (size_t)kb * gq * hd;
            for (int c = 4 * p; c < hd; c += 4 * x->parts) {
                float f[4];
                UNROLL
                for (int k = 0; k < 4; k++) f[k] = code_f((cod[(c + k) * gb + off] >> sh) & mask);
                UNROLL
                for (int h = 0; h < MG; h++)
                    if (h < gq) {
                        float4 a = *(const float4 *)(qb + h * hd + c);
                        acc[h] += a.x * f[0] + a.y * f[1] + a.z * f[2] + a.w * f[3];
                    }
            }
            if (p == 0) {
                UNROLL
                for (int h = 0; h < MG; h++) if (h < gq) acc[h] += kc[kb * gq + h];
            }
        } else if (p == 0) key_per_channel<MG>(acc, s, j, qs, hd, gq);
    } else if (p == 0) key_scores<MG>(acc, s, t, S, x->R, x->nq_k, qs, qsum, hd, gq);
}

// Channels per thread in the values: its accumulators, MG × VC floats, stay at most 32.
__host__ __device__ constexpr int value_channels(int mg) { return mg <= 4 ? 8 : 32 / mg; }

// Values of tile `tile`, thread tid: channels [VC·u, VC·u + VC) with u = tid % (hd / VC), tokens
// sub, sub + n_sub, ... of the tile with sub = tid / (hd / VC); acc[h·VC + k] += e_h,t · v̂_t,c.
// sc holds the chunk's e^(a - max) per head.
template <int MG>
__host__ __device__ inline void tile_values(const ChunkCtx *x, int tile, const char *buf, const float *sc, int tid, float *acc) {
    const int VC = value_channels(MG);
    int hd = x->hd, gq = x->gq, U = hd / VC, n_sub = x->nt / U, u = tid % U, sub = tid / U, m = tile_tokens(x, tile);
    if (sub >= n_sub) return;
    const DevStream *s = x->vs;
    int64_t t0 = x->tb + (int64_t)tile * ATT_TILE, S = x->S;
    int bits = s->bits, G = s->group, smo = round16(s->groups_per_token * (int)s->group_bytes);
    for (int i = sub; i < m; i += n_sub) {
        int64_t t = t0 + i;
        const char *slot = buf + (size_t)i * x->pitch;
        int kind = token_kind(s, t, S, x->nq_v);
        float f[VC];
        if (kind == TOK_FP16) halves<VC>(slot + 2 * VC * u, f);
        else if (kind == TOK_CODES) {
            const uint16_t *sm = (const uint16_t *)(slot + smo);
            int g = VC * u / G;                         // (G a multiple of 8, so of VC)
            codes_at<VC>(slot, VC * u * bits, bits, h2f(sm[2 * g]), h2f(sm[2 * g + 1]), f);
        } else {
            UNROLL
            for (int k = 0; k < VC; k++) f[k] = value_at(s, t, VC * u + k, hd, S, x->R, x->nq_v);
        }
        const float *e = sc + tile * ATT_TILE + i;
        UNROLL
        for (int h = 0; h < MG; h++)
            if (h < gq) {
                float eh = e[(size_t)h * x->stride];
                UNROLL
                for (int k = 0; k < VC; k++) acc[h * VC + k] += eh * f[k];
            }
    }
}

// Shared memory of a chunk block, in floats before the tile buffers: queries, Σq per key group,
// folded KIVI queries and constants, scores.
__host__ __device__ __forceinline__ int chunk_floats(int gq, int hd, int stride, int kivi) {
    return 2 * gq * hd + (kivi ? ATT_KIVI_NB * gq * hd : 0) + (ATT_KIVI_NB * gq + 3) / 4 * 4 + gq * stride;
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Query qi splits its len0 + qi cached tokens into chunks of chunk_tokens(len0 + qi); in
// shared memory the score rows are `stride` floats apart, the launch's largest chunk.
template <int MG>
__global__ static void __launch_bounds__(256, 2)
attn_chunk_kernel(const DevStream *streams, const float *q, int64_t len0, int64_t cache_len, int n_heads, int gq, int hd,
                  int64_t S, int64_t R, int stride, int pitch, int kivi_block, int buf_bytes, float scale, float2 *ml,
                  float *po) {
    extern __shared__ float4 sh4[];
    int ch = blockIdx.x, kh = blockIdx.y, qi = blockIdx.z, tid = threadIdx.x;
    int64_t T = len0 + qi;
    int chunk = chunk_tokens(T);
    int64_t tb = (int64_t)ch * chunk, te = tb + chunk < T ? tb + chunk : T;
    if (tb >= te) return;                           // past this query's causal end (uniform)
    ChunkCtx x;
    x.ks = &streams[kh * 2]; x.vs = &streams[kh * 2 + 1];
    x.S = S; x.R = R;
    x.nq_k = stream_n_quant(x.ks, cache_len, S, R); x.nq_v = stream_n_quant(x.vs, cache_len, S, R);
    x.tb = tb; x.n = (int)(te - tb); x.hd = hd; x.gq = gq; x.nt = blockDim.x; x.parts = blockDim.x / ATT_TILE;
    x.stride = stride; x.pitch = pitch; x.kivi_block = kivi_block; x.buf_bytes = buf_bytes;
    float *qs = (float *)sh4, *qsum = qs + gq * hd, *qf = qsum + gq * hd, *kc = qf + (kivi_block ? ATT_KIVI_NB * gq * hd : 0);
    float *sc = kc + (ATT_KIVI_NB * gq + 3) / 4 * 4;
    char *bufs = (char *)(qs + chunk_floats(gq, hd, stride, kivi_block));
    int ntile = (x.n + ATT_TILE - 1) / ATT_TILE, nstage = 2 * ntile;

    stage_tile(&x, x.ks, x.nq_k, 0, bufs, tid);     // the first tile's copy, before anything waits
    cp_async_commit();
    const float *qg = q + ((int64_t)qi * n_heads + (int64_t)kh * gq) * hd;
    for (int i = tid; i < gq * hd; i += blockDim.x) qs[i] = qg[i];
    __syncthreads();
    int ng = x.ks->bits != 16 && !x.ks->per_channel && x.ks->group % 8 ? x.ks->groups_per_token : 0;
    for (int i = tid; i < gq * ng; i += blockDim.x) {   // Σq over each key group, per head (TOK_GLOBAL)
        int h = i / ng, g = i % ng, G = x.ks->group;
        float a = 0.0f;
        for (int c = 0; c < G; c++) a += qs[h * hd + g * G + c];
        qsum[i] = a;
    }

    const int VC = value_channels(MG);
    float vacc[MG * VC];
    UNROLL
    for (int k = 0; k < MG * VC; k++) vacc[k] = 0.0f;
    size_t slot = ((size_t)qi * n_heads + (size_t)kh * gq) * ATT_MAX_CHUNKS + ch;
    for (int st = 0; st < nstage; st++) {
        char *cur = bufs + (size_t)(st & 1) * buf_bytes;
        if (st + 1 < nstage) {                      // the next stage's copy, then wait for this one's
            int nx = st + 1;
            if (nx < ntile) stage_tile(&x, x.ks, x.nq_k, nx, bufs + (size_t)(nx & 1) * buf_bytes, tid);
            else stage_tile(&x, x.vs, x.nq_v, nx - ntile, bufs + (size_t)(nx & 1) * buf_bytes, tid);
            cp_async_commit();
            cp_async_wait<1>();
        } else cp_async_wait<0>();
        __syncthreads();
        if (st < ntile) {                           // scores
            int64_t b0;
            int nb = kivi_blocks(x.ks, tb + (int64_t)st * ATT_TILE, tile_tokens(&x, st), S, x.nq_k, &b0);
            if (nb) {                               // (uniform)
                kivi_fold(&x, cur, nb, qs, qf, tid);
                int lane = tid & 31;
                for (int e = tid >> 5; e < nb * gq; e += blockDim.x >> 5) {
                    float a = warp_sum(kivi_const(&x, cur, e / gq, e % gq, qs, lane, 32));
                    if (lane == 0) kc[e] = a;
                }
                __syncthreads();
            }
            float acc[MG];
            tile_scores<MG>(&x, st, cur, qs, qsum, qf, kc, tid, acc);
            for (int o = 1; o < x.parts; o <<= 1) {
                UNROLL
                for (int h = 0; h < MG; h++) acc[h] += __shfl_xor_sync(0xffffffffu, acc[h], o);
            }
            int i = tid / x.parts;
            if (tid % x.parts == 0 && i < tile_tokens(&x, st)) {
                UNROLL
                for (int h = 0; h < MG; h++) if (h < gq) sc[h * stride + st * ATT_TILE + i] = acc[h] * scale;
            }
        } else tile_values<MG>(&x, st - ntile, cur, sc, tid, vacc);
        __syncthreads();                            // (this buffer is the copy target two stages on)
        if (st == ntile - 1) {                      // softmax within the chunk, per query head
            for (int h = 0; h < gq; h++) {
                float mx = -INFINITY;
                for (int i = tid; i < x.n; i += blockDim.x) mx = fmaxf(mx, sc[h * stride + i]);
                mx = block_max(mx);
                float l = 0.0f;
                for (int i = tid; i < x.n; i += blockDim.x) { float e = expf(sc[h * stride + i] - mx); sc[h * stride + i] = e; l += e; }
                l = block_sum(l);
                if (tid == 0) ml[slot + (size_t)h * ATT_MAX_CHUNKS] = make_float2(mx, l);
            }
        }
    }

    // sum the token subsets' partial outputs (the tile buffers are free now)
    int U = hd / VC, n_sub = blockDim.x / U, u = tid % U, sub = tid / U;
    float *red = (float *)bufs;
    if (sub < n_sub) {
        UNROLL
        for (int h = 0; h < MG; h++)
            if (h < gq) {
                UNROLL
                for (int k = 0; k < VC; k++) red[((size_t)sub * gq + h) * hd + u * VC + k] = vacc[h * VC + k];
            }
    }
    __syncthreads();
    for (int e = tid; e < gq * hd; e += blockDim.x) {
        int h = e / hd, c = e % hd;
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
                                           const float *v, int64_t len0, int n_heads, int n_kv, int hd,
                                           float scale, void *out, int ot, size_t plane) {
    int hh = blockIdx.x, qi = blockIdx.y, kh = hh / (n_heads / n_kv);
    int64_t T = len0 + qi;
    int chunk = chunk_tokens(T), nch = (int)((T + chunk - 1) / chunk);
    size_t base = ((size_t)qi * n_heads + hh) * ATT_MAX_CHUNKS, own = ((size_t)qi * n_kv + kh) * hd;
    // Each chunk's weight e^(m_c - M) is computed once, by one thread, into shared memory:
    // every thread looping over all chunks with an expf each was serial work of up to
    // ATT_MAX_CHUNKS steps per thread.
    __shared__ float wc[ATT_MAX_CHUNKS];
    float a = own_score(q + ((size_t)qi * n_heads + hh) * hd, k + own, hd, scale);
    float M = a, L = 0.0f;
    for (int c = threadIdx.x; c < nch; c += blockDim.x) M = fmaxf(M, ml[base + c].x);
    M = block_max(M);
    for (int c = threadIdx.x; c < nch; c += blockDim.x) {
        wc[c] = expf(ml[base + c].x - M);
        L += ml[base + c].y * wc[c];
    }
    L = block_sum(L) + expf(a - M);                 // (its barriers also publish wc)
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float o = 0.0f;
#pragma unroll 8
        for (int j = 0; j < nch; j++) o += po[(base + j) * hd + c] * wc[j];   // 8 loads in flight, same order
        o += expf(a - M) * fp16_rounded(v[own + c]);
        store_split(out, ot, plane, ((size_t)qi * n_heads + hh) * hd + c, o / L);
    }
}

// ---- host ----------------------------------------------------------------------------------

static int pick_mg(int gq) { return gq <= 1 ? 1 : gq <= 2 ? 2 : gq <= 4 ? 4 : gq <= 8 ? 8 : 16; }

// The chunk kernel's launch for one layer: threads, tile layout and shared memory.
typedef struct {
    int nt;                     // threads: 128, or more when hd / VC channel units need it
    int pitch, kivi_block, buf_bytes;   // ChunkCtx's
    size_t shared;              // dynamic shared memory, bytes
} ChunkShape;

// streams: the layer's 2·n_kv stream descriptors (host copies); NULL means any cache up to 8-bit
// KIVI blocks of 32 tokens (cuda_attention_check_shape, before the cache exists).
static ChunkShape chunk_shape(int gq, int hd, int stride, const DevStream *streams, int n) {
    ChunkShape c;
    int vc = value_channels(pick_mg(gq)), need = 2 * hd, kb = streams ? 0 : round16(hd * 32) + 4 * hd;
    c.nt = 128;
    while (c.nt < hd / vc) c.nt *= 2;               // (hd <= 512: at most 256)
    for (int i = 0; i < n; i++) {
        const DevStream *s = &streams[i];
        if (s->bits == 16) continue;
        int ng = s->groups_per_token;
        if (s->per_channel) { if (round16(hd * (int)s->group_bytes) + 4 * hd > kb) kb = round16(hd * (int)s->group_bytes) + 4 * hd; }
        else if (s->group % 8 == 0 && round16(ng * (int)s->group_bytes) + round16(4 * ng) > need)
            need = round16(ng * (int)s->group_bytes) + round16(4 * ng);
    }
    c.pitch = (need + 31) / 32 * 32 + 32;           // ≡ 32 (mod 128) for hd a multiple of 64
    c.kivi_block = kb;
    c.buf_bytes = ATT_TILE * c.pitch + (kb ? ATT_KIVI_NB * kb : 0);
    size_t red = (size_t)(c.nt / (hd / vc)) * gq * hd * sizeof(float), bufs = 2 * (size_t)c.buf_bytes;
    c.shared = sizeof(float) * (size_t)chunk_floats(gq, hd, stride, kb) + (bufs > red ? bufs : red);
    return c;
}

// Dynamic shared memory a block may use on this device (opt-in), less the reductions' static bytes.
static size_t max_shared(void) {
    static int v = 0;
    if (!v) {
        int dev;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    return (size_t)v - 1024;
}

void cuda_attention_check_shape(int n_heads, int n_kv_heads, int head_dim, int64_t max_tokens) {
    int gq = n_heads / n_kv_heads;
    if (n_heads % n_kv_heads) fatal("--device cuda: %d query heads do not share %d kv heads evenly", n_heads, n_kv_heads);
    if (gq > ATT_MAX_GQ)
        fatal("--device cuda: unsupported configuration: %d query heads per kv head (at most %d)", gq, ATT_MAX_GQ);
    // The chunk kernel reads 8 channels at a time (16-byte fp16 pieces), and a block has at
    // most 256 threads (hd / VC channel units in the values).
    if (head_dim > 512 || head_dim % 8)
        fatal("--device cuda: unsupported configuration: head_dim %d (a multiple of 8, at most 512)", head_dim);
    size_t sh = chunk_shape(gq, head_dim, chunk_tokens(max_tokens), NULL, 0).shared;
    if (sh > max_shared())
        fatal("--device cuda: unsupported configuration: attention over %lld tokens needs %zu bytes of shared memory "
              "per block (at most %zu); lower --ctx", (long long)max_tokens, sh, max_shared());
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
static void launch_chunks(dim3 grid, const ChunkShape *cs, cudaStream_t st, const DevStream *ds, const float *q,
                          int64_t len0, int64_t cache_len, int n_heads, int gq, int hd, int64_t S, int64_t R,
                          int stride, float scale, AttnScratch *scr) {
    static size_t opted = 48 * 1024;                // the default limit; above it, opt in once per size
    if (cs->shared > opted) {
        CUDA_CHECK(cudaFuncSetAttribute(attn_chunk_kernel<MG>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)cs->shared));
        opted = cs->shared;
    }
    attn_chunk_kernel<MG><<<grid, cs->nt, cs->shared, st>>>(ds, q, len0, cache_len, n_heads, gq, hd, S, R, stride,
                                                            cs->pitch, cs->kivi_block, cs->buf_bytes, scale, scr->ml, scr->po);
}

void cuda_attention(const CudaKVCache *c, int layer, const AttnQueries *x, int64_t len0, void *out, DType ot,
                    size_t plane, AttnScratch *scr, cudaStream_t st) {
    const KVSpec *sp = &c->spec;
    int nq = x->n, n_heads = x->n_heads;
    int hd = sp->head_dim, n_kv = sp->n_kv_heads, gq = n_heads / n_kv;
    int64_t cache_len = c->len[layer];
    if (len0 < 0 || len0 + nq - 1 > cache_len) fatal("cuda_attention: queries see %lld cached tokens, the cache holds %lld",
                                                    (long long)(len0 + nq - 1), (long long)cache_len);
    const DevStream *ds = c->d_streams + (int64_t)layer * n_kv * 2;
    float scale = 1.0f / sqrtf((float)hd);
    size_t qd = (size_t)n_heads * hd, kvd = (size_t)n_kv * hd, osz = (size_t)dtype_size(ot);
    for (int q0 = 0; q0 < nq; q0 += ATT_MAX_Q) {
        int m = nq - q0 < ATT_MAX_Q ? nq - q0 : ATT_MAX_Q;
        int64_t l0 = len0 + q0, T = l0 + m - 1;       // the most cached tokens a query of this launch sees
        int chunk = chunk_tokens(T);                  // the largest chunk of the launch (chunk_tokens grows with T)
        unsigned nch = 0;                             // the most chunks of one query of the launch
        for (int i = 0; i < m; i++) {
            unsigned n = cdiv(l0 + i, chunk_tokens(l0 + i));
            if (n > nch) nch = n;
        }
        cuda_attention_check_shape(n_heads, n_kv, hd, T);   // (cheap; also guards callers that skipped it)
        ChunkShape cs = chunk_shape(gq, hd, chunk, c->streams + (int64_t)layer * n_kv * 2, 2 * n_kv);
        if (cs.shared > max_shared())
            fatal("cuda_attention: this cache's attention over %lld tokens needs %zu bytes of shared memory per block "
                  "(at most %zu); lower --ctx", (long long)T, cs.shared, max_shared());
        dim3 grid(nch, n_kv, m);
        const float *qb = x->q + q0 * qd;
        if (T > 0) {                                  // (no cached token before the first position)
            if (gq <= 1)      launch_chunks<1>(grid, &cs, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else if (gq <= 2) launch_chunks<2>(grid, &cs, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else if (gq <= 4) launch_chunks<4>(grid, &cs, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else if (gq <= 8) launch_chunks<8>(grid, &cs, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            else              launch_chunks<16>(grid, &cs, st, ds, qb, l0, cache_len, n_heads, gq, hd, sp->sink, sp->residual, chunk, scale, scr);
            CUDA_LAUNCH_CHECK();
        }
        attn_combine_kernel<<<dim3(n_heads, m), 128, 0, st>>>(scr->ml, scr->po, qb, x->k + q0 * kvd, x->v + q0 * kvd, l0,
                                                              n_heads, n_kv, hd, scale,
                                                              (char *)out + q0 * qd * osz, (int)ot, plane);
        CUDA_LAUNCH_CHECK();
    }
}
