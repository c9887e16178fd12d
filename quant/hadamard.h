// hadamard.h: the orthonormal Walsh–Hadamard transform, the rotation a rotated KV cache applies
// to each head vector before quantizing it (docs/DESIGN.md §3).
//
// H_n (n a power of two) is Sylvester's matrix scaled by 1/√n: H_1 = [1], and
// H_2n = [[H_n, H_n], [H_n, -H_n]] / √2. It is symmetric and orthonormal, so H·H = I (the
// transform is its own inverse) and (Hq)·(Hk) = q·k: rotating both the query and the keys leaves
// every attention score unchanged, while the rotated keys spread a few huge channels over all
// channels, which makes min-max groups far tighter (QuaRot, arXiv 2404.00456; the same idea
// as llama.cpp's rotated quantized cache). For values, Σ_j p_j (H v_j) = H Σ_j p_j v_j, so the
// attention output of rotated values is rotated back by applying H once more.
#ifndef KVT_HADAMARD_H
#define KVT_HADAMARD_H

// 1 if n is a power of two >= 1 (the sizes the transform supports).
int hadamard_size_ok(int n);

// x := H_n x, in place, in n·log2(n) additions and subtractions plus n multiplications.
// n must be a power of two (fatal otherwise).
void hadamard_transform(float *x, int n);

#endif
