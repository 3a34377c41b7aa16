/* kiln.h: run saved kiln graphs (.kiln files) from C, without Python.
 *
 * The one public header of libkiln (C11). A .kiln file is written by kiln's Python compiler
 * (`GraphBuilder.compile(...).save(path)`); this library loads it (checksums, manifest, a validated
 * ELF object for this machine, W^X mapping) and runs its graphs on caller-owned arrays.
 * docs/c-api.md documents every function; docs/format.md and docs/object-code.md the file.
 *
 *     kiln_error err;
 *     kiln_module *m;
 *     if (kiln_module_load_file("model.kiln", &m, &err) != KILN_OK) { puts(err.message); ... }
 *     const kiln_graph *g = kiln_module_find_graph(m, "main");
 *     int64_t n = 1024;
 *     kiln_arg args[] = {kiln_arg_f64("a", 2.0),
 *                        kiln_arg_array_const("x", KILN_F32, xs, 1, &n),
 *                        kiln_arg_array("y", KILN_F32, ys, 1, &n)};
 *     if (kiln_graph_run(g, args, 3, &err) != KILN_OK) { puts(err.message); ... }
 *     kiln_module_free(m);
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KILN_API
#elif defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* ---------------------------------------------------------------- versions */

#define KILN_VERSION_MAJOR 0
#define KILN_VERSION_MINOR 1
#define KILN_VERSION_PATCH 0
#define KILN_VERSION_STRING "0.1.0"

/* The newest .kiln file format this library reads (any 1.y file loads: minor versions only add
 * optional fields). */
#define KILN_FORMAT_MAJOR 2
#define KILN_FORMAT_MINOR 0

/* The most dimensions an array argument may have (kiln.types.MAX_NDIM). */
#define KILN_MAX_NDIM 8

/* ---------------------------------------------------------------- errors */

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_INVALID_ARGUMENT = 1, /* API misuse: a NULL pointer, an index out of range */
    KILN_ERR_IO = 2,               /* the file cannot be read */
    KILN_ERR_FORMAT = 3,           /* not a kiln file, damaged (checksums), bad manifest */
    KILN_ERR_VERSION = 4,          /* file format newer than this library */
    KILN_ERR_ELF = 5,              /* the object code was refused by the ELF validator/loader */
    KILN_ERR_NO_TARGET = 6,        /* no code for this machine's architecture or CPU features */
    KILN_ERR_NOT_FOUND = 7,        /* no graph, kernel or field of that name */
    KILN_ERR_MISSING_ARGUMENT = 8, /* a graph argument was not given */
    KILN_ERR_UNKNOWN_ARGUMENT = 9, /* an argument name the graph does not have (or given twice) */
    KILN_ERR_KIND = 10,            /* scalar given for an array or the reverse; wrong scalar type */
    KILN_ERR_DTYPE = 11,           /* array element type differs (kiln never converts arrays) */
    KILN_ERR_RANK = 12,            /* array has the wrong number of dimensions */
    KILN_ERR_SHAPE = 13,           /* fixed size or shape symbol violated */
    KILN_ERR_STRIDES = 14,         /* a written array's strides make elements share memory */
    KILN_ERR_READ_ONLY = 15,       /* read-only array given for an argument the code writes */
    KILN_ERR_ALIGNMENT = 16,       /* array data not aligned to its element size, or NULL */
    KILN_ERR_SCALAR_RANGE = 17,    /* scalar value out of range for the parameter's dtype */
    KILN_ERR_RUNTIME = 18,         /* native code returned a non-zero status */
    KILN_ERR_OUT_OF_MEMORY = 19,   /* malloc or mmap failed */
    KILN_ERR_SYSTEM = 20,          /* mprotect or another system call failed */
    KILN_ERR_NO_DEVICE = 21,       /* CUDA: no libcuda (NVIDIA driver), no GPU, or no code for this GPU */
    KILN_ERR_CUDA = 22,            /* CUDA: a driver call failed (the message names it and its error) */
} kiln_status;

/* A status plus a human-readable message (same wording as the Python runtime's exceptions). */
typedef struct kiln_error {
    kiln_status code;
    char message[512];
} kiln_error;

/* ---------------------------------------------------------------- types */

typedef enum kiln_dtype {
    KILN_BOOL = 0,
    KILN_I8 = 1,
    KILN_I16 = 2,
    KILN_I32 = 3,
    KILN_I64 = 4,
    KILN_U8 = 5,
    KILN_U16 = 6,
    KILN_U32 = 7,
    KILN_U64 = 8,
    KILN_F16 = 9, /* IEEE binary16, passed as its 16-bit pattern */
    KILN_F32 = 10,
    KILN_F64 = 11
} kiln_dtype;

typedef enum kiln_kind { KILN_SCALAR = 0, KILN_ARRAY = 1 } kiln_kind;

/* How the compiled code uses an array argument (scalars report KILN_ACCESS_READ). */
typedef enum kiln_access {
    KILN_ACCESS_NONE = 0,
    KILN_ACCESS_READ = 1,
    KILN_ACCESS_WRITE = 2,
    KILN_ACCESS_READWRITE = 3
} kiln_access;

/* What a graph argument must be. Strings are owned by the module. */
typedef struct kiln_arg_info {
    const char *name;
    kiln_kind kind;
    kiln_dtype dtype;
    int ndim;           /* 0 for scalars */
    kiln_access access;
    int has_shape;      /* 1 when the graph declares a shape for this array */
    /* per dimension (when has_shape): a fixed size (>= 0) or -1; shape_symbol[k] is the symbol
     * name (all dimensions naming one symbol must be equal within a run) or NULL */
    int64_t shape_size[KILN_MAX_NDIM];
    const char *shape_symbol[KILN_MAX_NDIM];
} kiln_arg_info;

/* How a scalar argument's value is given (KILN_ARG_ARRAY marks an array argument). */
typedef enum kiln_value_kind {
    KILN_VALUE_BOOL = 0,
    KILN_VALUE_INT = 1,    /* value.i: for integer and float parameters */
    KILN_VALUE_UINT = 2,   /* value.u: for integer and float parameters (values above INT64_MAX) */
    KILN_VALUE_FLOAT = 3,  /* value.f: for float parameters only (as Python: no implicit truncation) */
    KILN_ARG_ARRAY = 4
} kiln_value_kind;

/* One named argument of a run. Build it with the kiln_arg_* helpers below. */
typedef struct kiln_arg {
    const char *name;
    kiln_value_kind kind;
    union {
        int b;
        int64_t i;
        uint64_t u;
        double f;
    } value;
    /* arrays */
    kiln_dtype dtype;
    int ndim;
    void *data;               /* first element; NULL only for an empty array */
    const int64_t *shape;     /* ndim extents */
    const int64_t *strides;   /* ndim byte strides (any: views, Fortran order, negative), NULL: C order */
    int read_only;            /* 1: the caller forbids writes (refused for written arguments) */
} kiln_arg;

/* ---------------------------------------------------------------- library */

/* The library version, e.g. "0.1.0". */
KILN_API const char *kiln_version(void);

/* The newest file format version this library reads (major, minor); either pointer may be NULL. */
KILN_API void kiln_format_version(int *major, int *minor);

/* Whether a file's header (its first 64 bytes or more) is a .kiln file this library can read.
 * Checks the magic, the format version and the flags only (no checksums). */
KILN_API kiln_status kiln_check_file_header(const void *data, size_t size, kiln_error *err);

/* A short message for a status code ("shape mismatch", ...); never NULL. */
KILN_API const char *kiln_status_name(kiln_status status);

/* ---------------------------------------------------------------- modules */

typedef struct kiln_module kiln_module;
typedef struct kiln_graph kiln_graph;
typedef struct kiln_kernel kiln_kernel;

/* Where a module's code runs. On KILN_DEVICE_CUDA every array argument is a CUDA device pointer. */
typedef enum kiln_device { KILN_DEVICE_CPU = 0, KILN_DEVICE_CUDA = 1 } kiln_device;

/* Options of kiln_module_load_file_ex / kiln_module_load_memory_ex (zero-initialise, then set). */
typedef struct kiln_load_options {
    kiln_device device;     /* KILN_DEVICE_CPU (the default) or KILN_DEVICE_CUDA */
    int cuda_device;        /* CUDA: the device ordinal (0: the first GPU) */
    const char *libcuda;    /* CUDA: the driver library to dlopen; NULL: "libcuda.so.1" */
} kiln_load_options;

/* Read, verify and link a .kiln file. On success *out owns the mapped code; free it with
 * kiln_module_free. On failure *out is NULL and err (if not NULL) says why. */
KILN_API kiln_status kiln_module_load_file(const char *path, kiln_module **out, kiln_error *err);

/* The same from bytes in memory (the bytes are not referenced after the call returns). */
KILN_API kiln_status kiln_module_load_memory(const void *data, size_t size, kiln_module **out,
                                             kiln_error *err);

/* The same with options: device (CPU or CUDA), CUDA device ordinal, driver library. options may
 * be NULL (the CPU). A CUDA load dlopens the driver (no link-time CUDA dependency), picks the
 * cubin for the GPU's sm_XY (else JIT-compiles the PTX), and allocates the fields on the GPU. */
KILN_API kiln_status kiln_module_load_file_ex(const char *path, const kiln_load_options *options,
                                              kiln_module **out, kiln_error *err);
KILN_API kiln_status kiln_module_load_memory_ex(const void *data, size_t size, const kiln_load_options *options,
                                                kiln_module **out, kiln_error *err);

/* Unmap the code and free everything; graphs of the module become invalid. NULL is allowed. */
KILN_API void kiln_module_free(kiln_module *module);

/* KILN_DEVICE_CPU or KILN_DEVICE_CUDA. */
KILN_API kiln_device kiln_module_device(const kiln_module *module);

/* The target chosen: arch ("x86_64", "aarch64"; CUDA: "nvptx64") and cpu (an LLVM cpu name; CUDA:
 * the code the GPU runs, "cubin sm_90" or "ptx sm_80 (driver JIT)"). */
KILN_API const char *kiln_module_arch(const kiln_module *module);
KILN_API const char *kiln_module_cpu(const kiln_module *module);

/* Threads used by parallel loops (libgomp, loaded with dlopen; 1 when it is absent). The default
 * is KILN_NUM_THREADS or the number of CPUs this process may run on. */
KILN_API kiln_status kiln_module_set_num_threads(kiln_module *module, int n, kiln_error *err);
KILN_API int kiln_module_num_threads(const kiln_module *module);

/* Graphs, in manifest (name) order. */
KILN_API size_t kiln_module_graph_count(const kiln_module *module);
KILN_API const kiln_graph *kiln_module_graph(const kiln_module *module, size_t index);
KILN_API const kiln_graph *kiln_module_find_graph(const kiln_module *module, const char *name);

/* Exported kernels (Module.add_kernel), in manifest order; names are the user's names. */
KILN_API size_t kiln_module_kernel_count(const kiln_module *module);
KILN_API const kiln_kernel *kiln_module_kernel(const kiln_module *module, size_t index);
KILN_API const kiln_kernel *kiln_module_find_kernel(const kiln_module *module, const char *name);

/* ---------------------------------------------------------------- fields and random numbers */

/* A module-level field (kl.field). The module owns its storage, filled from the file's initial
 * values at load; graphs and kernels use it in place, so state persists across runs. */
typedef struct kiln_field_info {
    const char *name;
    kiln_dtype dtype;
    int ndim;                       /* shape + element_shape, as Python's module.fields[name] */
    int64_t shape[KILN_MAX_NDIM];   /* (a 0-d scalar field has ndim 0) */
    int element_ndim;               /* trailing dimensions of a vector (1) or matrix (2) element */
    size_t nbytes;                  /* C-contiguous storage */
    void *data;                     /* the storage: host memory, or a CUDA device pointer */
} kiln_field_info;

KILN_API size_t kiln_module_field_count(const kiln_module *module);
KILN_API kiln_status kiln_module_field_info(const kiln_module *module, size_t index, kiln_field_info *out);
/* KILN_ERR_NOT_FOUND when the module has no field of that name */
KILN_API kiln_status kiln_module_find_field(const kiln_module *module, const char *name, kiln_field_info *out,
                                            kiln_error *err);
/* Copy a field's whole content out of / into the module (nbytes must be the field's size). On
 * CUDA these synchronise with the device. Not while a graph of the module runs. */
KILN_API kiln_status kiln_module_read_field(const kiln_module *module, const char *name, void *dst, size_t nbytes,
                                            kiln_error *err);
KILN_API kiln_status kiln_module_write_field(kiln_module *module, const char *name, const void *src,
                                             size_t nbytes, kiln_error *err);

/* The random-number state of kl.random (u32: seed lo, seed hi, run lo, run hi): the file's seed
 * at load, advanced by every launch that draws, exactly as in Python. kiln_module_seed restarts
 * the stream (Python: module.seed(n)). */
KILN_API kiln_status kiln_module_seed(kiln_module *module, uint64_t seed, kiln_error *err);
KILN_API kiln_status kiln_module_rng_state(const kiln_module *module, uint32_t state[4], kiln_error *err);

/* ---------------------------------------------------------------- graphs */

KILN_API const char *kiln_graph_name(const kiln_graph *graph);
/* The arguments a caller passes; hidden parameters (`@name` fields, `@rng`) are filled by the
 * module and never listed or passed. */
KILN_API size_t kiln_graph_arg_count(const kiln_graph *graph);
KILN_API kiln_status kiln_graph_arg_info(const kiln_graph *graph, size_t index, kiln_arg_info *out);

/* Check every argument (names, kinds, dtypes, ranks, shapes and shape symbols, strides,
 * alignment, writability, scalar ranges), then run the graph's whole dispatch list natively,
 * once. Nothing runs, and no array is touched, unless every check passes. Thread-safe: several
 * threads may run graphs of one module at once (on different arrays), except graphs that use
 * fields or random numbers (the module's state). */
KILN_API kiln_status kiln_graph_run(const kiln_graph *graph, const kiln_arg *args, size_t nargs,
                                    kiln_error *err);

/* The same on a CUDA stream (a CUstream; NULL: the legacy default stream). On CUDA a run checks
 * the arguments, launches and returns without waiting for the GPU. On the CPU stream is ignored. */
KILN_API kiln_status kiln_graph_run_on_stream(const kiln_graph *graph, const kiln_arg *args, size_t nargs,
                                              void *stream, kiln_error *err);

/* Wait until the work queued on a CUDA stream (NULL: the default stream) is done; a no-op on CPU. */
KILN_API kiln_status kiln_module_synchronize(const kiln_module *module, void *stream, kiln_error *err);

/* Memory for array arguments on the module's device, so one program serves both devices: CUDA
 * device memory (cuMemAlloc, synchronous copies) for a CUDA module, aligned host memory for a CPU
 * one. kiln_device_free(module, NULL) is allowed. */
KILN_API kiln_status kiln_device_alloc(const kiln_module *module, size_t nbytes, void **out, kiln_error *err);
KILN_API void kiln_device_free(const kiln_module *module, void *ptr);
KILN_API kiln_status kiln_device_upload(const kiln_module *module, void *dst, const void *src, size_t nbytes,
                                        kiln_error *err);
KILN_API kiln_status kiln_device_download(const kiln_module *module, void *dst, const void *src, size_t nbytes,
                                          kiln_error *err);

/* ---------------------------------------------------------------- kernels */

KILN_API const char *kiln_kernel_name(const kiln_kernel *kernel);
KILN_API size_t kiln_kernel_arg_count(const kiln_kernel *kernel);
KILN_API kiln_status kiln_kernel_arg_info(const kiln_kernel *kernel, size_t index, kiln_arg_info *out);

/* Call an exported kernel (Python: module.kernels["k"](...)): arguments whose name is NULL are
 * positional (in parameter order, before any named one), the others named; then the checks and
 * the run of kiln_graph_run. */
KILN_API kiln_status kiln_kernel_call(const kiln_kernel *kernel, const kiln_arg *args, size_t nargs,
                                      kiln_error *err);
KILN_API kiln_status kiln_kernel_call_on_stream(const kiln_kernel *kernel, const kiln_arg *args, size_t nargs,
                                                void *stream, kiln_error *err);

/* Size in bytes of one element of a dtype (1, 2, 4 or 8), and its name ("f32"). */
KILN_API size_t kiln_dtype_size(kiln_dtype dtype);
KILN_API const char *kiln_dtype_name(kiln_dtype dtype);

/* ---------------------------------------------------------------- argument helpers */

/* a zero-initialised kiln_arg in both languages without -Wextra noise */
#ifdef __cplusplus
#define KILN_ZERO_ARG_ {}
#else
#define KILN_ZERO_ARG_ {0}
#endif

static inline kiln_arg kiln_arg_array(const char *name, kiln_dtype dtype, void *data, int ndim,
                                      const int64_t *shape) {
    kiln_arg a = KILN_ZERO_ARG_;
    a.name = name;
    a.kind = KILN_ARG_ARRAY;
    a.dtype = dtype;
    a.data = data;
    a.ndim = ndim;
    a.shape = shape;
    return a;
}

static inline kiln_arg kiln_arg_array_const(const char *name, kiln_dtype dtype, const void *data,
                                            int ndim, const int64_t *shape) {
    kiln_arg a = kiln_arg_array(name, dtype, (void *)data, ndim, shape);
    a.read_only = 1;
    return a;
}

static inline kiln_arg kiln_arg_bool(const char *name, int value) {
    kiln_arg a = KILN_ZERO_ARG_;
    a.name = name;
    a.kind = KILN_VALUE_BOOL;
    a.value.b = value != 0;
    return a;
}

static inline kiln_arg kiln_arg_i64(const char *name, int64_t value) {
    kiln_arg a = KILN_ZERO_ARG_;
    a.name = name;
    a.kind = KILN_VALUE_INT;
    a.value.i = value;
    return a;
}

static inline kiln_arg kiln_arg_u64(const char *name, uint64_t value) {
    kiln_arg a = KILN_ZERO_ARG_;
    a.name = name;
    a.kind = KILN_VALUE_UINT;
    a.value.u = value;
    return a;
}

static inline kiln_arg kiln_arg_f64(const char *name, double value) {
    kiln_arg a = KILN_ZERO_ARG_;
    a.name = name;
    a.kind = KILN_VALUE_FLOAT;
    a.value.f = value;
    return a;
}

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
