// kvrotate.c: the channel order and the Hadamard rotation of kvrotate.h, one head vector at a
// time. Rotation is chosen per layer, so every query head of a rotated layer is rotated.
#include <stdlib.h>
#include <string.h>
#include "kvrotate.h"
#include "hadamard.h"
#include "../util/util.h"

int kv_keys_rotate_half(const KVSpec *s) {
    return s->key_axis == KEY_AXIS_TOKEN && s->group != -1 && s->group < s->head_dim;
}

static int layer_rotated(const KVSpec *s, int layer) { return s->rotate && s->rotate[layer]; }

int kv_layer_transforms(const KVSpec *s, int layer) {
    return kv_keys_rotate_half(s) || layer_rotated(s, layer);
}

// x := [x_0, x_2, x_4, ... | x_1, x_3, x_5, ...]: interleaved RoPE pairs to rotate-half order.
// tmp: scratch of hd floats.
static void to_rotate_half(float *x, int hd, float *tmp) {
    for (int i = 0; i < hd / 2; i++) { tmp[i] = x[2 * i]; tmp[hd / 2 + i] = x[2 * i + 1]; }
    memcpy(x, tmp, (size_t)hd * sizeof(float));
}

void kv_transform_qkv(const KVSpec *s, int layer, float *q, float *k, float *v, int n, int n_heads) {
    int hd = s->head_dim, H = s->n_kv_heads, gq = n_heads / H, half = kv_keys_rotate_half(s);
    float *tmp = xmalloc((size_t)hd * sizeof(float));
    int rot = layer_rotated(s, layer);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            float *kh = k + ((size_t)t * H + h) * hd, *vh = v + ((size_t)t * H + h) * hd;
            if (half) to_rotate_half(kh, hd, tmp);
            if (rot) { hadamard_transform(kh, hd); hadamard_transform(vh, hd); }
            for (int j = 0; j < gq; j++) {
                float *qh = q + ((size_t)t * n_heads + h * gq + j) * hd;
                if (half) to_rotate_half(qh, hd, tmp);
                if (rot) hadamard_transform(qh, hd);
            }
        }
    free(tmp);
}

void kv_transform_out(const KVSpec *s, int layer, float *out, int n, int n_heads) {
    if (!layer_rotated(s, layer)) return;
    for (int64_t i = 0; i < (int64_t)n * n_heads; i++) hadamard_transform(out + i * s->head_dim, s->head_dim);
}
