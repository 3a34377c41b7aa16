/* Test driver for tests/test_c_runtime.py: loads a .kiln file with libkiln and either lists its
 * graphs or runs one graph on arrays read from raw files, writing the arrays back afterwards.
 *
 *   kiln_case version
 *   kiln_case header FILE            check_file_header on the file's bytes
 *   kiln_case list FILE [memory]     graphs and their arguments (memory: load from bytes)
 *   kiln_case load FILE...           load and free each file (fuzzing): "loaded N refused M"
 *   kiln_case run SPEC               run as described by SPEC, one directive a line:
 *       file PATH
 *       graph NAME                   (or: kernel NAME, an exported kernel)
 *       positional                   kernel calls: pass the arguments without names, in order
 *       runs N                       run N times (fields and the random state carry over)
 *       seed N                       kiln_module_seed before the runs
 *       field_in NAME PATH           write a field from a raw file before the runs
 *       field_out NAME PATH          write a field to a raw file after the runs
 *       cuda LIBCUDA                 load for CUDA with this driver library; arrays are copied to
 *                                    device memory before the runs and back after them
 *       fake_cuda MAJOR MINOR INIT LOG   configure tests' fake driver (c/tests/fake_libcuda.c)
 *       threads N
 *       scalar NAME bool|int|uint|float VALUE
 *       array NAME DTYPE NDIM D0 .. D(NDIM-1) IN_PATH OUT_PATH FLAGS
 *           (IN/OUT "-" for none; FLAGS "-" or comma-separated: ro, strided, misaligned, null)
 *
 * Prints "ok" or "error CODE MESSAGE" (exit status 0 either way: the test compares), and exits
 * 1 on a usage problem. Arrays with an OUT_PATH are written back whether the run failed or not. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

enum { MAX_ARGS = 64 };

typedef struct array_arg {
    char name[128], in[1024], out[1024], flags[128];
    int dtype, ndim;
    int64_t shape[KILN_MAX_NDIM], strides[KILN_MAX_NDIM];
    uint8_t *buffer;
    size_t bytes;
} array_arg;

static uint8_t *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static int dtype_from_name(const char *s) {
    for (int d = KILN_BOOL; d <= KILN_F64; d++)
        if (strcmp(kiln_dtype_name((kiln_dtype)d), s) == 0) return d;
    return -1;
}

static void print_error(const kiln_error *e) { printf("error %d %s\n", (int)e->code, e->message); }

static void print_arg(const kiln_arg_info *a) {
    static const char *const acc[] = {"none", "read", "write", "readwrite"};
    printf("arg %s %s %s %d %s", a->name, a->kind == KILN_ARRAY ? "ndarray" : "scalar", kiln_dtype_name(a->dtype),
           a->ndim, acc[a->access]);
    for (int d = 0; a->has_shape && d < a->ndim; d++) {
        if (a->shape_symbol[d]) printf(" %s", a->shape_symbol[d]);
        else if (a->shape_size[d] >= 0) printf(" %lld", (long long)a->shape_size[d]);
        else printf(" ?");
    }
    printf("\n");
}

static int list(const char *path, int from_memory) {
    kiln_module *m = NULL;
    kiln_error err;
    kiln_status st;
    if (from_memory) {
        size_t size;
        uint8_t *data = read_all(path, &size);
        if (!data) return 1;
        st = kiln_module_load_memory(data, size, &m, &err);
        free(data);
    } else {
        st = kiln_module_load_file(path, &m, &err);
    }
    if (st != KILN_OK) {
        print_error(&err);
        return 0;
    }
    printf("arch %s cpu %s threads %d\n", kiln_module_arch(m), kiln_module_cpu(m), kiln_module_num_threads(m));
    for (size_t i = 0; i < kiln_module_graph_count(m); i++) {
        const kiln_graph *g = kiln_module_graph(m, i);
        printf("graph %s %zu\n", kiln_graph_name(g), kiln_graph_arg_count(g));
        for (size_t k = 0; k < kiln_graph_arg_count(g); k++) {
            kiln_arg_info a;
            kiln_graph_arg_info(g, k, &a);
            print_arg(&a);
        }
    }
    for (size_t i = 0; i < kiln_module_kernel_count(m); i++) {
        const kiln_kernel *kn = kiln_module_kernel(m, i);
        printf("kernel %s %zu\n", kiln_kernel_name(kn), kiln_kernel_arg_count(kn));
        for (size_t k = 0; k < kiln_kernel_arg_count(kn); k++) {
            kiln_arg_info a;
            kiln_kernel_arg_info(kn, k, &a);
            print_arg(&a);
        }
    }
    for (size_t i = 0; i < kiln_module_field_count(m); i++) {
        kiln_field_info f;
        kiln_module_field_info(m, i, &f);
        printf("field %s %s %d", f.name, kiln_dtype_name(f.dtype), f.ndim);
        for (int d = 0; d < f.ndim; d++) printf(" %lld", (long long)f.shape[d]);
        printf(" element %d bytes %zu\n", f.element_ndim, f.nbytes);
    }
    uint32_t rng[4];
    kiln_module_rng_state(m, rng, NULL);
    printf("rng %u %u %u %u\n", rng[0], rng[1], rng[2], rng[3]);
    kiln_module_free(m);
    printf("ok\n");
    return 0;
}

static int load_many(int n, char **paths) {
    int loaded = 0, refused = 0;
    for (int i = 0; i < n; i++) {
        kiln_module *m = NULL;
        kiln_error err;
        if (kiln_module_load_file(paths[i], &m, &err) == KILN_OK) loaded++;
        else refused++;
        kiln_module_free(m);
    }
    printf("loaded %d refused %d\n", loaded, refused);
    return 0;
}

static int header(const char *path) {
    size_t size;
    uint8_t *data = read_all(path, &size);
    if (!data) return 1;
    kiln_error err;
    if (kiln_check_file_header(data, size, &err) != KILN_OK) print_error(&err);
    else printf("ok\n");
    free(data);
    return 0;
}

static int parse_array(char *line, array_arg *a) {
    char dtype[16];
    int used = 0;
    if (sscanf(line, "array %127s %15s %d%n", a->name, dtype, &a->ndim, &used) != 3) return 0;
    a->dtype = dtype_from_name(dtype);
    if (a->dtype < 0 || a->ndim < 0 || a->ndim > KILN_MAX_NDIM) return 0;
    char *p = line + used;
    for (int k = 0; k < a->ndim; k++) {
        long long v;
        int n;
        if (sscanf(p, "%lld%n", &v, &n) != 1) return 0;
        a->shape[k] = v;
        p += n;
    }
    return sscanf(p, "%1023s %1023s %127s", a->in, a->out, a->flags) == 3;
}

static int setup_array(array_arg *a, kiln_arg *out) {
    size_t item = kiln_dtype_size((kiln_dtype)a->dtype), count = 1;
    for (int k = 0; k < a->ndim; k++) count *= (size_t)(a->shape[k] > 0 ? a->shape[k] : 0);
    a->bytes = count * item;
    a->buffer = calloc(a->bytes + 64, 1);
    if (!a->buffer) return 0;
    uint8_t *data = a->buffer + 16;
    if (strcmp(a->in, "-") != 0) {
        size_t size;
        uint8_t *in = read_all(a->in, &size);
        if (!in || size != a->bytes) return 0;
        memcpy(data, in, size);
        free(in);
    }
    if (strstr(a->flags, "misaligned")) data += 1;
    *out = kiln_arg_array(a->name, (kiln_dtype)a->dtype, strstr(a->flags, "null") ? NULL : data, a->ndim, a->shape);
    if (strstr(a->flags, "ro")) out->read_only = 1;
    if (strstr(a->flags, "alias")) {          /* every element at one address (zero strides) */
        for (int k = 0; k < a->ndim; k++) a->strides[k] = 0;
        out->strides = a->strides;
    } else if (strstr(a->flags, "strided")) {  /* Fortran order: the buffer read column-major */
        int64_t s = (int64_t)item;
        for (int k = 0; k < a->ndim; k++) {
            a->strides[k] = s;
            s *= a->shape[k];
        }
        out->strides = a->strides;
    }
    return 1;
}

typedef struct field_io {
    char name[128], path[1024];
} field_io;

typedef struct spec {
    char file[1024], graph[256], kernel[256], libcuda[1024], fake_log[1024];
    int fake_major, fake_minor, fake_init;
    int threads, positional, runs, has_seed;
    unsigned long long seed;
    field_io in[8], out[8];
    int nin, nout;
} spec;

static int field_files(kiln_module *m, field_io *io, int n, int writing) {
    for (int i = 0; i < n; i++) {
        kiln_field_info f;
        kiln_error err;
        if (kiln_module_find_field(m, io[i].name, &f, &err) != KILN_OK) {
            print_error(&err);
            return 0;
        }
        uint8_t *buf = calloc(f.nbytes + 1, 1);
        size_t size = f.nbytes;
        kiln_status st;
        if (writing) {
            free(buf);
            buf = read_all(io[i].path, &size);
            st = kiln_module_write_field(m, io[i].name, buf, size, &err);
        } else {
            st = kiln_module_read_field(m, io[i].name, buf, size, &err);
            FILE *o = fopen(io[i].path, "wb");
            if (o) {
                fwrite(buf, 1, size, o);
                fclose(o);
            }
        }
        free(buf);
        if (st != KILN_OK) {
            print_error(&err);
            return 0;
        }
    }
    return 1;
}

static kiln_status run_once(kiln_module *m, const spec *sp, kiln_arg *args, size_t nargs, kiln_error *err) {
    if (sp->kernel[0]) {
        const kiln_kernel *k = kiln_module_find_kernel(m, sp->kernel);
        if (!k) {
            err->message[0] = 0;
            printf("error %d no kernel named '%s'\n", (int)KILN_ERR_NOT_FOUND, sp->kernel);
            return KILN_ERR_NOT_FOUND;
        }
        for (size_t i = 0; sp->positional && i < nargs; i++) args[i].name = NULL;
        return kiln_kernel_call(k, args, nargs, err);
    }
    const kiln_graph *g = kiln_module_find_graph(m, sp->graph);
    if (!g) {
        err->message[0] = 0;
        printf("error %d no graph named '%s'\n", (int)KILN_ERR_NOT_FOUND, sp->graph);
        return KILN_ERR_NOT_FOUND;
    }
    return kiln_graph_run(g, args, nargs, err);
}

static void *cuda_symbol(const spec *sp, const char *name) {
    void *lib = dlopen(sp->libcuda, RTLD_NOW | RTLD_LOCAL);
    return lib ? dlsym(lib, name) : NULL;
}

static void configure_fake(const spec *sp) {
    void (*configure)(int, int, int, const char *) = NULL;
    void *f = cuda_symbol(sp, "kiln_fake_cuda_configure");
    memcpy(&configure, &f, sizeof f);
    if (configure) configure(sp->fake_major, sp->fake_minor, sp->fake_init, sp->fake_log[0] ? sp->fake_log : NULL);
}

/* copy every array to device memory (to_device) or back (kiln_device_*); 0 on a failure */
static int device_arrays(const kiln_module *m, array_arg *arrays, kiln_arg *args, size_t nargs, int to_device) {
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind != KILN_ARG_ARRAY || !args[i].data) continue;
        array_arg *a = &arrays[i];
        kiln_error err;
        if (to_device) {
            void *d = NULL;
            if (kiln_device_alloc(m, a->bytes, &d, &err) != KILN_OK ||
                kiln_device_upload(m, d, a->buffer + 16, a->bytes, &err) != KILN_OK) {
                print_error(&err);
                return 0;
            }
            args[i].data = d;
        } else if (kiln_device_download(m, a->buffer + 16, args[i].data, a->bytes, &err) != KILN_OK) {
            print_error(&err);
            return 0;
        } else {
            kiln_device_free(m, args[i].data);
        }
    }
    return 1;
}

/* the spec's directives into `sp`, `arrays` and `args`; 0 on a bad line */
static int parse_spec(FILE *f, spec *sp, array_arg *arrays, kiln_arg *args, size_t *nargs) {
    char line[4096];
    snprintf(sp->graph, sizeof sp->graph, "main");
    sp->runs = 1;
    while (fgets(line, sizeof line, f) && *nargs < MAX_ARGS) {
        char name[128], kind[16], value[128];
        if (sscanf(line, "file %1023s", sp->file) == 1 || sscanf(line, "graph %255s", sp->graph) == 1 ||
            sscanf(line, "kernel %255s", sp->kernel) == 1 || sscanf(line, "threads %d", &sp->threads) == 1 ||
            sscanf(line, "runs %d", &sp->runs) == 1 || sscanf(line, "cuda %1023s", sp->libcuda) == 1)
            continue;
        if (sscanf(line, "fake_cuda %d %d %d %1023s", &sp->fake_major, &sp->fake_minor, &sp->fake_init,
                   sp->fake_log) >= 3)
            continue;
        if (strncmp(line, "positional", 10) == 0) {
            sp->positional = 1;
        } else if (sscanf(line, "seed %llu", &sp->seed) == 1) {
            sp->has_seed = 1;
        } else if (sp->nin < 8 && sscanf(line, "field_in %127s %1023s", sp->in[sp->nin].name, sp->in[sp->nin].path) == 2) {
            sp->nin++;
        } else if (sp->nout < 8 &&
                   sscanf(line, "field_out %127s %1023s", sp->out[sp->nout].name, sp->out[sp->nout].path) == 2) {
            sp->nout++;
        } else if (sscanf(line, "scalar %127s %15s %127s", name, kind, value) == 3) {
            char *n = arrays[*nargs].name;        /* the slot's storage holds the name */
            snprintf(n, sizeof arrays[*nargs].name, "%s", name);
            if (strcmp(kind, "bool") == 0) args[(*nargs)++] = kiln_arg_bool(n, atoi(value));
            else if (strcmp(kind, "int") == 0) args[(*nargs)++] = kiln_arg_i64(n, strtoll(value, NULL, 10));
            else if (strcmp(kind, "uint") == 0) args[(*nargs)++] = kiln_arg_u64(n, strtoull(value, NULL, 10));
            else args[(*nargs)++] = kiln_arg_f64(n, strtod(value, NULL));
        } else if (strncmp(line, "array ", 6) == 0) {
            array_arg *a = &arrays[*nargs];
            if (!parse_array(line, a) || !setup_array(a, &args[*nargs])) {
                fprintf(stderr, "bad array line: %s", line);
                return 0;
            }
            (*nargs)++;
        }
    }
    return 1;
}

static int run(const char *spec_path) {
    FILE *f = fopen(spec_path, "r");
    if (!f) return 1;
    static array_arg arrays[MAX_ARGS];
    static spec sp;
    kiln_arg args[MAX_ARGS];
    size_t nargs = 0;
    int parsed = parse_spec(f, &sp, arrays, args, &nargs);
    fclose(f);
    if (!parsed) return 1;
    kiln_module *m = NULL;
    kiln_error err;
    kiln_load_options options = {sp.libcuda[0] ? KILN_DEVICE_CUDA : KILN_DEVICE_CPU, 0, sp.libcuda};
    if (sp.fake_major) configure_fake(&sp);
    if (kiln_module_load_file_ex(sp.file, &options, &m, &err) != KILN_OK) {
        print_error(&err);
        return 0;
    }
    if (sp.libcuda[0]) {
        printf("image %s\n", kiln_module_cpu(m));
        if (!device_arrays(m, arrays, args, nargs, 1)) return 1;
    }
    if (sp.threads > 0 && kiln_module_set_num_threads(m, sp.threads, &err) != KILN_OK) {
        print_error(&err);
        return 0;
    }
    if (sp.has_seed) kiln_module_seed(m, sp.seed, NULL);
    if (!field_files(m, sp.in, sp.nin, 1)) return 0;
    kiln_status st = KILN_OK;
    for (int r = 0; r < sp.runs && st == KILN_OK; r++) st = run_once(m, &sp, args, nargs, &err);
    if (sp.libcuda[0] && (kiln_module_synchronize(m, NULL, NULL) != KILN_OK ||
                          !device_arrays(m, arrays, args, nargs, 0)))
        return 1;
    /* arrays are written back after a failed run too: the test checks that they are untouched */
    for (size_t i = 0; i < nargs; i++) {
        array_arg *a = &arrays[i];
        if (args[i].kind != KILN_ARG_ARRAY || strcmp(a->out, "-") == 0) continue;
        FILE *o = fopen(a->out, "wb");
        if (!o || fwrite(a->buffer + 16, 1, a->bytes, o) != a->bytes) return 1;
        fclose(o);
    }
    if (!field_files(m, sp.out, sp.nout, 0)) return 0;
    if (st == KILN_ERR_NOT_FOUND && !err.message[0]) {
        /* printed by run_once */
    } else if (st != KILN_OK) {
        print_error(&err);
    } else {
        uint32_t rng[4];
        kiln_module_rng_state(m, rng, NULL);
        printf("rng %u %u %u %u\nok\n", rng[0], rng[1], rng[2], rng[3]);
    }
    kiln_module_free(m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "version") == 0) {
        int major, minor;
        kiln_format_version(&major, &minor);
        printf("kiln %s format %d.%d\n", kiln_version(), major, minor);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "header") == 0) return header(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "list") == 0) return list(argv[2], argc >= 4);
    if (argc >= 3 && strcmp(argv[1], "run") == 0) return run(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "load") == 0) return load_many(argc - 2, argv + 2);
    fprintf(stderr, "usage: kiln_case version | header FILE | list FILE [memory] | load FILE... | run SPEC\n");
    return 1;
}
