/* A stand-in for libcuda.so.1 that records what libkiln asks of it (tests only; the C twin of
 * tests/fake_cuda_driver.py, with the same device: compute capability 9.0 unless configured, 4
 * SMs, occupancy 2). Device memory is host memory and nothing executes: the log of launches
 * (entry, grid, block, the argument slots in hex) lets tests check libkiln's CUDA plumbing on a
 * machine without a GPU. kiln_fake_cuda_configure sets the compute capability and the log file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static int cc_major = 9, cc_minor = 0, fail_init = 0;
static FILE *log_file;
static const char *image;       /* the last loaded image (kept: PTX globals are read from it) */

#define API __attribute__((visibility("default")))

API void kiln_fake_cuda_configure(int major, int minor, int init_error, const char *log_path) {
    cc_major = major;
    cc_minor = minor;
    fail_init = init_error;
    if (log_file) fclose(log_file);
    log_file = log_path ? fopen(log_path, "w") : NULL;
}

static void logf_(const char *line) {
    if (log_file) {
        fputs(line, log_file);
        fflush(log_file);
    }
}

API CUresult cuInit(unsigned flags) { (void)flags; return fail_init; }
API CUresult cuDeviceGetCount(int *n) { *n = 1; return 0; }
API CUresult cuDeviceGet(int *dev, int ordinal) { *dev = ordinal; return ordinal == 0 ? 0 : 101; }

API CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    (void)dev;
    *v = attr == 75 ? cc_major : attr == 76 ? cc_minor : attr == 16 ? 4 : 0;
    return 0;
}

API CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { (void)dev; *ctx = (void *)0x11; return 0; }
API CUresult cuDevicePrimaryCtxRelease_v2(int dev) { (void)dev; return 0; }
API CUresult cuCtxSetCurrent(void *ctx) { (void)ctx; return 0; }

API CUresult cuModuleLoadDataEx(void **mod, const void *img, unsigned n, int *opts, void **vals) {
    (void)n; (void)opts; (void)vals;
    size_t len = strlen(img);     /* PTX text is NUL-terminated; a cubin is logged by its first bytes */
    free((void *)image);
    image = strdup(img);
    char line[128];
    snprintf(line, sizeof line, "load %s %zu\n", memcmp(img, "\x7f" "ELF", 4) == 0 ? "cubin" : "ptx", len);
    logf_(line);
    *mod = (void *)0x99;
    return 0;
}

API CUresult cuModuleUnload(void *mod) { (void)mod; return 0; }

API CUresult cuModuleGetFunction(void **f, void *mod, const char *name) {
    (void)mod;
    if (!strstr(image, name)) return 500;        /* CUDA_ERROR_NOT_FOUND */
    *f = strdup(name);                           /* the function "is" its name (leaked: a test) */
    return 0;
}

API CUresult cuModuleGetGlobal_v2(CUdeviceptr *p, size_t *size, void *mod, const char *name) {
    (void)mod; (void)p; (void)size; (void)name;
    return 500;                                  /* PTX images are checked by libkiln on the host */
}

API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, void *f, int block, size_t smem) {
    (void)f; (void)block; (void)smem;
    *n = 2;
    return 0;
}

API CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    void *m = calloc(1, n + 16);
    *p = (CUdeviceptr)(uintptr_t)m;
    return m ? 0 : 2;
}

API CUresult cuMemFree_v2(CUdeviceptr p) { free((void *)(uintptr_t)p); return 0; }

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    memcpy((void *)(uintptr_t)dst, src, n);
    return 0;
}

API CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return 0;
}

/* the number of 8-byte slots of an entry's parameters, from the PTX text: ".param .u64 NAME_param_K" */
static int slots_of(const char *entry) {
    char key[512];
    int n = 0;
    for (;;) {
        snprintf(key, sizeof key, "%s_param_%d", entry, n);
        if (!strstr(image, key)) return n;
        n++;
    }
}

API CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned smem, void *stream, void **params, void **extra) {
    (void)gy; (void)gz; (void)by; (void)bz; (void)smem; (void)extra;
    char line[4096];
    int used = snprintf(line, sizeof line, "launch %s %u %u %p", (const char *)f, gx, bx, stream);
    int n = slots_of(f);
    for (int k = 0; k < n && params && used < (int)sizeof line - 20; k++) {
        uint64_t v;
        memcpy(&v, params[k], 8);
        used += snprintf(line + used, sizeof line - (size_t)used, " %016llx", (unsigned long long)v);
    }
    snprintf(line + used, sizeof line - (size_t)used, "\n");
    logf_(line);
    return 0;
}

API CUresult cuStreamSynchronize(void *stream) { (void)stream; logf_("sync\n"); return 0; }

API CUresult cuGetErrorName(CUresult r, const char **name) {
    *name = r == 100 ? "CUDA_ERROR_NO_DEVICE" : r == 500 ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_UNKNOWN";
    return 0;
}
