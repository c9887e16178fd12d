// cublas_loader.cu: cuBLAS, opened on first use. libcublasLt is over 500 MB; linking it into
// `run` made every start, CPU runs included, pay ~0.5 s of page faults and relocations. So
// `run` links only the small CUDA runtime, and the five cuBLAS entry points the forward pass
// uses are looked up here with dlopen/dlsym when a GPU model is first built.
//
// Where libcublas is looked for, first hit wins (a machine's toolkit need not be where the
// binary was built, nor its folder on the loader's path):
//   $KVT_CUBLAS                 an explicit file (a pip wheel's nvidia/cu13/lib/libcublas.so.13, say)
//   libcublas.so.N              the soname alone: LD_LIBRARY_PATH, the binary's RUNPATH, ld.so.cache
//   KVT_CUDA_LIBDIR             the lib64 of the toolkit we compiled against
//   the CUDA runtime's folder   cuBLAS ships beside the libcudart this process loaded
//   $CUDA_HOME, $CUDA_PATH      their lib64
//   /usr/local/cuda             lib64, then targets/x86_64-linux/lib (the real folder of CUDA images)
//   libcublas.so                any version (the development symlink)
// N is the cuBLAS major version we compiled against (13 for CUDA 13.x).
#include "cuda_common.h"
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KVT_STR2(x) #x
#define KVT_STR(x) KVT_STR2(x)
#define CUBLAS_SONAME "libcublas.so." KVT_STR(CUBLAS_VER_MAJOR)

static void *symbol(void *lib, const char *name, const char *path) {
    void *p = dlsym(lib, name);
    if (!p) fatal("--device cuda: %s has no symbol %s", path, name);
    return p;
}

// dl_iterate_phdr callback: the folder of the loaded libcudart, into data (PATH_MAX bytes).
static int cudart_dir(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    const char *name = info->dlpi_name, *slash = name ? strrchr(name, '/') : NULL;
    if (!slash || strncmp(slash + 1, "libcudart.so", 12) != 0) return 0;
    snprintf((char *)data, 4096, "%.*s", (int)(slash - name), name);
    return 1;
}

// Try one candidate; on failure keep the most telling error: a file that exists but does not
// load (a missing libcublasLt, a wrong architecture) beats "no such file".
static void *try_open(const char *path, char *err, size_t n, int *err_is_real) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib) return lib;
    const char *e = dlerror();
    int real = strchr(path, '/') && access(path, F_OK) == 0;
    if (!err[0] || (real && !*err_is_real)) {
        snprintf(err, n, "%s", e ? e : path);
        *err_is_real = real;
    }
    return NULL;
}

const CublasApi *cublas(void) {
    static CublasApi api;
    static int loaded;
    if (loaded) return &api;
    char cand[8][4096], err[1024] = "";
    int nc = 0, err_is_real = 0;
    const char *env = getenv("KVT_CUBLAS");
    if (env && *env) snprintf(cand[nc++], sizeof cand[0], "%s", env);
    snprintf(cand[nc++], sizeof cand[0], "%s", CUBLAS_SONAME);
#ifdef KVT_CUDA_LIBDIR
    snprintf(cand[nc++], sizeof cand[0], "%s/%s", KVT_CUDA_LIBDIR, CUBLAS_SONAME);
#endif
    char dir[4096] = "";
    if (dl_iterate_phdr(cudart_dir, dir) && dir[0]) snprintf(cand[nc++], sizeof cand[0], "%s/%s", dir, CUBLAS_SONAME);
    const char *homes[] = { getenv("CUDA_HOME"), getenv("CUDA_PATH") };
    for (int i = 0; i < 2; i++)
        if (homes[i] && *homes[i]) snprintf(cand[nc++], sizeof cand[0], "%s/lib64/%s", homes[i], CUBLAS_SONAME);
    snprintf(cand[nc++], sizeof cand[0], "/usr/local/cuda/lib64/%s", CUBLAS_SONAME);
    snprintf(cand[nc++], sizeof cand[0], "/usr/local/cuda/targets/x86_64-linux/lib/%s", CUBLAS_SONAME);
    void *lib = NULL;
    const char *path = NULL;
    for (int i = 0; i < nc && !lib; i++) lib = try_open(path = cand[i], err, sizeof err, &err_is_real);
    if (!lib) lib = try_open(path = "libcublas.so", err, sizeof err, &err_is_real);
    if (!lib)
        fatal("--device cuda: cannot load cuBLAS (%s; also looked beside libcudart, in $CUDA_HOME and /usr/local/cuda; "
              "set KVT_CUBLAS=/path/to/%s): %s", CUBLAS_SONAME, CUBLAS_SONAME, err);
    api.create = (decltype(api.create))symbol(lib, "cublasCreate_v2", path);
    api.destroy = (decltype(api.destroy))symbol(lib, "cublasDestroy_v2", path);
    api.set_stream = (decltype(api.set_stream))symbol(lib, "cublasSetStream_v2", path);
    api.gemm_ex = (decltype(api.gemm_ex))symbol(lib, "cublasGemmEx", path);
    api.status_string = (decltype(api.status_string))symbol(lib, "cublasGetStatusString", path);
    loaded = 1;
    return &api;
}
