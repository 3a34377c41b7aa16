/* The module, graph and kernel structures (shared by module.c, run.c, fields.c and cuda.c). */
#ifndef KILN_MODULE_H
#define KILN_MODULE_H

#include "internal.h"

typedef int32_t (*kiln_entry_fn)(uint8_t *args);

struct kiln_cuda_module;
struct kiln_cuda_plan;

/* a graph, or the graph part of an exported kernel */
struct kiln_graph {
    const struct kiln_module *module;
    const kiln_graph_desc *desc;
    kiln_entry_fn entry;    /* CPU: the native entry point */
    char owner[160];        /* "graph 'main'" / "kernel 'k'", the prefix of every argument error */
    int nsymbols;           /* distinct shape symbols */
    int *sym_index;         /* [param * KILN_MAX_NDIM + dim]: symbol index or -1 */
    size_t nvisible;        /* the parameters a caller passes (not the hidden `@name` ones) */
    size_t *visible;        /* their indices in desc->params */
    kiln_arg *hidden;       /* per parameter: for a hidden one, the module's storage as an argument */
    struct kiln_cuda_plan *cuda;   /* CUDA: the launches of a run */
};

struct kiln_kernel {
    struct kiln_graph graph;
    const char *name;       /* the exported (user's) name */
};

/* one field's storage (host memory, or a CUDA device pointer) */
typedef struct kiln_field_store {
    void *data;
    size_t nbytes;
    int storage_ndim;                       /* (shape or [1]) + element_shape */
    int64_t storage_shape[KILN_MAX_NDIM];
} kiln_field_store;

struct kiln_module {
    kiln_manifest manifest;
    kiln_device device;
    const kiln_target *target;
    kiln_loaded_object object;
    kiln_graph *graphs;
    size_t ngraphs;
    struct kiln_kernel *kernels;
    size_t nkernels;
    int num_threads;
    kiln_field_store *fields;               /* per manifest field */
    uint32_t rng_host[4];                   /* CPU: the random-number state */
    void *rng_data;                         /* what @rng parameters get (rng_host, or device memory) */
    struct kiln_cuda_module *cuda;
    char cuda_image[64];                    /* "cubin sm_90" / "ptx sm_80 (driver JIT)" */
};

/* ---- fields.c: fields and the random-number state */
kiln_status kiln_fields_allocate(kiln_module *m, const kiln_container *c, kiln_error *err);
void kiln_fields_free(kiln_module *m);
/* the hidden arguments of a graph or kernel (g->hidden), from the module's storage */
kiln_status kiln_hidden_arguments(kiln_module *m, kiln_graph *g, kiln_error *err);

/* ---- run.c */
kiln_status kiln_run(const kiln_graph *g, const kiln_arg *args, size_t nargs, void *stream, kiln_error *err);

/* ---- module.c: the ABI descriptor (kiln/runtime/abi_digest.py) of an entry */
kiln_status kiln_abi_digest(const char *kind, const kiln_graph_desc *d, const char *name, const char *symbol,
                            uint8_t digest[32], kiln_error *err);
/* compare a held descriptor (NULL: none) with the manifest's; `where`: "object", "PTX", "cubin sm_90" */
kiln_status kiln_abi_compare(const uint8_t *held, const char *kind, const kiln_graph_desc *d, const char *name,
                             const char *symbol, const char *where, kiln_error *err);

/* ---- cuda.c: the CUDA driver (dlopen'ed), images, device memory and launches */
kiln_status kiln_cuda_open(kiln_module *m, const kiln_container *c, const kiln_load_options *o, kiln_error *err);
void kiln_cuda_close(kiln_module *m);
kiln_status kiln_cuda_alloc(kiln_module *m, size_t nbytes, void **out, kiln_error *err);
kiln_status kiln_cuda_copy(const kiln_module *m, void *dst, const void *src, size_t nbytes, int to_device,
                           kiln_error *err);
kiln_status kiln_cuda_plan(kiln_module *m, kiln_graph *g, kiln_error *err);
void kiln_cuda_plan_free(struct kiln_cuda_plan *p);
kiln_status kiln_cuda_run(const kiln_graph *g, const uint8_t *block, void *stream, kiln_error *err);
kiln_status kiln_cuda_synchronize(const kiln_module *m, void *stream, kiln_error *err);

#endif /* KILN_MODULE_H */
