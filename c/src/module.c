/* Loading a module: container, manifest, the CPU target for this machine, the ELF object, the
 * runtime globals (threads), and the graph table (kiln/runtime/compiled.py's _link). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "module.h"

static kiln_status pick_target(const kiln_manifest *m, const kiln_target **out, kiln_error *err) {
    const char *arch = kiln_host_arch();
    char archs[256] = "", problems[400] = "";
    int ncpu = 0;
    for (size_t i = 0; i < m->ntargets; i++) {
        const kiln_target *t = &m->targets[i];
        if (strcmp(t->kind, "cpu") != 0) continue;
        size_t used = strlen(archs);
        snprintf(archs + used, sizeof archs - used, "%s%s", ncpu++ ? ", " : "", t->arch);
        if (strcmp(t->arch, arch) != 0) continue;
        char missing[256];
        kiln_missing_features(t->features, missing, sizeof missing);
        if (!missing[0]) {
            *out = t;
            return KILN_OK;
        }
        used = strlen(problems);
        snprintf(problems + used, sizeof problems - used, "%s%s (%s) needs CPU features this machine lacks: %s",
                 used ? "; " : "", t->name, t->cpu, missing);
    }
    if (!ncpu) return kiln_fail(err, KILN_ERR_NO_TARGET, "the file has no CPU code");
    if (!problems[0])
        return kiln_fail(err, KILN_ERR_NO_TARGET, "compiled for %s, this machine is %s", archs, arch);
    return kiln_fail(err, KILN_ERR_NO_TARGET,
                     "cannot run here: %s. Recompile with a portable target, e.g. compile(target='%s')", problems,
                     strcmp(arch, "x86_64") == 0 ? "x86-64-v2" : "aarch64");
}

static const char *entry_for(const kiln_graph_desc *g, const char *target) {
    for (size_t i = 0; i < g->nentries; i++)
        if (strcmp(g->entry_targets[i], target) == 0) return g->entry_symbols[i];
    return NULL;
}

/* distinct shape symbols of a graph, and per (param, dim) the symbol's index or -1 */
static kiln_status index_symbols(kiln_graph *g, kiln_error *err) {
    const kiln_graph_desc *d = g->desc;
    g->sym_index = malloc((d->nparams + 1) * KILN_MAX_NDIM * sizeof *g->sym_index);
    const char **names = calloc(d->nparams * KILN_MAX_NDIM + 1, sizeof *names);
    if (!g->sym_index || !names) {
        free(names);
        return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    g->nsymbols = 0;
    for (size_t p = 0; p < d->nparams; p++) {
        for (int k = 0; k < KILN_MAX_NDIM; k++) {
            const char *s = d->params[p].info.shape_symbol[k];
            int idx = -1;
            for (int j = 0; s && j < g->nsymbols; j++)
                if (strcmp(names[j], s) == 0) idx = j;
            if (s && idx < 0) {
                idx = g->nsymbols++;
                names[idx] = s;
            }
            g->sym_index[p * KILN_MAX_NDIM + k] = idx;
        }
    }
    free(names);
    return KILN_OK;
}

/* ---- the ABI descriptor (kiln/runtime/abi_digest.py): SHA-256 of a canonical JSON of what the
 * manifest says about an entry, compared with the object's `<symbol>_abi` global. The JSON must
 * be byte for byte Python's json.dumps(doc, sort_keys=True, separators=(",", ":"),
 * ensure_ascii=True). */
typedef struct abi_text {
    char *buf;
    size_t len, cap;
    int oom;
} abi_text;

static void put(abi_text *t, const char *s, size_t n) {
    if (t->oom) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->cap ? t->cap * 2 : 1024) + n;
        char *b = realloc(t->buf, cap);
        if (!b) { t->oom = 1; return; }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
}

static void puts_(abi_text *t, const char *s) { put(t, s, strlen(s)); }

static void put_u16(abi_text *t, unsigned v) {
    char e[8];
    snprintf(e, sizeof e, "\\u%04x", v & 0xFFFFu);
    put(t, e, 6);
}

/* a JSON string as Python writes it with ensure_ascii: printable ASCII as is (but " and \),
 * the usual short escapes, everything else \uXXXX (UTF-8 decoded, surrogate pairs above BMP) */
static void put_str(abi_text *t, const char *s) {
    put(t, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        const char *short_esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                              : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (short_esc) { puts_(t, short_esc); p++; continue; }
        if (c >= 0x20 && c < 0x7F) { put(t, (const char *)p, 1); p++; continue; }
        unsigned cp = c, more = 0;
        if (c >= 0xF0) { cp = c & 0x07; more = 3; } else if (c >= 0xE0) { cp = c & 0x0F; more = 2; }
        else if (c >= 0xC0) { cp = c & 0x1F; more = 1; }
        p++;
        for (unsigned k = 0; k < more && (*p & 0xC0) == 0x80; k++, p++) cp = (cp << 6) | (*p & 0x3F);
        if (cp >= 0x10000) {
            cp -= 0x10000;
            put_u16(t, 0xD800 + (cp >> 10));
            put_u16(t, 0xDC00 + (cp & 0x3FF));
        } else {
            put_u16(t, cp);
        }
    }
    put(t, "\"", 1);
}

kiln_status kiln_abi_digest(const char *kind, const kiln_graph_desc *d, const char *name, const char *sym,
                            uint8_t digest[32], kiln_error *err) {
    static const char *const access[] = {"none", "read", "write", "readwrite"};
    abi_text t = {0};
    char num[32];
    puts_(&t, "{\"abi\":2,\"kind\":\"");   /* 2: kiln.abi.ABI_VERSION */
    puts_(&t, kind);
    puts_(&t, "\",\"name\":");
    put_str(&t, name);
    puts_(&t, ",\"params\":[");
    for (size_t i = 0; i < d->nparams; i++) {
        const kiln_arg_info *a = &d->params[i].info;
        puts_(&t, i ? ",{\"access\":\"" : "{\"access\":\"");
        puts_(&t, access[a->access & 3]);
        puts_(&t, "\",\"dtype\":\"");
        puts_(&t, kiln_dtype_name(a->dtype));
        puts_(&t, a->kind == KILN_ARRAY ? "\",\"kind\":\"ndarray\",\"name\":" : "\",\"kind\":\"scalar\",\"name\":");
        put_str(&t, a->name);
        snprintf(num, sizeof num, ",\"ndim\":%d,\"offset\":%lld,\"shape\":", a->ndim, (long long)d->params[i].offset);
        puts_(&t, num);
        if (!a->has_shape) {
            puts_(&t, "null}");
            continue;
        }
        puts_(&t, "[");
        for (int k = 0; k < a->ndim; k++) {
            if (k) puts_(&t, ",");
            if (a->shape_symbol[k]) {
                put_str(&t, a->shape_symbol[k]);
            } else if (a->shape_size[k] >= 0) {
                snprintf(num, sizeof num, "%lld", (long long)a->shape_size[k]);
                puts_(&t, num);
            } else {
                puts_(&t, "null");
            }
        }
        puts_(&t, "]}");
    }
    puts_(&t, "],\"symbol\":");
    put_str(&t, sym);
    puts_(&t, "}");
    if (t.oom) {
        free(t.buf);
        return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    kiln_sha256_digest(t.buf, t.len, digest);
    free(t.buf);
    return KILN_OK;
}

kiln_status kiln_abi_compare(const uint8_t *held, const char *kind, const kiln_graph_desc *d, const char *name,
                             const char *sym, const char *where, kiln_error *err) {
    uint8_t want[32];
    kiln_status st = kiln_abi_digest(kind, d, name, sym, want, err);
    if (st != KILN_OK) return st;
    if (!held)
        return kiln_fail(err, KILN_ERR_FORMAT, "%s '%s': the %s has no ABI descriptor '%s_abi' (a manifest that "
                         "does not belong to this code, or a file written by an older kiln)", kind, name, where, sym);
    if (memcmp(held, want, sizeof want) != 0)
        return kiln_fail(err, KILN_ERR_FORMAT, "%s '%s': the manifest disagrees with the %s's ABI descriptor "
                         "(parameters, access modes, shapes or entry point '%s' were changed, or the code "
                         "belongs to another file)", kind, name, where, sym);
    return KILN_OK;
}

static kiln_status check_abi(const kiln_module *m, const char *kind, const kiln_graph_desc *d, const char *sym,
                             kiln_error *err) {
    char glob[512];
    snprintf(glob, sizeof glob, "%s_abi", sym);
    kiln_error ignored;
    uintptr_t a = kiln_elf_data_address(&m->object, glob, 32, &ignored);
    return kiln_abi_compare(a ? (const uint8_t *)a : NULL, kind, d, d->name, sym, "object", err);
}

/* the parts of a graph or kernel every device needs: owner, shape symbols, hidden arguments */
static kiln_status link_common(kiln_module *m, kiln_graph *g, const kiln_graph_desc *d, const char *kind,
                               const char *name, kiln_error *err) {
    g->module = m;
    g->desc = d;
    snprintf(g->owner, sizeof g->owner, "%s '%s'", kind, name);
    kiln_status st = index_symbols(g, err);
    if (st == KILN_OK) st = kiln_hidden_arguments(m, g, err);
    if (st == KILN_OK && m->device == KILN_DEVICE_CUDA) st = kiln_cuda_plan(m, g, err);
    return st;
}

/* every graph and kernel has an entry for the target (kiln/runtime/compiled.py _link; on CUDA
 * kernels only: graphs run as the launches of their dispatches) */
static kiln_status check_entries(const kiln_module *m, const char *target, kiln_error *err) {
    for (size_t i = 0; m->device == KILN_DEVICE_CPU && i < m->manifest.ngraphs; i++)
        if (!entry_for(&m->manifest.graphs[i], target))
            return kiln_fail(err, KILN_ERR_FORMAT, "graph '%s' has no entry point for target '%s'",
                             m->manifest.graphs[i].name, target);
    for (size_t i = 0; i < m->manifest.nkernels; i++)
        if (!entry_for(&m->manifest.kernels[i], target))
            return kiln_fail(err, KILN_ERR_FORMAT, "kernel '%s' has no entry point for target '%s'",
                             m->manifest.kernels[i].name, target);
    return KILN_OK;
}

/* CPU: the object's ABI descriptors of every graph and kernel, then the graphs' entry points */
static kiln_status link_cpu(kiln_module *m, kiln_error *err) {
    for (size_t i = 0; i < m->manifest.ngraphs + m->manifest.nkernels; i++) {
        int is_graph = i < m->manifest.ngraphs;
        const kiln_graph_desc *d = is_graph ? &m->manifest.graphs[i] : &m->manifest.kernels[i - m->manifest.ngraphs];
        const char *sym = entry_for(d, m->target->name);
        if (!kiln_elf_code_address(&m->object, sym, err)) return KILN_ERR_ELF;
        kiln_status st = check_abi(m, is_graph ? "graph" : "kernel", d, sym, err);
        if (st != KILN_OK) return st;
    }
    for (size_t i = 0; i < m->ngraphs; i++)
        m->graphs[i].entry = (kiln_entry_fn)kiln_elf_code_address(&m->object, entry_for(&m->manifest.graphs[i],
                                                                                       m->target->name), err);
    for (size_t i = 0; i < m->nkernels; i++) {
        const kiln_graph_desc *d = &m->manifest.kernels[m->manifest.exported_kernels[i]];
        m->kernels[i].graph.entry = (kiln_entry_fn)kiln_elf_code_address(&m->object, entry_for(d, m->target->name), err);
    }
    return KILN_OK;
}

static kiln_status link_runnables(kiln_module *m, kiln_error *err) {
    m->ngraphs = m->manifest.ngraphs;
    m->nkernels = m->manifest.nexported;
    m->graphs = calloc(m->ngraphs + 1, sizeof *m->graphs);
    m->kernels = calloc(m->nkernels + 1, sizeof *m->kernels);
    if (!m->graphs || !m->kernels) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    for (size_t i = 0; st == KILN_OK && i < m->ngraphs; i++)
        st = link_common(m, &m->graphs[i], &m->manifest.graphs[i], "graph", m->manifest.graphs[i].name, err);
    for (size_t i = 0; st == KILN_OK && i < m->nkernels; i++) {
        m->kernels[i].name = m->manifest.exported_names[i];
        st = link_common(m, &m->kernels[i].graph, &m->manifest.kernels[m->manifest.exported_kernels[i]], "kernel",
                         m->kernels[i].name, err);
    }
    return st;
}

kiln_status kiln_module_set_num_threads(kiln_module *m, int n, kiln_error *err) {
    if (!m) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "module is NULL");
    if (n < 1) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "set_num_threads: expected a positive integer, got %d", n);
    if (m->device == KILN_DEVICE_CUDA) return KILN_OK;      /* GPU code: no CPU threads to set */
    static const char *const globals[3] = {"kiln_rt_gomp_parallel", "kiln_rt_omp_get_thread_num",
                                           "kiln_rt_omp_get_num_threads"};
    void *gomp[3] = {NULL, NULL, NULL};
    int have = n > 1 && kiln_gomp_functions(gomp);
    for (int i = 0; i < 3; i++) {
        uintptr_t a = kiln_elf_data_address(&m->object, globals[i], sizeof(void *), err);
        if (!a) return KILN_ERR_ELF;
        if (have) memcpy((void *)a, &gomp[i], sizeof(void *));   /* NULL pointers stay: serial */
    }
    uintptr_t a = kiln_elf_data_address(&m->object, "kiln_rt_num_threads", sizeof(int32_t), err);
    if (!a) return KILN_ERR_ELF;
    int32_t v = have ? n : 1;
    memcpy((void *)a, &v, sizeof v);
    m->num_threads = v;
    return KILN_OK;
}

int kiln_module_num_threads(const kiln_module *m) { return m ? m->num_threads : 0; }

static kiln_status pick_cuda_target(const kiln_manifest *man, const kiln_target **out, kiln_error *err) {
    char kinds[128] = "";
    for (size_t i = 0; i < man->ntargets; i++) {
        if (strcmp(man->targets[i].kind, "cuda") == 0) {
            *out = &man->targets[i];
            return man->cuda.present ? KILN_OK
                                     : kiln_fail(err, KILN_ERR_FORMAT, "manifest: cuda: the launch table is missing");
        }
        if (!strstr(kinds, man->targets[i].kind)) {
            size_t used = strlen(kinds);
            snprintf(kinds + used, sizeof kinds - used, "%s%s", used ? ", " : "", man->targets[i].kind);
        }
    }
    return kiln_fail(err, KILN_ERR_NO_TARGET, "the file has no cuda target (targets: %s); compile with "
                     "targets=['cpu', 'cuda']", kinds);
}

static kiln_status link_module(const uint8_t *data, size_t size, const kiln_load_options *o, kiln_module *m,
                               kiln_error *err) {
    kiln_container c;
    kiln_status st = kiln_container_unpack(data, size, &c, err);
    if (st != KILN_OK) return st;
    m->device = o->device;
    st = kiln_manifest_parse(c.doc, &c, &m->manifest, err);
    if (st == KILN_OK && m->device == KILN_DEVICE_CUDA) {
        st = pick_cuda_target(&m->manifest, &m->target, err);
        if (st == KILN_OK) st = check_entries(m, m->target->name, err);
        if (st == KILN_OK) st = kiln_cuda_open(m, &c, o, err);      /* the GPU image, ABI checked */
    } else if (st == KILN_OK) {
        st = pick_target(&m->manifest, &m->target, err);
        if (st == KILN_OK && m->target->nblobs != 1)
            st = kiln_fail(err, KILN_ERR_FORMAT, "CPU target '%s' must have exactly one object blob", m->target->name);
        if (st == KILN_OK) st = check_entries(m, m->target->name, err);
        const kiln_blob *blob = NULL;
        for (size_t i = 0; st == KILN_OK && i < c.nblobs; i++)
            if (strcmp(c.blobs[i].name, m->target->blobs[0]) == 0) blob = &c.blobs[i];
        if (st == KILN_OK) st = kiln_elf_load(blob->data, blob->size, &m->object, err);
    }
    if (st == KILN_OK) st = kiln_fields_allocate(m, &c, err);
    kiln_container_free(&c);
    if (st == KILN_OK) st = link_runnables(m, err);
    if (st == KILN_OK && m->device == KILN_DEVICE_CPU) st = link_cpu(m, err);
    if (st == KILN_OK && m->device == KILN_DEVICE_CPU) st = kiln_module_set_num_threads(m, kiln_default_threads(), err);
    if (st == KILN_OK && m->device == KILN_DEVICE_CUDA) m->num_threads = 1;
    return st;
}

kiln_status kiln_module_load_memory_ex(const void *data, size_t size, const kiln_load_options *options,
                                       kiln_module **out, kiln_error *err) {
    if (!out) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!data && size) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "data is NULL");
    kiln_load_options cpu = {KILN_DEVICE_CPU, 0, NULL};
    if (!options) options = &cpu;
    if (options->device != KILN_DEVICE_CPU && options->device != KILN_DEVICE_CUDA)
        return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "unknown device %d", (int)options->device);
    kiln_module *m = calloc(1, sizeof *m);
    if (!m) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    kiln_status st = link_module(data, size, options, m, err);
    if (st != KILN_OK) {
        kiln_module_free(m);
        return st;
    }
    *out = m;
    return KILN_OK;
}

kiln_status kiln_module_load_memory(const void *data, size_t size, kiln_module **out, kiln_error *err) {
    return kiln_module_load_memory_ex(data, size, NULL, out, err);
}

kiln_status kiln_module_load_file(const char *path, kiln_module **out, kiln_error *err) {
    return kiln_module_load_file_ex(path, NULL, out, err);
}

kiln_status kiln_module_load_file_ex(const char *path, const kiln_load_options *options, kiln_module **out,
                                     kiln_error *err) {
    if (!out || !path) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "path or out is NULL");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kiln_fail(err, KILN_ERR_IO, "cannot read %s: cannot open the file", path);
    uint8_t *buf = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (size == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory reading %s", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return kiln_fail(err, KILN_ERR_IO, "cannot read %s: read error", path);
    }
    kiln_status st = kiln_module_load_memory_ex(buf, size, options, out, err);
    free(buf);
    if (st != KILN_OK) kiln_error_prefix(err, path);
    return st;
}

static void free_graph(kiln_graph *g) {
    free(g->sym_index);
    free(g->visible);
    free(g->hidden);
    kiln_cuda_plan_free(g->cuda);
}

void kiln_module_free(kiln_module *m) {
    if (!m) return;
    for (size_t i = 0; m->graphs && i < m->ngraphs; i++) free_graph(&m->graphs[i]);
    for (size_t i = 0; m->kernels && i < m->nkernels; i++) free_graph(&m->kernels[i].graph);
    free(m->graphs);
    free(m->kernels);
    kiln_fields_free(m);
    kiln_cuda_close(m);
    kiln_elf_unload(&m->object);
    kiln_manifest_free(&m->manifest);
    free(m);
}

kiln_device kiln_module_device(const kiln_module *m) { return m ? m->device : KILN_DEVICE_CPU; }
const char *kiln_module_arch(const kiln_module *m) { return m && m->target ? m->target->arch : NULL; }

const char *kiln_module_cpu(const kiln_module *m) {
    if (!m || !m->target) return NULL;
    return m->device == KILN_DEVICE_CUDA ? m->cuda_image : m->target->cpu;
}

size_t kiln_module_graph_count(const kiln_module *m) { return m ? m->ngraphs : 0; }

const kiln_graph *kiln_module_graph(const kiln_module *m, size_t index) {
    return m && index < m->ngraphs ? &m->graphs[index] : NULL;
}

const kiln_graph *kiln_module_find_graph(const kiln_module *m, const char *name) {
    for (size_t i = 0; m && name && i < m->ngraphs; i++)
        if (strcmp(m->graphs[i].desc->name, name) == 0) return &m->graphs[i];
    return NULL;
}

size_t kiln_module_kernel_count(const kiln_module *m) { return m ? m->nkernels : 0; }

const kiln_kernel *kiln_module_kernel(const kiln_module *m, size_t index) {
    return m && index < m->nkernels ? &m->kernels[index] : NULL;
}

const kiln_kernel *kiln_module_find_kernel(const kiln_module *m, const char *name) {
    for (size_t i = 0; m && name && i < m->nkernels; i++)
        if (strcmp(m->kernels[i].name, name) == 0) return &m->kernels[i];
    return NULL;
}

const char *kiln_graph_name(const kiln_graph *g) { return g ? g->desc->name : NULL; }
size_t kiln_graph_arg_count(const kiln_graph *g) { return g ? g->nvisible : 0; }

kiln_status kiln_graph_arg_info(const kiln_graph *g, size_t index, kiln_arg_info *out) {
    if (!g || !out || index >= g->nvisible) return KILN_ERR_INVALID_ARGUMENT;
    *out = g->desc->params[g->visible[index]].info;
    return KILN_OK;
}

const char *kiln_kernel_name(const kiln_kernel *k) { return k ? k->name : NULL; }
size_t kiln_kernel_arg_count(const kiln_kernel *k) { return k ? k->graph.nvisible : 0; }

kiln_status kiln_kernel_arg_info(const kiln_kernel *k, size_t index, kiln_arg_info *out) {
    return k ? kiln_graph_arg_info(&k->graph, index, out) : KILN_ERR_INVALID_ARGUMENT;
}
