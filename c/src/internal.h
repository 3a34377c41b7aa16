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
    /* info.name and info.shape_symbol[] are strdup'ed and freed with the manifest */
} kiln_param;

typedef struct kiln_target {
    char *name, *kind, *arch, *triple, *cpu, *features;
    char **blobs;
    size_t nblobs;
} kiln_target;

typedef struct kiln_graph_desc {
    char *name;
    kiln_param *params;
    size_t nparams;
    size_t block_size;
    /* entries: target name -> symbol */
    char **entry_targets;
    char **entry_symbols;
    size_t nentries;
} kiln_graph_desc;

typedef struct kiln_manifest {
    int format_major, format_minor;
    kiln_target *targets;
    size_t ntargets;
    kiln_graph_desc *graphs;
    size_t ngraphs;
} kiln_manifest;

/* Parse and validate the manifest JSON (the checks of kiln/artifact/manifest.py). */
kiln_status kiln_manifest_parse(const struct cJSON *doc, const struct kiln_container *container,
                                kiln_manifest *out, kiln_error *err);
void kiln_manifest_free(kiln_manifest *m);

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
