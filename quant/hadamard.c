// hadamard.c: the fast Walsh–Hadamard transform (hadamard.h). Each of the log2(n) passes
// combines pairs (a, b) at distance h into (a + b, a - b): that is H_2h built from two H_h,
// the recursion of Sylvester's construction unrolled. One scale by 1/√n at the end makes it
// orthonormal.
#include <math.h>
#include "hadamard.h"
#include "../util/util.h"

int hadamard_size_ok(int n) { return n >= 1 && (n & (n - 1)) == 0; }

void hadamard_transform(float *x, int n) {
    if (!hadamard_size_ok(n)) fatal("hadamard_transform: size %d is not a power of two", n);
    for (int h = 1; h < n; h *= 2)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float scale = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i++) x[i] *= scale;
}
