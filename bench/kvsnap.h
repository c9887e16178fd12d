// kvsnap.h: copy a KV cache's contents into another cache of the same spec and capacity.
// The benchmarks prefill a shared prefix (GSM8K's 4-shot prompt, a passkey prompt) once per
// configuration, keep a copy, and restore it before each continuation instead of
// re-prefilling. quant/kvcache.h has no copy function; this one reads the storage layout of
// quant/kvstore.h and is checked against kvcache_equal (tests/test_evalbench.c).
#ifndef KVT_KVSNAP_H
#define KVT_KVSNAP_H

#include "../quant/kvcache.h"

// dst := src. Both built by build_kvcache from equal specs with equal max_tokens (fatal otherwise).
// Copies only what is in use: lengths, quantized groups, fp16 rows / windows.
void kvcache_copy(KVCache *dst, const KVCache *src);

#endif
