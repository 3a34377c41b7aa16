/* The manifest: strict validation of the JSON document (the checks of
 * kiln/artifact/manifest.py, same messages with the JSON path of the first bad field) and the
 * graph descriptions the runtime needs. */
#include <errno.h>
#include <math.h>
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
    const kiln_manifest *m;    /* fields, read before kernels and graphs */
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

const kiln_field_desc *kiln_manifest_field(const kiln_manifest *m, const char *name) {
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, name) == 0) return &m->fields[i];
    return NULL;
}

/* a hidden parameter `@name` carries a recorded field of its dtype and rank; `@rng` is u32[] */
static kiln_status check_hidden_param(reader *r, const kiln_param *q, const char *where) {
    const kiln_arg_info *a = &q->info;
    if (strcmp(a->name, "@rng") == 0) {
        if (a->kind != KILN_ARRAY || a->dtype != KILN_U32 || a->ndim != 1)
            return FAIL(r, "manifest: %s: @rng must be a 1-D u32 array", where);
        return KILN_OK;
    }
    const kiln_field_desc *f = kiln_manifest_field(r->m, a->name + 1);
    if (!f) return FAIL(r, "manifest: %s.name: hidden parameter '%s' names no field of the file", where, a->name);
    int storage_ndim = (f->ndim ? f->ndim : 1) + f->element_ndim;
    if (a->kind != KILN_ARRAY || a->dtype != f->dtype || a->ndim != storage_ndim)
        return FAIL(r, "manifest: %s: does not match field '%s' (%s, %d-D)", where, f->name, kiln_dtype_name(f->dtype),
                    storage_ndim);
    return KILN_OK;
}

/* the optional element_shape of a parameter: 1 or 2 sizes in 1..4, fewer than ndim for arrays */
static kiln_status read_element_shape(reader *r, const cJSON *p, const char *where, kiln_param *q) {
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(p, "element_shape");
    if (!es || cJSON_IsNull(es)) return KILN_OK;
    if (!field(r, p, "element_shape", where, cJSON_Array)) return KILN_ERR_FORMAT;
    int n = cJSON_GetArraySize(es), ok = n >= 1 && n <= 2 && !(q->info.kind == KILN_ARRAY && n >= q->info.ndim);
    int k = 0;
    for (const cJSON *d = es->child; ok && d; d = d->next, k++) {
        ok = is_int(d) && d->valuedouble >= 1 && d->valuedouble <= 4;
        if (ok) q->element_shape[k] = (int)d->valuedouble;
    }
    if (!ok)
        return FAIL(r, "manifest: %s.element_shape: expected 1 or 2 sizes in 1..4 (fewer than ndim=%d for arrays)",
                    where, q->info.ndim);
    q->element_ndim = n;
    return KILN_OK;
}

/* a vector argument `g` is the consecutive scalar params `g.0`, `g.1`, ... with its element_shape */
static kiln_status check_vector_groups(reader *r, const kiln_param *ps, size_t n, const char *path) {
    for (size_t i = 0; i < n;) {
        const kiln_param *p = &ps[i];
        if (p->info.kind != KILN_SCALAR || !p->element_ndim) {
            i++;
            continue;
        }
        size_t count = (size_t)p->element_shape[0] * (size_t)(p->element_ndim == 2 ? p->element_shape[1] : 1);
        const char *dot = strrchr(p->info.name, '.');
        size_t base = dot ? (size_t)(dot - p->info.name) : strlen(p->info.name);
        int ok = i + count <= n;
        char want[300];
        for (size_t k = 0; ok && k < count; k++) {
            const kiln_param *q = &ps[i + k];
            snprintf(want, sizeof want, "%.*s.%zu", (int)base, p->info.name, k);
            ok = q->info.kind == KILN_SCALAR && q->element_ndim == p->element_ndim &&
                 memcmp(q->element_shape, p->element_shape, sizeof q->element_shape) == 0 &&
                 strcmp(q->info.name, want) == 0;
        }
        if (!ok) {
            char shape[32];
            if (p->element_ndim == 2) snprintf(shape, sizeof shape, "[%d, %d]", p->element_shape[0], p->element_shape[1]);
            else snprintf(shape, sizeof shape, "[%d]", p->element_shape[0]);
            return FAIL(r, "manifest: %s.params[%zu]: vector argument '%.*s' needs %zu scalar params %.*s.0..%.*s.%zu of "
                        "element_shape %s", path, i, (int)base, p->info.name, count, (int)base, p->info.name, (int)base,
                        p->info.name, count - 1, shape);
        }
        i += count;
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
        kiln_status es = read_element_shape(r, p, where, q);
        if (es != KILN_OK) return es;
        if (q->info.name[0] == '@') {
            kiln_status st = check_hidden_param(r, q, where);
            if (st != KILN_OK) return st;
        }
    }
    *block = (size_t)offset;
    return check_vector_groups(r, ps, *nout, path);
}

static void free_params(kiln_param *ps, size_t n) {
    for (size_t i = 0; ps && i < n; i++) {
        free((char *)ps[i].info.name);
        for (int k = 0; k < KILN_MAX_NDIM; k++) free((char *)ps[i].info.shape_symbol[k]);
    }
    free(ps);
}

static kiln_status read_kernels(reader *r, const cJSON *doc, kiln_manifest *m) {
    const cJSON *kernels = field(r, doc, "kernels", "", cJSON_Object);
    if (!kernels) return KILN_ERR_FORMAT;
    m->kernels = calloc((size_t)cJSON_GetArraySize(kernels) + 1, sizeof *m->kernels);
    if (!m->kernels) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    char path[300];
    for (const cJSON *k = kernels->child; k; k = k->next) {
        snprintf(path, sizeof path, "kernels.%s", k->string);
        kiln_graph_desc *kd = &m->kernels[m->nkernels++];
        if (!(kd->name = dup(k->string))) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        const cJSON *display = field(r, k, "display_name", path, cJSON_String);
        if (!display) return KILN_ERR_FORMAT;
        if (!(kd->display_name = dup(display->valuestring)))
            return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        kiln_status st = read_params(r, k, path, 0, &kd->params, &kd->nparams, &kd->block_size);
        if (st == KILN_OK) st = read_entries(r, k, path, kd);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

static int find_kernel(const kiln_manifest *m, const char *name) {
    for (size_t i = 0; i < m->nkernels; i++)
        if (strcmp(m->kernels[i].name, name) == 0) return (int)i;
    return -1;
}

static int find_param(const kiln_graph_desc *g, const char *name) {
    for (size_t i = 0; i < g->nparams; i++)
        if (strcmp(g->params[i].info.name, name) == 0) return (int)i;
    return -1;
}

/* a constant's value in its slot, as struct.pack(SCALAR_FORMAT[dtype], value) */
static void const_slot(const cJSON *c, kiln_dtype dt, uint8_t out[8]) {
    double v = cJSON_IsBool(c) ? (cJSON_IsTrue(c) ? 1.0 : 0.0) : c->valuedouble;
    memset(out, 0, 8);
    if (dt == KILN_F64) {
        memcpy(out, &v, 8);
    } else if (dt == KILN_F32) {
        float f = (float)v;
        memcpy(out, &f, 4);
    } else if (dt == KILN_F16) {
        uint16_t h = kiln_f64_to_f16(v);
        memcpy(out, &h, 2);
    } else {
        uint64_t u = v < 0 ? (uint64_t)(int64_t)v : (uint64_t)v;
        memcpy(out, &u, kiln_dtype_size(dt));      /* little-endian: the low bytes */
    }
}

static kiln_status read_binding(reader *r, const cJSON *b, const char *bw, const kiln_param *kp,
                                const kiln_graph_desc *g, kiln_binding *out) {
    const cJSON *fj = cJSON_IsObject(b) ? cJSON_GetObjectItemCaseSensitive(b, "field") : NULL;
    if (fj) {
        if (!cJSON_IsString(fj)) return FAIL(r, "manifest: %s.field: expected a string, got %s", bw, json_type(fj));
        char hidden[300];
        snprintf(hidden, sizeof hidden, "@%s", fj->valuestring);
        int gp = find_param(g, hidden);
        if (!kiln_manifest_field(r->m, fj->valuestring) || gp < 0)
            return FAIL(r, "manifest: %s.field: unknown field '%s' (or no graph parameter carries it)", bw,
                        fj->valuestring);
        if (strcmp(kp->info.name, hidden) != 0)
            return FAIL(r, "manifest: %s.field: kernel parameter '%s' does not carry field '%s'", bw, kp->info.name,
                        fj->valuestring);
        out->kind = KILN_BIND_FIELD;
        out->param = (size_t)gp;
        return KILN_OK;
    }
    const cJSON *arg = cJSON_IsObject(b) ? cJSON_GetObjectItemCaseSensitive(b, "arg") : NULL;
    if (arg) {
        if (!cJSON_IsString(arg)) return FAIL(r, "manifest: %s.arg: expected a string, got %s", bw, json_type(arg));
        int gi = find_param(g, arg->valuestring);
        if (gi < 0) return FAIL(r, "manifest: %s.arg: unknown graph parameter '%s'", bw, arg->valuestring);
        const kiln_param *gp = &g->params[gi];
        if (gp->info.kind != kp->info.kind || gp->info.dtype != kp->info.dtype || gp->info.ndim != kp->info.ndim)
            return FAIL(r, "manifest: %s.arg: graph parameter '%s' does not match kernel parameter '%s'", bw,
                        arg->valuestring, kp->info.name);
        out->kind = KILN_BIND_ARG;
        out->param = (size_t)gi;
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
    out->kind = KILN_BIND_CONST;
    const_slot(c, kp->info.dtype, out->value);
    return KILN_OK;
}

static kiln_status read_dispatches(reader *r, const cJSON *gj, const char *path, kiln_graph_desc *g,
                                   const kiln_manifest *m) {
    const cJSON *ds = field(r, gj, "dispatches", path, cJSON_Array);
    if (!ds) return KILN_ERR_FORMAT;
    g->dispatches = calloc((size_t)cJSON_GetArraySize(ds) + 1, sizeof *g->dispatches);
    if (!g->dispatches) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    char where[360], bw[400];
    int i = 0;
    for (const cJSON *d = ds->child; d; d = d->next, i++) {
        snprintf(where, sizeof where, "%s.dispatches[%d]", path, i);
        const cJSON *kn = field(r, d, "kernel", where, cJSON_String);
        if (!kn) return KILN_ERR_FORMAT;
        int ki = find_kernel(m, kn->valuestring);
        if (ki < 0) return FAIL(r, "manifest: %s.kernel: unknown kernel '%s'", where, kn->valuestring);
        const kiln_graph_desc *k = &m->kernels[ki];
        const cJSON *bs = field(r, d, "bindings", where, cJSON_Array);
        if (!bs) return KILN_ERR_FORMAT;
        if ((size_t)cJSON_GetArraySize(bs) != k->nparams)
            return FAIL(r, "manifest: %s.bindings: kernel '%s' takes %zu arguments, got %d", where, k->name,
                        k->nparams, cJSON_GetArraySize(bs));
        kiln_dispatch *out = &g->dispatches[g->ndispatches++];
        out->kernel = (size_t)ki;
        if (!(out->bindings = calloc(k->nparams + 1, sizeof *out->bindings)))
            return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        int j = 0;
        for (const cJSON *b = bs->child; b; b = b->next, j++) {
            snprintf(bw, sizeof bw, "%s.bindings[%d]", where, j);
            kiln_status st = read_binding(r, b, bw, &k->params[j], g, &out->bindings[j]);
            if (st != KILN_OK) return st;
        }
    }
    return KILN_OK;
}

static kiln_status read_graphs(reader *r, const cJSON *doc, kiln_manifest *m) {
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
        if (st == KILN_OK) st = read_dispatches(r, gj, path, g, m);
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

static kiln_status read_exported(reader *r, const cJSON *doc, kiln_manifest *m) {
    const cJSON *exported = field(r, doc, "exported_kernels", "", cJSON_Object);
    if (!exported) return KILN_ERR_FORMAT;
    size_t n = (size_t)cJSON_GetArraySize(exported);
    m->exported_names = calloc(n + 1, sizeof *m->exported_names);
    m->exported_kernels = calloc(n + 1, sizeof *m->exported_kernels);
    if (!m->exported_names || !m->exported_kernels) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    for (const cJSON *e = exported->child; e; e = e->next) {
        int ki = cJSON_IsString(e) ? find_kernel(m, e->valuestring) : -1;
        if (ki < 0) {
            if (cJSON_IsString(e))
                return FAIL(r, "manifest: exported_kernels.%s: names unknown kernel '%s'", e->string, e->valuestring);
            return FAIL(r, "manifest: exported_kernels.%s: names unknown kernel", e->string);
        }
        if (!(m->exported_names[m->nexported] = dup(e->string)))
            return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        m->exported_kernels[m->nexported++] = (size_t)ki;
    }
    return KILN_OK;
}

/* the sizes of a field's "shape" or "element_shape": a list of integers >= 1 */
static kiln_status read_sizes(reader *r, const cJSON *f, const char *key, const char *path, int64_t *dims,
                              int room, int *n) {
    const cJSON *v = field(r, f, key, path, cJSON_Array);
    if (!v) return KILN_ERR_FORMAT;
    *n = 0;
    for (const cJSON *d = v->child; d; d = d->next) {
        if (!is_int(d) || d->valuedouble < 1) return FAIL(r, "manifest: %s.%s: expected a list of sizes >= 1", path, key);
        if (*n < room) dims[*n] = (int64_t)d->valuedouble;
        (*n)++;
    }
    return KILN_OK;
}

static kiln_status read_fields(reader *r, const cJSON *doc, kiln_manifest *m) {
    if (!cJSON_GetObjectItemCaseSensitive(doc, "fields")) return KILN_OK;
    const cJSON *fields = field(r, doc, "fields", "", cJSON_Object);
    if (!fields) return KILN_ERR_FORMAT;
    m->fields = calloc((size_t)cJSON_GetArraySize(fields) + 1, sizeof *m->fields);
    if (!m->fields) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    char path[300];
    for (const cJSON *f = fields->child; f; f = f->next) {
        snprintf(path, sizeof path, "fields.%s", f->string);
        kiln_field_desc *fd = &m->fields[m->nfields++];
        if (!(fd->name = dup(f->string))) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        if (!is_identifier(f->string)) return FAIL(r, "manifest: %s: a field name must be an identifier", path);
        const cJSON *dt = field(r, f, "dtype", path, cJSON_String);
        if (!dt) return KILN_ERR_FORMAT;
        int d = kiln_dtype_from_name(dt->valuestring);
        if (d < 0) return FAIL(r, "manifest: %s.dtype: unknown dtype '%s'", path, dt->valuestring);
        fd->dtype = (kiln_dtype)d;
        int64_t elem[KILN_MAX_NDIM];
        kiln_status st = read_sizes(r, f, "shape", path, fd->shape, KILN_MAX_NDIM, &fd->ndim);
        if (st == KILN_OK) st = read_sizes(r, f, "element_shape", path, elem, KILN_MAX_NDIM, &fd->element_ndim);
        if (st != KILN_OK) return st;
        const cJSON *init = cJSON_GetObjectItemCaseSensitive(f, "init");
        if (init && !cJSON_IsNull(init) && !field(r, f, "init", path, cJSON_String)) return KILN_ERR_FORMAT;
        if ((fd->ndim ? fd->ndim : 1) + fd->element_ndim > KILN_MAX_NDIM)
            return FAIL(r, "manifest: %s: more than %d dimensions", path, KILN_MAX_NDIM);
        for (int k = 0; k < fd->element_ndim; k++) fd->shape[fd->ndim + k] = elem[k];
        if (init && !cJSON_IsNull(init)) {
            if (!has_blob(r, init->valuestring))
                return FAIL(r, "manifest: %s.init: names a blob that is not in the file: '%s'", path, init->valuestring);
            if (!(fd->init = dup(init->valuestring))) return kiln_fail(r->err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        }
    }
    return KILN_OK;
}

/* The exact text of the top-level "random_seed" number (cJSON keeps doubles, which lose seeds
 * above 2**53): scan the manifest's JSON for the key at depth 1, outside strings. */
static int raw_top_level_number(const char *json, size_t size, const char *key, char *out, size_t out_size) {
    int depth = 0;
    size_t klen = strlen(key);
    for (size_t i = 0; i < size; i++) {
        char c = json[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < size && json[j] != '"') j += json[j] == '\\' ? 2 : 1;
            int match = depth == 1 && j - i - 1 == klen && memcmp(json + i + 1, key, klen) == 0;
            i = j;
            if (!match) continue;
            size_t k = i + 1;
            while (k < size && (json[k] == ' ' || json[k] == '\n' || json[k] == '\t' || json[k] == '\r')) k++;
            if (k >= size || json[k] != ':') continue;
            k++;
            while (k < size && (json[k] == ' ' || json[k] == '\n' || json[k] == '\t' || json[k] == '\r')) k++;
            size_t n = 0;
            while (k < size && n + 1 < out_size && ((json[k] >= '0' && json[k] <= '9') || json[k] == '-'))
                out[n++] = json[k++];
            out[n] = 0;
            return n > 0;
        }
        if (c == '{' || c == '[') depth++;
        if (c == '}' || c == ']') depth--;
    }
    return 0;
}

static kiln_status read_seed(reader *r, const cJSON *doc, kiln_manifest *m) {
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(doc, "random_seed");
    if (!seed) return KILN_OK;
    double v = cJSON_IsNumber(seed) ? seed->valuedouble : 0.5;
    if (!isfinite(v) || v != floor(v)) {          /* not an integer: field() says what it is */
        field(r, doc, "random_seed", "", cJSON_Number);
        return KILN_ERR_FORMAT;
    }
    char text[40] = "";
    int have = raw_top_level_number(r->container->manifest_json, r->container->manifest_size, "random_seed", text,
                                    sizeof text);
    if (have && text[0] != '-') {
        errno = 0;
        m->random_seed = strtoull(text, NULL, 10);
        if (errno == 0) return KILN_OK;
    } else if (!have && v >= 0 && v < 18446744073709551616.0) {
        m->random_seed = (uint64_t)v;
        return KILN_OK;
    }
    if (!have) snprintf(text, sizeof text, "%.0f", v);
    return FAIL(r, "manifest: random_seed: expected an integer in [0, 2**64), got %s", text);
}

kiln_status kiln_manifest_parse(const cJSON *doc, const kiln_container *container, kiln_manifest *out,
                                kiln_error *err) {
    memset(out, 0, sizeof *out);
    kiln_error scratch;
    reader r = {err ? err : &scratch, container, NULL, out};
    kiln_status st = read_top(&r, doc, out);
    if (st == KILN_OK) st = read_fields(&r, doc, out);
    if (st == KILN_OK) st = read_kernels(&r, doc, out);
    if (st == KILN_OK) st = read_graphs(&r, doc, out);
    if (st == KILN_OK) st = read_exported(&r, doc, out);
    if (st == KILN_OK) st = kiln_manifest_parse_cuda(doc, out, r.err);
    if (st == KILN_OK) st = read_seed(&r, doc, out);
    if (st != KILN_OK) kiln_manifest_free(out);
    return st;
}

static void free_desc(kiln_graph_desc *g) {
    free(g->name);
    free(g->display_name);
    free_params(g->params, g->nparams);
    for (size_t k = 0; k < g->nentries; k++) {
        free(g->entry_targets[k]);
        free(g->entry_symbols[k]);
    }
    free(g->entry_targets);
    free(g->entry_symbols);
    for (size_t k = 0; g->dispatches && k < g->ndispatches; k++) free(g->dispatches[k].bindings);
    free(g->dispatches);
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
    for (size_t i = 0; m->graphs && i < m->ngraphs; i++) free_desc(&m->graphs[i]);
    free(m->graphs);
    for (size_t i = 0; m->kernels && i < m->nkernels; i++) free_desc(&m->kernels[i]);
    free(m->kernels);
    for (size_t i = 0; m->exported_names && i < m->nexported; i++) free(m->exported_names[i]);
    free(m->exported_names);
    free(m->exported_kernels);
    for (size_t i = 0; m->fields && i < m->nfields; i++) {
        free(m->fields[i].name);
        free(m->fields[i].init);
    }
    free(m->fields);
    kiln_cuda_section_free(&m->cuda);
    memset(m, 0, sizeof *m);
}
