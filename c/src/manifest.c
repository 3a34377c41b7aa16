/* The manifest: strict validation of the JSON document (the checks of
 * kiln/artifact/manifest.py, same messages with the JSON path of the first bad field) and the
 * graph descriptions the runtime needs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "cJSON.h"

enum { SLOT = 8 };

typedef struct reader {
    kiln_error *err;
    const kiln_container *container;
    const cJSON *target_names; /* the "targets" array */
} reader;

#define FAIL(r, ...) kiln_fail((r)->err, KILN_ERR_FORMAT, __VA_ARGS__)

static const char *type_name(int type) {
    switch (type) {
    case cJSON_Object: return "an object";
    case cJSON_Array: return "a list";
    case cJSON_String: return "a string";
    case cJSON_Number: return "an integer";
    default: return "a value";
    }
}

static const char *json_type(const cJSON *v) {
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsObject(v)) return "dict";
    if (cJSON_IsArray(v)) return "list";
    if (cJSON_IsString(v)) return "str";
    if (cJSON_IsNumber(v)) return "a number";
    return "?";
}

static int is_int(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble == (double)(int64_t)v->valuedouble &&
           v->valuedouble > -9007199254740992.0 && v->valuedouble < 9007199254740992.0;
}

/* obj[key] of the given cJSON type (cJSON_Number means an integer), or NULL with err filled */
static const cJSON *field(reader *r, const cJSON *obj, const char *key, const char *path, int type) {
    const char *dot = path[0] ? "." : "";
    if (!cJSON_IsObject(obj)) {
        FAIL(r, "manifest: %s: expected an object", path);
        return NULL;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        FAIL(r, "manifest: %s%s%s: required field is missing", path, dot, key);
        return NULL;
    }
    int ok = (v->type & 0xFF) == type && !(type == cJSON_Number && !is_int(v));
    if (!ok) {
        FAIL(r, "manifest: %s%s%s: expected %s, got %s", path, dot, key, type_name(type), json_type(v));
        return NULL;
    }
    return v;
}

/* Python's str.isidentifier() for ASCII names (non-ASCII letters are accepted as Python does) */
static int is_identifier(const char *s) {
    if (!s[0] || (s[0] >= '0' && s[0] <= '9')) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p >= 0x80))
            return 0;
    return 1;
}

static int has_blob(const reader *r, const char *name) {
    for (size_t i = 0; i < r->container->nblobs; i++)
        if (strcmp(r->container->blobs[i].name, name) == 0) return 1;
    return 0;
}

static int has_target(const reader *r, const char *name) {
    for (const cJSON *t = r->target_names->child; t; t = t->next) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(t, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) return 1;
    }
    return 0;
}

static char *dup(const char *s) {
    char *d = strdup(s);
    return d;
}

static kiln_status read_target(reader *r, const cJSON *t, const char *path, kiln_target *out) {
    static const char *const keys[] = {"name", "kind", "arch", "triple", "cpu", "features"};
    char **dst[] = {&out->name, &out->kind, &out->arch, &out->triple, &out->cpu, &out->features};
    for (int k = 0; k < 6; k++) {
        const cJSON *v = field(r, t, keys[k], path, cJSON_String);
        if (!v) return KILN_ERR_FORMAT;
        if (!(*dst[k] = dup(v->valuestring))) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (strcmp(out->kind, "cpu") != 0 && strcmp(out->kind, "cuda") != 0)
        return FAIL(r, "manifest: %s.kind: unknown target kind '%s'", path, out->kind);
    const cJSON *blobs = field(r, t, "blobs", path, cJSON_Array);
    if (!blobs) return KILN_ERR_FORMAT;
    out->blobs = calloc((size_t)cJSON_GetArraySize(blobs) + 1, sizeof *out->blobs);
    if (!out->blobs) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    int i = 0;
    for (const cJSON *b = blobs->child; b; b = b->next, i++) {
        if (!cJSON_IsString(b) || !has_blob(r, b->valuestring))
            return FAIL(r, "manifest: %s.blobs[%d]: names a blob that is not in the file", path, i);
        if (!(out->blobs[out->nblobs++] = dup(b->valuestring)))
            return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    return KILN_OK;
}

static kiln_status read_entries(reader *r, const cJSON *obj, const char *path, kiln_graph_desc *g) {
    const cJSON *entries = field(r, obj, "entries", path, cJSON_Object);
    if (!entries) return KILN_ERR_FORMAT;
    size_t n = (size_t)cJSON_GetArraySize(entries);
    if (g) {
        g->entry_targets = calloc(n + 1, sizeof *g->entry_targets);
        g->entry_symbols = calloc(n + 1, sizeof *g->entry_symbols);
        if (!g->entry_targets || !g->entry_symbols)
            return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (const cJSON *e = entries->child; e; e = e->next) {
        if (!has_target(r, e->string))
            return FAIL(r, "manifest: %s.entries.%s: names a target that is not in the file", path, e->string);
        if (!cJSON_IsString(e) || !is_identifier(e->valuestring))
            return FAIL(r, "manifest: %s.entries.%s: expected a symbol name", path, e->string);
        if (g) {
            g->entry_targets[g->nentries] = dup(e->string);
            g->entry_symbols[g->nentries] = dup(e->valuestring);
            if (!g->entry_targets[g->nentries++] || !g->entry_symbols[g->nentries - 1])
                return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        }
    }
    return KILN_OK;
}

static int access_from_name(const char *s) {
    static const char *const names[] = {"none", "read", "write", "readwrite"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

static kiln_status read_shape(reader *r, const cJSON *p, const char *where, kiln_param *out) {
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(p, "shape");
    if (!shape || cJSON_IsNull(shape)) return KILN_OK;
    if (!cJSON_IsArray(shape))
        return FAIL(r, "manifest: %s.shape: expected a list, got %s", where, json_type(shape));
    if (out->info.kind != KILN_ARRAY || cJSON_GetArraySize(shape) != out->info.ndim)
        return FAIL(r, "manifest: %s.shape: expected a list of %d dimensions", where, out->info.ndim);
    out->info.has_shape = 1;
    int j = 0;
    for (const cJSON *d = shape->child; d; d = d->next, j++) {
        out->info.shape_size[j] = -1;
        if (cJSON_IsNull(d)) continue;
        if (cJSON_IsString(d) && is_identifier(d->valuestring)) {
            if (!(out->info.shape_symbol[j] = dup(d->valuestring)))
                return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        } else if (is_int(d) && d->valuedouble >= 0) {
            out->info.shape_size[j] = (int64_t)d->valuedouble;
        } else {
            return FAIL(r, "manifest: %s.shape[%d]: expected a size, a symbol name or null", where, j);
        }
    }
    return KILN_OK;
}

/* params of a kernel (graph == 0, out may be NULL) or a graph; *nout params, *block bytes */
static kiln_status read_params(reader *r, const cJSON *obj, const char *path, int graph,
                               kiln_param **out, size_t *nout, size_t *block) {
    const cJSON *params = field(r, obj, "params", path, cJSON_Array);
    if (!params) return KILN_ERR_FORMAT;
    size_t n = (size_t)cJSON_GetArraySize(params);
    kiln_param *ps = calloc(n + 1, sizeof *ps);
    if (!ps) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    *out = ps;
    *nout = 0;
    int64_t offset = 0;
    int i = 0;
    char where[320];
    for (const cJSON *p = params->child; p; p = p->next, i++) {
        snprintf(where, sizeof where, "%s.params[%d]", path, i);
        const cJSON *name = field(r, p, "name", where, cJSON_String);
        const cJSON *kind = name ? field(r, p, "kind", where, cJSON_String) : NULL;
        const cJSON *dtype = kind ? field(r, p, "dtype", where, cJSON_String) : NULL;
        const cJSON *ndim = dtype ? field(r, p, "ndim", where, cJSON_Number) : NULL;
        const cJSON *off = ndim ? field(r, p, "offset", where, cJSON_Number) : NULL;
        const cJSON *access = off ? field(r, p, "access", where, cJSON_String) : NULL;
        if (!access) return KILN_ERR_FORMAT;
        for (size_t k = 0; k < *nout; k++)
            if (strcmp(ps[k].info.name, name->valuestring) == 0)
                return FAIL(r, "manifest: %s.name: duplicate parameter '%s'", where, name->valuestring);
        kiln_param *q = &ps[(*nout)++];
        if (!(q->info.name = dup(name->valuestring))) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        int is_array = strcmp(kind->valuestring, "ndarray") == 0;
        if (!is_array && strcmp(kind->valuestring, "scalar") != 0)
            return FAIL(r, "manifest: %s.kind: expected 'scalar' or 'ndarray', got '%s'", where, kind->valuestring);
        int dt = kiln_dtype_from_name(dtype->valuestring);
        if (dt < 0) return FAIL(r, "manifest: %s.dtype: unknown dtype '%s'", where, dtype->valuestring);
        double nd = ndim->valuedouble;
        if ((!is_array && nd != 0) || (is_array && !(nd >= 1 && nd <= KILN_MAX_NDIM)))
            return FAIL(r, "manifest: %s.ndim: invalid ndim %.0f for a %s", where, nd, kind->valuestring);
        if (off->valuedouble != (double)offset)
            return FAIL(r, "manifest: %s.offset: expected %lld (packed layout), got %.0f", where,
                        (long long)offset, off->valuedouble);
        int acc = access_from_name(access->valuestring);
        if (acc < 0)
            return FAIL(r, "manifest: %s.access: expected one of ('none', 'read', 'write', 'readwrite'), got '%s'",
                        where, access->valuestring);
        q->info.kind = is_array ? KILN_ARRAY : KILN_SCALAR;
        q->info.dtype = (kiln_dtype)dt;
        q->info.ndim = (int)nd;
        q->info.access = (kiln_access)acc;
        q->offset = offset;
        offset += SLOT * (1 + 2 * (int64_t)nd);   /* an array: pointer, extents, strides */
        if (graph) {
            kiln_status st = read_shape(r, p, where, q);
            if (st != KILN_OK) return st;
        }
    }
    *block = (size_t)offset;
    return KILN_OK;
}

static void free_params(kiln_param *ps, size_t n) {
    for (size_t i = 0; ps && i < n; i++) {
        free((char *)ps[i].info.name);
        for (int k = 0; k < KILN_MAX_NDIM; k++) free((char *)ps[i].info.shape_symbol[k]);
    }
    free(ps);
}

typedef struct kernel_sig {
    const char *name;
    kiln_param *params;
    size_t nparams;
} kernel_sig;

static kiln_status read_kernels(reader *r, const cJSON *doc, kernel_sig **out, size_t *nout) {
    const cJSON *kernels = field(r, doc, "kernels", "", cJSON_Object);
    if (!kernels) return KILN_ERR_FORMAT;
    *out = calloc((size_t)cJSON_GetArraySize(kernels) + 1, sizeof **out);
    if (!*out) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    char path[300];
    for (const cJSON *k = kernels->child; k; k = k->next) {
        snprintf(path, sizeof path, "kernels.%s", k->string);
        kernel_sig *sig = &(*out)[(*nout)++];
        sig->name = k->string;
        size_t block;
        if (!field(r, k, "display_name", path, cJSON_String)) return KILN_ERR_FORMAT;
        kiln_status st = read_params(r, k, path, 0, &sig->params, &sig->nparams, &block);
        if (st == KILN_OK) st = read_entries(r, k, path, NULL);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

static const kernel_sig *find_kernel(const kernel_sig *ks, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(ks[i].name, name) == 0) return &ks[i];
    return NULL;
}

static kiln_status read_binding(reader *r, const cJSON *b, const char *bw, const kiln_param *kp,
                                const kiln_graph_desc *g) {
    const cJSON *arg = cJSON_IsObject(b) ? cJSON_GetObjectItemCaseSensitive(b, "arg") : NULL;
    if (arg) {
        if (!cJSON_IsString(arg)) return FAIL(r, "manifest: %s.arg: expected a string, got %s", bw, json_type(arg));
        const kiln_param *gp = NULL;
        for (size_t i = 0; i < g->nparams; i++)
            if (strcmp(g->params[i].info.name, arg->valuestring) == 0) gp = &g->params[i];
        if (!gp) return FAIL(r, "manifest: %s.arg: unknown graph parameter '%s'", bw, arg->valuestring);
        if (gp->info.kind != kp->info.kind || gp->info.dtype != kp->info.dtype || gp->info.ndim != kp->info.ndim)
            return FAIL(r, "manifest: %s.arg: graph parameter '%s' does not match kernel parameter '%s'", bw,
                        arg->valuestring, kp->info.name);
        return KILN_OK;
    }
    if (!cJSON_IsObject(b)) return FAIL(r, "manifest: %s: expected an object", bw);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(b, "const");
    if (!c) return FAIL(r, "manifest: %s.const: required field is missing", bw);
    if (!cJSON_IsNumber(c) && !cJSON_IsBool(c))
        return FAIL(r, "manifest: %s.const: expected a boolean or an integer or a number, got %s", bw, json_type(c));
    const cJSON *dt = field(r, b, "dtype", bw, cJSON_String);
    if (!dt) return KILN_ERR_FORMAT;
    if (kp->info.kind != KILN_SCALAR || kiln_dtype_from_name(dt->valuestring) != (int)kp->info.dtype)
        return FAIL(r, "manifest: %s.dtype: constant does not match kernel parameter '%s'", bw, kp->info.name);
    return KILN_OK;
}

static kiln_status read_dispatches(reader *r, const cJSON *gj, const char *path, const kiln_graph_desc *g,
                                   const kernel_sig *ks, size_t nk) {
    const cJSON *ds = field(r, gj, "dispatches", path, cJSON_Array);
    if (!ds) return KILN_ERR_FORMAT;
    char where[360], bw[400];
    int i = 0;
    for (const cJSON *d = ds->child; d; d = d->next, i++) {
        snprintf(where, sizeof where, "%s.dispatches[%d]", path, i);
        const cJSON *kn = field(r, d, "kernel", where, cJSON_String);
        if (!kn) return KILN_ERR_FORMAT;
        const kernel_sig *k = find_kernel(ks, nk, kn->valuestring);
        if (!k) return FAIL(r, "manifest: %s.kernel: unknown kernel '%s'", where, kn->valuestring);
        const cJSON *bs = field(r, d, "bindings", where, cJSON_Array);
        if (!bs) return KILN_ERR_FORMAT;
        if ((size_t)cJSON_GetArraySize(bs) != k->nparams)
            return FAIL(r, "manifest: %s.bindings: kernel '%s' takes %zu arguments, got %d", where, k->name,
                        k->nparams, cJSON_GetArraySize(bs));
        int j = 0;
        for (const cJSON *b = bs->child; b; b = b->next, j++) {
            snprintf(bw, sizeof bw, "%s.bindings[%d]", where, j);
            kiln_status st = read_binding(r, b, bw, &k->params[j], g);
            if (st != KILN_OK) return st;
        }
    }
    return KILN_OK;
}

static kiln_status read_graphs(reader *r, const cJSON *doc, const kernel_sig *ks, size_t nk, kiln_manifest *m) {
    const cJSON *graphs = field(r, doc, "graphs", "", cJSON_Object);
    if (!graphs) return KILN_ERR_FORMAT;
    m->graphs = calloc((size_t)cJSON_GetArraySize(graphs) + 1, sizeof *m->graphs);
    if (!m->graphs) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    char path[300];
    for (const cJSON *gj = graphs->child; gj; gj = gj->next) {
        snprintf(path, sizeof path, "graphs.%s", gj->string);
        kiln_graph_desc *g = &m->graphs[m->ngraphs++];
        if (!(g->name = dup(gj->string))) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        kiln_status st = read_params(r, gj, path, 1, &g->params, &g->nparams, &g->block_size);
        if (st == KILN_OK) st = read_dispatches(r, gj, path, g, ks, nk);
        if (st == KILN_OK) st = read_entries(r, gj, path, g);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

static kiln_status read_top(reader *r, const cJSON *doc, kiln_manifest *m) {
    const cJSON *format = field(r, doc, "format", "", cJSON_String);
    if (!format) return KILN_ERR_FORMAT;
    if (strcmp(format->valuestring, "kiln") != 0) return FAIL(r, "manifest: format: expected 'kiln'");
    const cJSON *ver = field(r, doc, "format_version", "", cJSON_Array);
    if (!ver) return KILN_ERR_FORMAT;
    if (cJSON_GetArraySize(ver) != 2 || !is_int(ver->child) || !is_int(ver->child->next))
        return FAIL(r, "manifest: format_version: expected [major, minor]");
    m->format_major = (int)ver->child->valuedouble;
    m->format_minor = (int)ver->child->next->valuedouble;
    if (!field(r, doc, "kiln_version", "", cJSON_String) || !field(r, doc, "created", "", cJSON_String))
        return KILN_ERR_FORMAT;
    const cJSON *targets = field(r, doc, "targets", "", cJSON_Array);
    if (!targets) return KILN_ERR_FORMAT;
    r->target_names = targets;
    size_t nt = (size_t)cJSON_GetArraySize(targets);
    if (nt == 0) return FAIL(r, "manifest: targets: the file holds no compiled target");
    m->targets = calloc(nt, sizeof *m->targets);
    if (!m->targets) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    char path[64];
    for (const cJSON *t = targets->child; t; t = t->next) {
        snprintf(path, sizeof path, "targets[%zu]", m->ntargets);
        kiln_status st = read_target(r, t, path, &m->targets[m->ntargets++]);
        if (st != KILN_OK) return st;
        for (size_t k = 0; k + 1 < m->ntargets; k++)
            if (strcmp(m->targets[k].name, m->targets[m->ntargets - 1].name) == 0)
                return FAIL(r, "manifest: targets: duplicate target names");
    }
    return KILN_OK;
}

kiln_status kiln_manifest_parse(const cJSON *doc, const kiln_container *container, kiln_manifest *out,
                                kiln_error *err) {
    memset(out, 0, sizeof *out);
    reader r = {err, container, NULL};
    kernel_sig *ks = NULL;
    size_t nk = 0;
    kiln_status st = read_top(&r, doc, out);
    if (st == KILN_OK) st = read_kernels(&r, doc, &ks, &nk);
    if (st == KILN_OK) st = read_graphs(&r, doc, ks, nk, out);
    if (st == KILN_OK) {
        const cJSON *exported = field(&r, doc, "exported_kernels", "", cJSON_Object);
        if (!exported) st = KILN_ERR_FORMAT;
        for (const cJSON *e = exported ? exported->child : NULL; e && st == KILN_OK; e = e->next)
            if (!cJSON_IsString(e) || !find_kernel(ks, nk, e->valuestring))
                st = FAIL(&r, "manifest: exported_kernels.%s: names unknown kernel", e->string);
    }
    for (size_t i = 0; i < nk; i++) free_params(ks[i].params, ks[i].nparams);
    free(ks);
    if (st != KILN_OK) kiln_manifest_free(out);
    return st;
}

void kiln_manifest_free(kiln_manifest *m) {
    for (size_t i = 0; m->targets && i < m->ntargets; i++) {
        kiln_target *t = &m->targets[i];
        free(t->name);
        free(t->kind);
        free(t->arch);
        free(t->triple);
        free(t->cpu);
        free(t->features);
        for (size_t k = 0; k < t->nblobs; k++) free(t->blobs[k]);
        free(t->blobs);
    }
    free(m->targets);
    for (size_t i = 0; m->graphs && i < m->ngraphs; i++) {
        kiln_graph_desc *g = &m->graphs[i];
        free(g->name);
        free_params(g->params, g->nparams);
        for (size_t k = 0; k < g->nentries; k++) {
            free(g->entry_targets[k]);
            free(g->entry_symbols[k]);
        }
        free(g->entry_targets);
        free(g->entry_symbols);
    }
    free(m->graphs);
    memset(m, 0, sizeof *m);
}
