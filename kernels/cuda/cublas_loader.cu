// cublas_loader.cu: cuBLAS, opened on first use. libcublasLt is over 500 MB; linking it into
// `run` made every start, CPU runs included, pay ~0.5 s of page faults and relocations. So
// `run` links only the small CUDA runtime, and the five cuBLAS entry points the forward pass
// uses are looked up here with dlopen/dlsym when a GPU model is first built.
#include "cuda_common.h"
#include <dlfcn.h>
#include <stdio.h>

#define KVT_STR2(x) #x
#define KVT_STR(x) KVT_STR2(x)

static void *symbol(void *lib, const char *name, const char *path) {
    void *p = dlsym(lib, name);
    if (!p) fatal("--device cuda: %s has no symbol %s", path, name);
    return p;
}

const CublasApi *cublas(void) {
    static CublasApi api;
    static int loaded;
    if (loaded) return &api;
    // The soname of the toolkit we compiled against; then the toolkit's folder (rpath-less
    // installs); then any version.
    const char *names[] = { "libcublas.so." KVT_STR(CUBLAS_VER_MAJOR),
#ifdef KVT_CUDA_LIBDIR
                            KVT_CUDA_LIBDIR "/libcublas.so." KVT_STR(CUBLAS_VER_MAJOR),
#endif
                            "libcublas.so" };
    void *lib = NULL;
    const char *path = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) lib = dlopen(path = names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) fatal("--device cuda: cannot load cuBLAS (%s): %s", names[0], dlerror());
    api.create = (decltype(api.create))symbol(lib, "cublasCreate_v2", path);
    api.destroy = (decltype(api.destroy))symbol(lib, "cublasDestroy_v2", path);
    api.set_stream = (decltype(api.set_stream))symbol(lib, "cublasSetStream_v2", path);
    api.gemm_ex = (decltype(api.gemm_ex))symbol(lib, "cublasGemmEx", path);
    api.status_string = (decltype(api.status_string))symbol(lib, "cublasGetStatusString", path);
    loaded = 1;
    return &api;
}
