/* Internal declarations shared by libkiln's source files (not installed). */
#ifndef KILN_INTERNAL_H
#define KILN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* ---------------------------------------------------------------- errors */

/* Fill err (if not NULL) with code and a printf-style message; returns code. */
kiln_status kiln_fail(kiln_error *err, kiln_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prefix err's message with "prefix: " (used to name the file in every load error). */
void kiln_error_prefix(kiln_error *err, const char *prefix);

/* ---------------------------------------------------------------- sha256 */

typedef struct kiln_sha256 {
    uint32_t state[8];
    uint64_t length;
    uint8_t buffer[64];
    size_t used;
} kiln_sha256;

void kiln_sha256_init(kiln_sha256 *ctx);
void kiln_sha256_update(kiln_sha256 *ctx, const void *data, size_t size);
void kiln_sha256_final(kiln_sha256 *ctx, uint8_t digest[32]);
void kiln_sha256_digest(const void *data, size_t size, uint8_t digest[32]);

/* ---------------------------------------------------------------- dtypes */

/* dtype from its manifest name ("f32"); -1 if unknown */
int kiln_dtype_from_name(const char *name);

struct cJSON;
struct kiln_container;

/* ---------------------------------------------------------------- manifest */

typedef struct kiln_param {
    kiln_arg_info info;
    int64_t offset;         /* byte offset of the first slot in the argument block */
    int element_ndim;       /* optional element_shape: trailing element dims (arrays) or the shape
                             * of the vector argument a scalar belongs to (`g.0`, `g.1`, ...) */
    int element_shape[2];
    /* info.name and info.shape_symbol[] are strdup'ed and freed with the manifest */
} kiln_param;

typedef struct kiln_target {
    char *name, *kind, *arch, *triple, *cpu, *features;
    char **blobs;
    size_t nblobs;
} kiln_target;

/* a graph dispatch's binding of one kernel parameter */
typedef enum kiln_binding_kind { KILN_BIND_ARG = 0, KILN_BIND_CONST = 1, KILN_BIND_FIELD = 2 } kiln_binding_kind;

typedef struct kiln_binding {
    kiln_binding_kind kind;
    size_t param;           /* ARG, FIELD: index of the graph parameter that carries the value */
    uint8_t value[8];       /* CONST: the value in its slot (kiln/abi.py SCALAR_FORMAT) */
} kiln_binding;

typedef struct kiln_dispatch {
    size_t kernel;          /* index into kiln_manifest.kernels */
    kiln_binding *bindings; /* one per kernel parameter */
} kiln_dispatch;

/* a graph, or a kernel (then display_name is set and dispatches is empty) */
typedef struct kiln_graph_desc {
    char *name;             /* graph name, or the kernel's IR name */
    char *display_name;     /* kernels only */
    kiln_param *params;
    size_t nparams;
    size_t block_size;
    /* entries: target name -> symbol */
    char **entry_targets;
    char **entry_symbols;
    size_t nentries;
    kiln_dispatch *dispatches;
    size_t ndispatches;
} kiln_graph_desc;

/* a module-level field (docs/format.md `fields`): storage shape (shape or [1]) + element_shape */
typedef struct kiln_field_desc {
    char *name;
    kiln_dtype dtype;
    int ndim;                       /* of `shape` (0 for a 0-d field) */
    int element_ndim;
    int64_t shape[KILN_MAX_NDIM];   /* shape then element_shape (ndim + element_ndim values) */
    char *init;                     /* blob with the initial content, or NULL (zeros) */
} kiln_field_desc;

/* a launch-count expression (docs/format.md `cuda.launches`) */
typedef enum kiln_expr_op {
    KILN_EXPR_CONST, KILN_EXPR_ARG, KILN_EXPR_SHAPE, KILN_EXPR_INT, KILN_EXPR_ADD, KILN_EXPR_SUB,
    KILN_EXPR_MUL, KILN_EXPR_FLOORDIV, KILN_EXPR_MOD, KILN_EXPR_MIN, KILN_EXPR_MAX
} kiln_expr_op;

typedef struct kiln_expr {
    kiln_expr_op op;
    double value;           /* CONST */
    size_t param;           /* ARG, SHAPE: kernel parameter index */
    int dim;                /* SHAPE */
    struct kiln_expr *a, *b;
} kiln_expr;

typedef struct kiln_cuda_launch {
    char *entry;
    int single;             /* mode "single": one block of one thread */
    int waves;
    int ndims;              /* count dimensions; -1 when there is no count */
    kiln_expr **count;      /* ndims * 3: start, stop, step */
    int block_ptr;          /* the entry takes one more u64 after the slots: the block's device
                               address, 0 when the slots hold the block (CudaLaunch.block_ptr) */
} kiln_cuda_launch;

typedef struct kiln_cuda_section {
    int present;
    int block_size;
    char *ptx;              /* blob names */
    char **cubin_archs, **cubin_blobs;
    size_t ncubins;
    kiln_cuda_launch **launches;   /* per kernel (manifest order) */
    size_t *nlaunches;
} kiln_cuda_section;

typedef struct kiln_manifest {
    int format_major, format_minor;
    kiln_target *targets;
    size_t ntargets;
    kiln_graph_desc *graphs;
    size_t ngraphs;
    kiln_graph_desc *kernels;
    size_t nkernels;
    char **exported_names;          /* exported_kernels: user name -> kernel index */
    size_t *exported_kernels;
    size_t nexported;
    kiln_field_desc *fields;
    size_t nfields;
    uint64_t random_seed;
    kiln_cuda_section cuda;
} kiln_manifest;

/* Parse and validate the manifest JSON (the checks of kiln/artifact/manifest.py). */
kiln_status kiln_manifest_parse(const struct cJSON *doc, const struct kiln_container *container,
                                kiln_manifest *out, kiln_error *err);
void kiln_manifest_free(kiln_manifest *m);
/* the field named `name`, or NULL */
const kiln_field_desc *kiln_manifest_field(const kiln_manifest *m, const char *name);

/* The top-level "cuda" section, validated as kiln/artifact/manifest.py does (manifest_cuda.c). */
kiln_status kiln_manifest_parse_cuda(const struct cJSON *doc, kiln_manifest *m, kiln_error *err);
void kiln_cuda_section_free(kiln_cuda_section *c);

/* IEEE binary16 bits of a double, rounded to nearest even (as Python's struct 'e') */
uint16_t kiln_f64_to_f16(double d);

/* ---------------------------------------------------------------- container */

typedef struct kiln_blob {
    char *name;
    const uint8_t *data;
    size_t size;
} kiln_blob;

typedef struct kiln_container {
    const char *manifest_json;  /* points into the file bytes */
    size_t manifest_size;
    struct cJSON *doc;          /* the parsed manifest (owned) */
    kiln_blob *blobs;
    size_t nblobs;
} kiln_container;

/* Verify header, manifest checksum and blob table (kiln/artifact/container.py). Blob data
 * points into `data`. */
kiln_status kiln_container_unpack(const uint8_t *data, size_t size, kiln_container *out,
                                  kiln_error *err);
void kiln_container_free(kiln_container *c);

/* ---------------------------------------------------------------- host CPU */

/* "x86_64" or "aarch64" (the machine this library was compiled for). */
const char *kiln_host_arch(void);

/* Writes into `missing` (comma-separated) the '+' features of an LLVM feature string that this
 * CPU lacks, per /proc/cpuinfo; empty when all are present or nothing can be checked. */
void kiln_missing_features(const char *features, char *missing, size_t missing_size);

/* ---------------------------------------------------------------- ELF loader */

typedef struct kiln_loaded_object {
    uint8_t *base;
    size_t size;
    uintptr_t code_lo, code_hi; /* executable part */
    uintptr_t data_lo, data_hi; /* writable part */
    char **names;               /* exported symbols */
    uintptr_t *addresses;
    size_t nsymbols;
} kiln_loaded_object;

/* Validate, map, relocate and protect an ELF64 relocatable object for this machine. */
kiln_status kiln_elf_load(const uint8_t *blob, size_t size, kiln_loaded_object *out,
                          kiln_error *err);
void kiln_elf_unload(kiln_loaded_object *obj);
/* Address of a function symbol inside the code, or 0 (err filled). */
uintptr_t kiln_elf_code_address(const kiln_loaded_object *obj, const char *name, kiln_error *err);
/* Address of a writable global of `size` bytes inside the writable data, or 0 (err filled). */
uintptr_t kiln_elf_data_address(const kiln_loaded_object *obj, const char *name, size_t size,
                                kiln_error *err);

/* Is `name` an allowed external symbol? (kiln/runtime/elf.py ALLOWED_EXTERNAL_SYMBOLS) */
int kiln_external_allowed(const char *name);
/* Address of an allowed external in libm/libc/libgcc_s (cached), or NULL. */
void *kiln_resolve_external(const char *name);

/* ---------------------------------------------------------------- threads */

/* libgomp's GOMP_parallel, omp_get_thread_num, omp_get_num_threads, or 0 when absent. */
int kiln_gomp_functions(void *out[3]);
/* KILN_NUM_THREADS, else the CPUs this process may run on. */
int kiln_default_threads(void);

#endif /* KILN_INTERNAL_H */
