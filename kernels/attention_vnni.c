// attention_vnni.c: the fast attention's AVX2 loops (kernels/attention_avx2.c, read that)
// compiled a second time for CPUs with AVX-512 VNNI. There each int16 dot-product step is one
// vpdpwssd instead of vpmaddwd + vpaddd; everything else is the same code, so the two tables
// give the same results bit for bit. kernels/attention.c picks this one when the CPU has it.
#define ATTN_VNNI 1
#include "attention_avx2.c"
