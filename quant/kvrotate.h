// kvrotate.h: what the cache asks of a layer's queries, keys and values before attention, and
// of the attention output after it (docs/DESIGN.md §3.10). Both keep every score q·k and every
// output exactly what they are in real arithmetic; they only change which numbers share a
// quantization group.
//
//   channel order  Per-token key groups smaller than head_dim hold consecutive channels in
//                  Hugging Face's rotate-half order, as the seed's groups do: model.bin keeps
//                  Meta's interleaved RoPE order (pair i = channels 2i, 2i+1), so q and k are
//                  permuted to [channels 0, 2, 4, ... | 1, 3, 5, ...] of each head. A group of
//                  32 at head_dim 64 then holds the first elements of all 32 RoPE pairs.
//   rotation       A layer with `rotate` set has each head's q, k and v multiplied by the orthonormal
//                  Walsh–Hadamard matrix H (quant/hadamard.h) before it is cached and attended,
//                  and its attention output by H again after: (Hq)·(Hk) = q·k, and
//                  Σ_j p_j H v_j = H Σ_j p_j v_j with H·H = I.
#ifndef KVT_KVROTATE_H
#define KVT_KVROTATE_H

#include "kvcache.h"

// 1 if per-token key groups of `s` are smaller than head_dim, so keys are grouped in
// rotate-half channel order.
int kv_keys_rotate_half(const KVSpec *s);
// 1 if layer l of `s` changes q, k, v or the output at all (channel order or a rotated head).
int kv_layer_transforms(const KVSpec *s, int layer);

// Rows of n positions: q [n][n_heads * head_dim], k and v [n][n_kv_heads * head_dim], in place.
void kv_transform_qkv(const KVSpec *s, int layer, float *q, float *k, float *v, int n, int n_heads);
// The attention output out [n][n_heads * head_dim] back to the model's coordinates, in place.
void kv_transform_out(const KVSpec *s, int layer, float *out, int n, int n_heads);

#endif
