/* The cuda target on the GPU (what kiln/runtime/cuda.py, cuda_driver.py and cuda_fields.py do in
 * Python): dlopen the driver, pick the image for the device (kiln/runtime/cuda_driver.py
 * pick_image: an exact cubin, else the highest lower minor of the same major, else the PTX,
 * JIT-compiled by the driver), check the ABI descriptors (the PTX's at load, the loaded cubin's on
 * the device), and device memory for fields and the random-number state. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"

#define DEFAULT_LIBCUDA "libcuda.so.1"

kiln_status kiln_cuda_check(const struct kiln_cuda_module *c, CUresult r, const char *what, kiln_error *err) {
    if (r == KILN_CUDA_SUCCESS) return KILN_OK;
    const char *name = NULL;
    if (!c->drv.GetErrorName || c->drv.GetErrorName(r, &name) != KILN_CUDA_SUCCESS || !name) name = NULL;
    if (name) return kiln_fail(err, KILN_ERR_CUDA, "%s failed: %s", what, name);
    return kiln_fail(err, KILN_ERR_CUDA, "%s failed: CUresult %d", what, r);
}

static kiln_status open_driver(struct kiln_cuda_module *c, const char *path, kiln_error *err) {
    c->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!c->lib) {
        const char *why = dlerror();
        return kiln_fail(err, KILN_ERR_NO_DEVICE, "no CUDA driver on this machine (%s could not be loaded: %s)", path,
                         why ? why : "not found");
    }
    static const char *const names[] = {
        "cuInit", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetAttribute", "cuDevicePrimaryCtxRetain",
        "cuDevicePrimaryCtxRelease_v2", "cuCtxSetCurrent", "cuModuleLoadDataEx", "cuModuleUnload",
        "cuModuleGetFunction", "cuModuleGetGlobal_v2", "cuOccupancyMaxActiveBlocksPerMultiprocessor",
        "cuMemAlloc_v2", "cuMemFree_v2", "cuMemcpyHtoD_v2", "cuMemcpyDtoH_v2", "cuLaunchKernel",
        "cuStreamSynchronize", "cuGetErrorName"};
    void **slots = (void **)&c->drv;    /* the struct is these pointers, in this order */
    _Static_assert(sizeof(kiln_cuda_driver) == sizeof names / sizeof names[0] * sizeof(void *), "driver table");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *f = dlsym(c->lib, names[i]);
        if (!f)
            return kiln_fail(err, KILN_ERR_NO_DEVICE, "the CUDA driver %s has no %s (an NVIDIA driver too old for "
                             "kiln)", path, names[i]);
        memcpy(&slots[i], &f, sizeof f);
    }
    return KILN_OK;
}

static kiln_status open_device(struct kiln_cuda_module *c, int ordinal, kiln_error *err) {
    CUresult r = c->drv.Init(0);
    if (r == KILN_CUDA_ERROR_NO_DEVICE)
        return kiln_fail(err, KILN_ERR_NO_DEVICE, "no CUDA GPU is visible on this machine (cuInit: "
                         "CUDA_ERROR_NO_DEVICE)");
    if (r != KILN_CUDA_SUCCESS) {
        kiln_cuda_check(c, r, "cuInit", err);
        return kiln_fail(err, KILN_ERR_NO_DEVICE, "cannot initialise the CUDA driver: %s (no GPU, or no/old NVIDIA "
                         "driver)", err ? err->message : "cuInit failed");
    }
    int n = 0;
    kiln_status st = kiln_cuda_check(c, c->drv.DeviceGetCount(&n), "cuDeviceGetCount", err);
    if (st != KILN_OK) return st;
    if (ordinal < 0 || ordinal >= n)
        return kiln_fail(err, KILN_ERR_NO_DEVICE, "CUDA device %d does not exist (%d visible)", ordinal, n);
    st = kiln_cuda_check(c, c->drv.DeviceGet(&c->dev, ordinal), "cuDeviceGet", err);
    if (st == KILN_OK) st = kiln_cuda_check(c, c->drv.DevicePrimaryCtxRetain(&c->ctx, c->dev), "cuDevicePrimaryCtxRetain", err);
    if (st != KILN_OK) return st;
    c->have_ctx = 1;
    st = kiln_cuda_check(c, c->drv.CtxSetCurrent(c->ctx), "cuCtxSetCurrent", err);
    if (st == KILN_OK)
        st = kiln_cuda_check(c, c->drv.DeviceGetAttribute(&c->sm_count, KILN_CU_ATTR_MULTIPROCESSOR_COUNT, c->dev),
                             "cuDeviceGetAttribute", err);
    return st;
}

/* sm_XY[a|f] -> (X, Y); 0 when it is not an arch name */
static int parse_arch(const char *arch, int *major, int *minor) {
    if (strncmp(arch, "sm_", 3) != 0) return 0;
    char digits[16];
    size_t n = 0;
    for (const char *p = arch + 3; *p && n + 1 < sizeof digits; p++) digits[n++] = *p;
    while (n && (digits[n - 1] == 'a' || digits[n - 1] == 'f')) n--;
    if (n < 2) return 0;
    for (size_t i = 0; i < n; i++)
        if (digits[i] < '0' || digits[i] > '9') return 0;
    *minor = digits[n - 1] - '0';
    digits[n - 1] = 0;
    *major = atoi(digits);
    return 1;
}

/* the blob to load for a GPU of compute capability (cc_major, cc_minor), and what it is */
static kiln_status pick_image(const kiln_module *m, int cc_major, int cc_minor, const char **blob, kiln_error *err) {
    const kiln_cuda_section *s = &m->manifest.cuda;
    char want[16];
    snprintf(want, sizeof want, "sm_%d%d", cc_major, cc_minor);
    int best = -1, best_minor = -1;
    for (size_t i = 0; i < s->ncubins; i++) {
        int maj, mnr;
        if (strcmp(s->cubin_archs[i], want) == 0) {
            best = (int)i;
            break;
        }
        if (parse_arch(s->cubin_archs[i], &maj, &mnr) && maj == cc_major && mnr <= cc_minor && mnr > best_minor) {
            best = (int)i;
            best_minor = mnr;
        }
    }
    struct kiln_module *mm = (struct kiln_module *)m;
    if (best >= 0) {
        *blob = s->cubin_blobs[best];
        snprintf(mm->cuda_image, sizeof mm->cuda_image, "cubin %s", s->cubin_archs[best]);
        return KILN_OK;
    }
    int pmaj, pmin;
    if (parse_arch(m->target->cpu, &pmaj, &pmin) && (pmaj < cc_major || (pmaj == cc_major && pmin <= cc_minor))) {
        *blob = s->ptx;
        snprintf(mm->cuda_image, sizeof mm->cuda_image, "ptx %s (driver JIT)", m->target->cpu);
        return KILN_OK;
    }
    char have[300] = "";
    for (size_t i = 0; i < s->ncubins; i++) {
        size_t used = strlen(have);
        snprintf(have + used, sizeof have - used, "%s%s", used ? ", " : "", s->cubin_archs[i]);
    }
    size_t used = strlen(have);
    snprintf(have + used, sizeof have - used, "%sPTX for %s+", used ? ", " : "", m->target->cpu);
    return kiln_fail(err, KILN_ERR_NO_DEVICE, "no code in this file runs on this GPU (%s); the file holds %s. "
                     "Recompile with cuda_archs=['%s', ...]", want, have, want);
}

/* the 32 bytes of `<symbol>_abi` as initialised in PTX text (kiln/runtime/abi_digest.py
 * ptx_descriptor); 0 when absent */
static int ptx_descriptor(const uint8_t *ptx, size_t size, const char *symbol, uint8_t out[32]) {
    char pattern[600];
    snprintf(pattern, sizeof pattern, ".b8 %s_abi[32] = {", symbol);
    size_t plen = strlen(pattern);
    for (size_t i = 0; i + plen <= size; i++) {
        if (memcmp(ptx + i, pattern, plen) != 0) continue;
        size_t j = i + plen, n = 0;
        unsigned v = 0;
        int digits = 0;
        memset(out, 0, 32);
        for (; j < size && ptx[j] != '}'; j++) {
            uint8_t ch = ptx[j];
            if (ch >= '0' && ch <= '9') {
                v = v * 10 + (ch - '0');
                digits = 1;
                if (v > 255) return 0;
            } else if (ch == ',') {
                if (n >= 32) return 0;
                out[n++] = (uint8_t)v;
                v = 0;
                digits = 0;
            } else if (ch != ' ') {
                break;      /* not the regex's [0-9, ]+: try the next occurrence */
            }
        }
        if (j >= size || ptx[j] != '}') continue;
        if (digits) {
            if (n >= 32) return 0;
            out[n++] = (uint8_t)v;
        }
        return 1;
    }
    return 0;
}

static const char *cuda_entry(const kiln_module *m, const kiln_graph_desc *k) {
    for (size_t i = 0; i < k->nentries; i++)
        if (strcmp(k->entry_targets[i], m->target->name) == 0) return k->entry_symbols[i];
    return NULL;
}

static const kiln_blob *find_blob(const kiln_container *c, const char *name) {
    for (size_t i = 0; i < c->nblobs; i++)
        if (strcmp(c->blobs[i].name, name) == 0) return &c->blobs[i];
    return NULL;
}

/* every kernel's descriptor in the PTX (cubin == 0, before any driver call) or in the loaded cubin */
static kiln_status check_abi(kiln_module *m, const kiln_container *c, int cubin, kiln_error *err) {
    struct kiln_cuda_module *cu = m->cuda;
    const kiln_blob *ptx = find_blob(c, m->manifest.cuda.ptx);
    for (size_t i = 0; i < m->manifest.nkernels; i++) {
        const kiln_graph_desc *k = &m->manifest.kernels[i];
        const char *sym = cuda_entry(m, k);
        uint8_t held[32];
        int have = 0;
        if (!cubin) {
            have = ptx && ptx_descriptor(ptx->data, ptx->size, sym, held);
        } else {
            char glob[600];
            snprintf(glob, sizeof glob, "%s_abi", sym);
            CUdeviceptr p = 0;
            size_t size = 0;
            have = cu->drv.ModuleGetGlobal(&p, &size, cu->mod, glob) == KILN_CUDA_SUCCESS && size == 32 &&
                   cu->drv.MemcpyDtoH(held, p, 32) == KILN_CUDA_SUCCESS;
        }
        kiln_status st = kiln_abi_compare(have ? held : NULL, "kernel", k, k->name, sym, cubin ? m->cuda_image : "PTX",
                                          err);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

static kiln_status load_image(kiln_module *m, const kiln_container *c, const char *blob_name, kiln_error *err) {
    struct kiln_cuda_module *cu = m->cuda;
    const kiln_blob *blob = find_blob(c, blob_name);
    int is_ptx = strcmp(blob_name, m->manifest.cuda.ptx) == 0;
    uint8_t *image = malloc(blob->size + 1);
    if (!image) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(image, blob->data, blob->size);
    image[blob->size] = 0;                   /* PTX text is loaded NUL-terminated */
    char log[2048] = "";
    int options[2] = {KILN_CU_JIT_ERROR_LOG_BUFFER, KILN_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *values[2] = {log, (void *)(uintptr_t)sizeof log};
    CUresult r = cu->drv.ModuleLoadDataEx(&cu->mod, image, 2, options, values);
    free(image);
    if (r != KILN_CUDA_SUCCESS) {
        char what[200];
        snprintf(what, sizeof what, "loading %s (cuModuleLoadDataEx)", m->cuda_image);
        kiln_status st = kiln_cuda_check(cu, r, what, err);
        if (err && log[0]) {
            size_t used = strlen(err->message);
            snprintf(err->message + used, sizeof err->message - used, ": %s", log);
        }
        return st;
    }
    return is_ptx ? KILN_OK : check_abi(m, c, 1, err);   /* the PTX text was checked before */
}

/* the functions of every launch, each with one wave of resident blocks as its largest grid */
static kiln_status get_functions(kiln_module *m, kiln_error *err) {
    struct kiln_cuda_module *cu = m->cuda;
    const kiln_cuda_section *s = &m->manifest.cuda;
    size_t total = 0;
    for (size_t k = 0; k < m->manifest.nkernels; k++) total += s->nlaunches[k];
    cu->functions = calloc(total + 1, sizeof *cu->functions);
    if (!cu->functions) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t k = 0; k < m->manifest.nkernels; k++) {
        for (size_t j = 0; j < s->nlaunches[k]; j++) {
            const char *entry = s->launches[k][j].entry;
            int seen = 0;
            for (size_t f = 0; f < cu->nfunctions && !seen; f++) seen = strcmp(cu->functions[f].entry, entry) == 0;
            if (seen) continue;
            kiln_cuda_function *f = &cu->functions[cu->nfunctions];
            char what[600];
            snprintf(what, sizeof what, "cuModuleGetFunction(%s)", entry);
            kiln_status st = kiln_cuda_check(cu, cu->drv.ModuleGetFunction(&f->fn, cu->mod, entry), what, err);
            if (st != KILN_OK) return st;
            f->entry = entry;
            int occ = 0;
            if (cu->drv.OccupancyMaxActiveBlocksPerMultiprocessor(&occ, f->fn, s->block_size, 0) != KILN_CUDA_SUCCESS)
                occ = 2048 / s->block_size;
            f->max_grid = (int64_t)(cu->sm_count > 0 ? cu->sm_count : 1) * (occ > 1 ? occ : 1);
            cu->nfunctions++;
        }
    }
    return KILN_OK;
}

kiln_status kiln_cuda_open(kiln_module *m, const kiln_container *c, const kiln_load_options *o, kiln_error *err) {
    m->cuda = calloc(1, sizeof *m->cuda);
    if (!m->cuda) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    kiln_status st = check_abi(m, c, 0, err);          /* the PTX, before any driver call */
    if (st == KILN_OK) st = open_driver(m->cuda, o->libcuda ? o->libcuda : DEFAULT_LIBCUDA, err);
    if (st == KILN_OK) st = open_device(m->cuda, o->cuda_device, err);
    int major = 0, minor = 0;
    if (st == KILN_OK)
        st = kiln_cuda_check(m->cuda, m->cuda->drv.DeviceGetAttribute(&major, KILN_CU_ATTR_CC_MAJOR, m->cuda->dev),
                             "cuDeviceGetAttribute", err);
    if (st == KILN_OK)
        st = kiln_cuda_check(m->cuda, m->cuda->drv.DeviceGetAttribute(&minor, KILN_CU_ATTR_CC_MINOR, m->cuda->dev),
                             "cuDeviceGetAttribute", err);
    const char *blob = NULL;
    if (st == KILN_OK) st = pick_image(m, major, minor, &blob, err);
    if (st == KILN_OK) st = load_image(m, c, blob, err);
    if (st == KILN_OK) st = get_functions(m, err);
    return st;
}

void kiln_cuda_close(kiln_module *m) {
    struct kiln_cuda_module *cu = m->cuda;
    if (!cu) return;
    if (cu->have_ctx) {
        cu->drv.CtxSetCurrent(cu->ctx);
        for (size_t i = 0; i < cu->nallocations; i++) cu->drv.MemFree(cu->allocations[i]);
        if (cu->mod) cu->drv.ModuleUnload(cu->mod);
        cu->drv.DevicePrimaryCtxRelease(cu->dev);
    }
    free(cu->allocations);
    free(cu->functions);
    if (cu->lib) dlclose(cu->lib);
    free(cu);
    m->cuda = NULL;
}

kiln_status kiln_cuda_alloc(kiln_module *m, size_t nbytes, void **out, kiln_error *err) {
    struct kiln_cuda_module *cu = m->cuda;
    if (cu->nallocations == cu->cap_allocations) {
        size_t cap = cu->cap_allocations ? 2 * cu->cap_allocations : 8;
        CUdeviceptr *a = realloc(cu->allocations, cap * sizeof *a);
        if (!a) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        cu->allocations = a;
        cu->cap_allocations = cap;
    }
    CUdeviceptr p = 0;
    char what[64];
    snprintf(what, sizeof what, "cuMemAlloc(%zu)", nbytes);
    kiln_status st = kiln_cuda_check(cu, cu->drv.MemAlloc(&p, nbytes), what, err);
    if (st != KILN_OK) return st;
    cu->allocations[cu->nallocations++] = p;
    *out = (void *)(uintptr_t)p;
    return KILN_OK;
}

kiln_status kiln_cuda_copy(const kiln_module *m, void *dst, const void *src, size_t nbytes, int to_device,
                           kiln_error *err) {
    const struct kiln_cuda_module *cu = m->cuda;
    kiln_status st = kiln_cuda_check(cu, cu->drv.CtxSetCurrent(cu->ctx), "cuCtxSetCurrent", err);
    if (st != KILN_OK) return st;
    if (to_device) return kiln_cuda_check(cu, cu->drv.MemcpyHtoD((CUdeviceptr)(uintptr_t)dst, src, nbytes),
                                          "cuMemcpyHtoD", err);
    return kiln_cuda_check(cu, cu->drv.MemcpyDtoH(dst, (CUdeviceptr)(uintptr_t)src, nbytes), "cuMemcpyDtoH", err);
}

kiln_status kiln_cuda_synchronize(const kiln_module *m, void *stream, kiln_error *err) {
    const struct kiln_cuda_module *cu = m->cuda;
    kiln_status st = kiln_cuda_check(cu, cu->drv.CtxSetCurrent(cu->ctx), "cuCtxSetCurrent", err);
    return st == KILN_OK ? kiln_cuda_check(cu, cu->drv.StreamSynchronize(stream), "cuStreamSynchronize", err) : st;
}

kiln_status kiln_module_synchronize(const kiln_module *m, void *stream, kiln_error *err) {
    if (!m) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "module is NULL");
    return m->device == KILN_DEVICE_CUDA ? kiln_cuda_synchronize(m, stream, err) : KILN_OK;
}

/* ---------------------------------------------------------------- memory for arguments */

kiln_status kiln_device_alloc(const kiln_module *m, size_t nbytes, void **out, kiln_error *err) {
    if (!m || !out) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "module or out is NULL");
    *out = NULL;
    if (m->device == KILN_DEVICE_CPU) {
        size_t size = (nbytes + 63) / 64 * 64;
        *out = aligned_alloc(64, size ? size : 64);
        return *out ? KILN_OK : kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes)", nbytes);
    }
    const struct kiln_cuda_module *cu = m->cuda;
    CUdeviceptr p = 0;
    char what[64];
    snprintf(what, sizeof what, "cuMemAlloc(%zu)", nbytes);
    kiln_status st = kiln_cuda_check(cu, cu->drv.CtxSetCurrent(cu->ctx), "cuCtxSetCurrent", err);
    if (st == KILN_OK) st = kiln_cuda_check(cu, cu->drv.MemAlloc(&p, nbytes ? nbytes : 1), what, err);
    if (st == KILN_OK) *out = (void *)(uintptr_t)p;
    return st;
}

void kiln_device_free(const kiln_module *m, void *ptr) {
    if (!m || !ptr) return;
    if (m->device == KILN_DEVICE_CPU) {
        free(ptr);
        return;
    }
    m->cuda->drv.CtxSetCurrent(m->cuda->ctx);
    m->cuda->drv.MemFree((CUdeviceptr)(uintptr_t)ptr);
}

static kiln_status copy(const kiln_module *m, void *dst, const void *src, size_t nbytes, int to_device,
                        kiln_error *err) {
    if (!m || ((!dst || !src) && nbytes)) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "module or pointer is NULL");
    if (!nbytes) return KILN_OK;
    if (m->device == KILN_DEVICE_CPU) {
        memcpy(dst, src, nbytes);
        return KILN_OK;
    }
    return kiln_cuda_copy(m, dst, src, nbytes, to_device, err);
}

kiln_status kiln_device_upload(const kiln_module *m, void *dst, const void *src, size_t nbytes, kiln_error *err) {
    return copy(m, dst, src, nbytes, 1, err);
}

kiln_status kiln_device_download(const kiln_module *m, void *dst, const void *src, size_t nbytes, kiln_error *err) {
    return copy(m, dst, src, nbytes, 0, err);
}
