/* The CUDA driver API as libkiln uses it: the few types and constants of cuda.h it needs (no
 * CUDA headers or libraries at build time: the driver is dlopen'ed), and the per-module state
 * shared by cuda.c (driver, image, memory) and cuda_launch.c (launch plans and runs). */
#ifndef KILN_CUDA_DRIVER_H
#define KILN_CUDA_DRIVER_H

#include "module.h"

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

enum {
    KILN_CUDA_SUCCESS = 0,
    KILN_CUDA_ERROR_NO_DEVICE = 100,
    KILN_CU_ATTR_MULTIPROCESSOR_COUNT = 16,
    KILN_CU_ATTR_CC_MAJOR = 75,
    KILN_CU_ATTR_CC_MINOR = 76,
    KILN_CU_JIT_ERROR_LOG_BUFFER = 5,
    KILN_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
};

/* the driver entry points, resolved with dlsym (the _v2 names are those cuda.h maps to) */
typedef struct kiln_cuda_driver {
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*ModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*ModuleGetGlobal)(CUdeviceptr *, size_t *, CUmodule, const char *);
    CUresult (*OccupancyMaxActiveBlocksPerMultiprocessor)(int *, CUfunction, int, size_t);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream, void **, void **);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*GetErrorName)(CUresult, const char **);
} kiln_cuda_driver;

/* a PTX entry of the loaded image, with its largest useful grid (one wave of resident blocks) */
typedef struct kiln_cuda_function {
    const char *entry;      /* owned by the manifest */
    CUfunction fn;
    int64_t max_grid;
} kiln_cuda_function;

struct kiln_cuda_module {
    void *lib;
    kiln_cuda_driver drv;
    CUdevice dev;
    CUcontext ctx;
    int have_ctx;
    CUmodule mod;
    int sm_count;
    kiln_cuda_function *functions;
    size_t nfunctions;
    CUdeviceptr *allocations;   /* freed with the module */
    size_t nallocations, cap_allocations;
};

/* "what failed: CUDA_ERROR_..." as KILN_ERR_CUDA, or KILN_OK */
kiln_status kiln_cuda_check(const struct kiln_cuda_module *c, CUresult r, const char *what, kiln_error *err);

#endif /* KILN_CUDA_DRIVER_H */
