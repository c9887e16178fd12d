// cuda_emulate.cu: the CUDA cache kernels' per-thread code run on the CPU (`make cuda-emulate`),
// for machines without a GPU. The append kernels are one thread per item with no shared
// state, so running their item functions in a loop is exactly what the grid does; the
// attention kernel's per-token functions (key_scores, value_at) run inside a host copy of
// its chunk / softmax / combine structure. Both are checked against the CPU cache
// (quant/kvcache.c: byte-identical contents) and the reference attention (kernels/attention_ref.c).
// What this cannot check — launch configuration, shared memory, warp reductions — is left
// to `make cuda-check` on a GPU.
#include "kvcache_cuda.cu"
#include "attention_cuda.cu"
extern "C" {
#include "../../kernels/attention.h"
}
#include <math.h>
#include <stdio.h>

// A CudaKVCache whose arrays live in host memory (descriptors as build_cuda_kvcache makes them).
static CudaKVCache *build_emulated(const KVSpec *spec, int64_t max_tokens) {
    CudaKVCache *c = (CudaKVCache *)xcalloc(1, sizeof *c);
    c->spec = *spec;
    int64_t n = (int64_t)spec->n_layers * spec->n_kv_heads;
    c->spec.bits = (KVBits *)xmalloc((size_t)n * sizeof(KVBits));
    memcpy(c->spec.bits, spec->bits, (size_t)n * sizeof(KVBits));
    c->max_tokens = max_tokens;
    c->len = (int64_t *)xcalloc((size_t)spec->n_layers, sizeof(int64_t));
    c->streams = (DevStream *)xcalloc((size_t)n * 2, sizeof(DevStream));
    for (int64_t i = 0; i < 2 * n; i++) {
        KVBits b = spec->bits[i / 2];
        uint64_t sz[3];
        DevStream *s = &c->streams[i];
        stream_sizes(s, spec, i % 2 ? b.v_bits : b.k_bits, i % 2 == 0 && spec->key_axis == KEY_AXIS_CHANNEL, max_tokens, sz);
        s->fp16 = (uint16_t *)xcalloc(1, sz[0] + 16);
        s->codes = (uint8_t *)xcalloc(1, sz[1] + 16);
        s->sm = (uint16_t *)xcalloc(1, sz[2] + 16);
    }
    c->d_streams = c->streams;
    c->d_err = (int *)xcalloc(4, sizeof(int));
    return c;
}

static void free_emulated(CudaKVCache *c) {
    for (int64_t i = 0; i < (int64_t)c->spec.n_layers * c->spec.n_kv_heads * 2; i++) {
        free(c->streams[i].fp16); free(c->streams[i].codes); free(c->streams[i].sm);
    }
    free(c->streams); free(c->len); free(c->spec.bits); free(c->d_err); free(c);
}

// cuda_kvcache_append with each launch replaced by a loop over its grid.
static void emu_append(CudaKVCache *c, int layer, const float *k, const float *v, int n) {
    const KVSpec *sp = &c->spec;
    int n_kv = sp->n_kv_heads, hd = sp->head_dim;
    int64_t S = sp->sink, R = sp->residual, t0 = c->len[layer];
    const DevStream *ds = c->streams + (int64_t)layer * n_kv * 2;
    AppendPlan p = append_plan(c, layer, n);
    for (int64_t i = 0; i < (p.q1 - p.q0) * n_kv * 2 * p.groups_per_token; i++)
        quantize_tokens_item(i, ds, k, v, p.q0, n_kv, hd, p.groups_per_token, t0, S, R, sp->symmetric, layer, c->d_err);
    for (int64_t i = 0; i < (p.b1 - p.b0) * n_kv * hd; i++)
        quantize_blocks_item(i, ds, k, p.b0, n_kv, hd, t0, S, R, sp->symmetric, layer, c->d_err);
    for (int64_t i = 0; i < (int64_t)n * n_kv * 2 * hd; i++)
        store_rows_item(i, ds, k, v, t0, n_kv, hd, S, R, t0 + n, layer, c->d_err);
    c->len[layer] = t0 + n;
    if (c->d_err[0]) fatal("emulated append: error %d at layer %d", c->d_err[0], c->d_err[1]);
}

// copy_cache(to_host) with memcpy.
static void emu_to_host(const CudaKVCache *c, KVCache *h) {
    const KVSpec *sp = &c->spec;
    int hd = sp->head_dim;
    for (int l = 0; l < sp->n_layers; l++) {
        int64_t len = h->len[l] = c->len[l];
        for (int i = 0; i < sp->n_kv_heads * 2; i++) {
            const DevStream *d = &c->streams[(int64_t)l * sp->n_kv_heads * 2 + i];
            KVStream *s = &h->streams[(int64_t)l * sp->n_kv_heads * 2 + i];
            int64_t nq = stream_n_quant(d, len, sp->sink, sp->residual);
            int64_t rows = d->bits == 16 ? len : (sp->sink + sp->residual < len ? sp->sink + sp->residual : len);
            int64_t g = d->bits == 16 ? 0 : groups_in_use(d, nq, hd);
            memcpy(s->fp16, d->fp16, (size_t)(rows * hd * 2));
            if (g) { memcpy(s->codes, d->codes, (size_t)(g * d->group_bytes)); memcpy(s->sm, d->sm, (size_t)(g * 4)); }
        }
    }
}

// attn_chunk_kernel for one block (chunk ch of KV head kh of a query over T cached tokens), on
// the host: the same per-thread functions (stage_tile, kivi_fold, tile_scores, tile_values) run
// for every thread in turn between the kernel's barriers; the warp sums are plain sums here.
// m, l: [gq] the chunk's max and sum; o: [gq][hd] its unnormalised output.
template <int MG>
static void emu_chunk(const CudaKVCache *c, int layer, const float *qh, int gq, int64_t T, int kh, int ch, float *m,
                      float *l, float *o) {
    const KVSpec *sp = &c->spec;
    int hd = sp->head_dim, n_kv = sp->n_kv_heads, chunk = chunk_tokens(T);
    const DevStream *ds = c->streams + (int64_t)layer * n_kv * 2;
    ChunkShape cs = chunk_shape(gq, hd, chunk, ds, 2 * n_kv);
    ChunkCtx x;
    x.ks = &ds[kh * 2]; x.vs = &ds[kh * 2 + 1];
    x.S = sp->sink; x.R = sp->residual;
    x.nq_k = stream_n_quant(x.ks, c->len[layer], x.S, x.R); x.nq_v = stream_n_quant(x.vs, c->len[layer], x.S, x.R);
    x.tb = (int64_t)ch * chunk;
    x.n = (int)((x.tb + chunk < T ? x.tb + chunk : T) - x.tb);
    x.hd = hd; x.gq = gq; x.nt = cs.nt; x.parts = cs.nt / ATT_TILE; x.stride = chunk;
    x.pitch = cs.pitch; x.kivi_block = cs.kivi_block; x.buf_bytes = cs.buf_bytes;
    float scale = 1.0f / sqrtf((float)hd);
    // "shared memory", laid out as the kernel's
    float4 *sh4 = (float4 *)xcalloc(cs.shared / 16 + 1, 16);
    float *qs = (float *)sh4, *qsum = qs + gq * hd, *qf = qsum + gq * hd, *kc = qf + (cs.kivi_block ? ATT_KIVI_NB * gq * hd : 0);
    float *sc = kc + (ATT_KIVI_NB * gq + 3) / 4 * 4;
    char *bufs = (char *)(qs + chunk_floats(gq, hd, chunk, cs.kivi_block));
    memcpy(qs, qh, sizeof(float) * gq * hd);
    int ng = x.ks->bits != 16 && !x.ks->per_channel && x.ks->group % 8 ? x.ks->groups_per_token : 0;
    for (int i = 0; i < gq * ng; i++) {
        int h = i / ng, g = i % ng, G = x.ks->group;
        qsum[i] = 0.0f;
        for (int k = 0; k < G; k++) qsum[i] += qs[h * hd + g * G + k];
    }
    const int VC = value_channels(MG);
    float *vacc = (float *)xcalloc((size_t)cs.nt * MG * VC, sizeof(float));
    int ntile = (x.n + ATT_TILE - 1) / ATT_TILE;
    for (int st = 0; st < 2 * ntile; st++) {
        char *cur = bufs + (size_t)(st & 1) * cs.buf_bytes;
        for (int tid = 0; tid < cs.nt; tid++)
            stage_tile(&x, st < ntile ? x.ks : x.vs, st < ntile ? x.nq_k : x.nq_v, st % ntile, cur, tid);
        if (st < ntile) {
            int64_t b0;
            int nb = kivi_blocks(x.ks, x.tb + (int64_t)st * ATT_TILE, tile_tokens(&x, st), x.S, x.nq_k, &b0);
            for (int tid = 0; tid < cs.nt; tid++) kivi_fold(&x, cur, nb, qs, qf, tid);
            for (int e = 0; e < nb * gq; e++) kc[e] = kivi_const(&x, cur, e / gq, e % gq, qs, 0, 1);
            for (int i = 0; i < tile_tokens(&x, st); i++) {
                float sum[MG] = { 0 };
                for (int p = 0; p < x.parts; p++) {
                    float acc[MG];
                    tile_scores<MG>(&x, st, cur, qs, qsum, qf, kc, i * x.parts + p, acc);
                    for (int h = 0; h < gq; h++) sum[h] += acc[h];
                }
                for (int h = 0; h < gq; h++) sc[h * chunk + st * ATT_TILE + i] = sum[h] * scale;
            }
            if (st == ntile - 1)
                for (int h = 0; h < gq; h++) {
                    float mx = -INFINITY, sum = 0.0f;
                    for (int i = 0; i < x.n; i++) mx = fmaxf(mx, sc[h * chunk + i]);
                    for (int i = 0; i < x.n; i++) { sc[h * chunk + i] = expf(sc[h * chunk + i] - mx); sum += sc[h * chunk + i]; }
                    m[h] = mx; l[h] = sum;
                }
        } else
            for (int tid = 0; tid < cs.nt; tid++) tile_values<MG>(&x, st - ntile, cur, sc, tid, vacc + (size_t)tid * MG * VC);
    }
    int U = hd / VC, n_sub = cs.nt / U;
    for (int h = 0; h < gq; h++)
        for (int cc = 0; cc < hd; cc++) {
            float a = 0.0f;
            for (int sub = 0; sub < n_sub; sub++) a += vacc[(size_t)(sub * U + cc / VC) * MG * VC + h * VC + cc % VC];
            o[h * hd + cc] = a;
        }
    free(vacc); free(sh4);
}

// attn_chunk_kernel + attn_combine_kernel for one query (x->n == 1) over T cached tokens and
// its own key and value, on the host: the chunks by emu_chunk, the combine as the kernel's.
static void emu_attention(const CudaKVCache *c, int layer, const AttnQueries *x, int64_t T, float *out) {
    const KVSpec *sp = &c->spec;
    const float *q = x->q;
    int n_heads = x->n_heads, hd = sp->head_dim, n_kv = sp->n_kv_heads, gq = n_heads / n_kv, chunk = chunk_tokens(T);
    float scale = 1.0f / sqrtf((float)hd);
    int nch = (int)((T + chunk - 1) / chunk);
    float *m = (float *)xmalloc(sizeof(float) * (nch + 1) * gq), *l = (float *)xmalloc(sizeof(float) * (nch + 1) * gq);
    float *o = (float *)xcalloc((size_t)(nch + 1) * gq * hd, sizeof(float));
    for (int kh = 0; kh < n_kv; kh++) {
        const float *qs = q + (int64_t)kh * gq * hd;
        for (int ch = 0; ch < nch; ch++) {
            float *mc = m + ch * gq, *lc = l + ch * gq, *oc = o + (size_t)ch * gq * hd;
            switch (pick_mg(gq)) {
            case 1: emu_chunk<1>(c, layer, qs, gq, T, kh, ch, mc, lc, oc); break;
            case 2: emu_chunk<2>(c, layer, qs, gq, T, kh, ch, mc, lc, oc); break;
            case 4: emu_chunk<4>(c, layer, qs, gq, T, kh, ch, mc, lc, oc); break;
            case 8: emu_chunk<8>(c, layer, qs, gq, T, kh, ch, mc, lc, oc); break;
            default: emu_chunk<16>(c, layer, qs, gq, T, kh, ch, mc, lc, oc); break;
            }
        }
        for (int h = 0; h < gq; h++) {
            float own = own_score(qs + h * hd, x->k + (int64_t)kh * hd, hd, scale), M = own, Ls = 0;
            for (int ch = 0; ch < nch; ch++) M = fmaxf(M, m[ch * gq + h]);
            for (int ch = 0; ch < nch; ch++) Ls += l[ch * gq + h] * expf(m[ch * gq + h] - M);
            Ls += expf(own - M);
            for (int cc = 0; cc < hd; cc++) {
                float a = 0;
                for (int ch = 0; ch < nch; ch++) a += o[((size_t)ch * gq + h) * hd + cc] * expf(m[ch * gq + h] - M);
                a += expf(own - M) * fp16_rounded(x->v[(int64_t)kh * hd + cc]);
                out[((int64_t)kh * gq + h) * hd + cc] = a / Ls;
            }
        }
    }
    free(m); free(l); free(o);
}

typedef struct { const char *name; int kb, vb, group, residual, axis, sym, sink, hd, heads, n_heads; } Case;

static int failures;
static uint64_t rng = 12345;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(rng >> 40) / 8388608.0f - 1.0f;
}

static void run_case(const Case *cs) {
    const int layers = 2, T = 333, kvd = cs->heads * cs->hd;
    KVSpec spec;
    build_kvspec_uniform(&spec, layers, cs->heads, cs->hd, cs->kb ? cs->kb : 8, cs->vb ? cs->vb : 8);
    spec.group = cs->group; spec.residual = cs->residual; spec.key_axis = cs->axis; spec.symmetric = cs->sym; spec.sink = cs->sink;
    if (!cs->kb) {
        const int set[4] = { 16, 8, 4, 2 };
        for (int i = 0; i < layers * cs->heads; i++) spec.bits[i] = (KVBits){ set[i % 4], set[(i / 2 + 1) % 4] };
    }
    KVCache *cpu = build_kvcache(&spec, 400), *back = build_kvcache(&spec, 400);
    CudaKVCache *emu = build_emulated(&spec, 400);
    float *k = (float *)xmalloc((size_t)T * kvd * 4), *v = (float *)xmalloc((size_t)T * kvd * 4);
    for (size_t i = 0; i < (size_t)T * kvd; i++) { k[i] = frand() * 6.0f + 0.5f; v[i] = frand() * 2.0f; }
    double worst = 0;
    const int sizes[] = { 1, 5, 64, 2, 31, 100, 7 };
    for (int l = 0; l < layers; l++) {
        for (int t = 0, i = 0; t < T; i++) {
            int n = sizes[(i + l) % 7] < T - t ? sizes[(i + l) % 7] : T - t;
            // attention at this length (from 0 on), as the next position sees it, with its own key and value
            float *q = (float *)xmalloc((size_t)cs->n_heads * cs->hd * 4), *a = (float *)xmalloc((size_t)cs->n_heads * cs->hd * 4);
            float *b = (float *)xmalloc((size_t)cs->n_heads * cs->hd * 4), *own = (float *)xmalloc((size_t)kvd * 2 * 4);
            for (int x = 0; x < cs->n_heads * cs->hd; x++) q[x] = frand();
            for (int x = 0; x < kvd; x++) { own[x] = frand() * 6.0f + 0.5f; own[kvd + x] = frand() * 2.0f; }
            AttnRows xc = { q, own, own + kvd, a, 1, cs->n_heads };
            AttnQueries xg = { q, own, own + kvd, 1, cs->n_heads };
            attention_query(cpu, l, &xc, ATTN_REFERENCE);
            emu_attention(emu, l, &xg, t, b);
            double d = 0, mx = 0;
            for (int x = 0; x < cs->n_heads * cs->hd; x++) { d = fmax(d, fabs((double)a[x] - b[x])); mx = fmax(mx, fabs((double)a[x])); }
            if (!(d / mx <= worst)) worst = d / mx;
            free(q); free(a); free(b); free(own);
            emu_append(emu, l, k + (size_t)t * kvd, v + (size_t)t * kvd, n);
            for (int j = 0; j < n; j++) kvcache_append(cpu, l, k + (size_t)(t + j) * kvd, v + (size_t)(t + j) * kvd);
            t += n;
        }
    }
    emu_to_host(emu, back);
    int same = kvcache_equal(cpu, back);
    int ok = same && worst <= 1e-4;
    if (!ok) failures++;
    printf("%-26s cache %s, attention max rel diff %.1e %s\n", cs->name, same ? "byte-identical" : "DIFFERS", worst,
           ok ? "ok" : "FAIL");
    free(k); free(v);
    free_emulated(emu); free_kvcache(cpu); free_kvcache(back); free_kvspec(&spec);
}

int main(void) {
    const Case cases[] = {
        { "fp16 hd128 gqa4",        16, 16, -1,  0, KEY_AXIS_TOKEN,   0, 0, 128, 2, 8 },
        { "kv8 pertoken hd128",      8,  8, -1,  0, KEY_AXIS_TOKEN,   0, 0, 128, 2, 8 },
        { "k8v4 pertoken hd64 gqa3", 8,  4, -1,  0, KEY_AXIS_TOKEN,   0, 0,  64, 3, 9 },
        { "kv4 sym hd128",           4,  4, -1,  0, KEY_AXIS_TOKEN,   1, 0, 128, 2, 8 },
        { "kv2 G32 R64 sink4",       2,  2, 32, 64, KEY_AXIS_TOKEN,   0, 4, 128, 2, 8 },
        { "k2v4 G8 R16 hd16",        2,  4,  8, 16, KEY_AXIS_TOKEN,   0, 0,  16, 2, 4 },
        { "k4v2 G4 hd16 (odd bytes)", 4, 2,  4,  0, KEY_AXIS_TOKEN,   0, 3,  16, 2, 4 },
        { "k8v4 kivi hd128",         8,  4, 32, 32, KEY_AXIS_CHANNEL, 0, 0, 128, 2, 8 },
        { "kv2 kivi sink5 hd64",     2,  2, 32, 64, KEY_AXIS_CHANNEL, 0, 5,  64, 3, 9 },
        { "k4v8 kivi G16 hd16",      4,  8, 16, 32, KEY_AXIS_CHANNEL, 1, 0,  16, 2, 4 },
        { "mixed per head kivi",     0,  0, 32, 32, KEY_AXIS_CHANNEL, 0, 0, 128, 4, 16 },
        { "mixed per head pertoken", 0,  0, -1,  0, KEY_AXIS_TOKEN,   0, 2,  64, 4, 4 },
    };
    printf("CUDA cache kernels emulated on the CPU (item functions of kvcache_cuda.cu, attention_cuda.cu)\n");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    printf("%s: %d case(s) failed\n", failures ? "FAILED" : "all passed", failures);
    return failures ? 1 : 0;
}
