/* The manifest's optional top-level "cuda" section (docs/format.md, "CUDA targets"): validated
 * field by field whenever present, with the messages of kiln/artifact/manifest.py
 * (_Reader.cuda_section), and kept for the CUDA runtime (cuda.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "cJSON.h"

#define FAIL(err, ...) kiln_fail((err), KILN_ERR_FORMAT, __VA_ARGS__)
#define OOM(err) kiln_fail((err), KILN_ERR_OUT_OF_MEMORY, "out of memory")

static const char *const OPS[] = {"const", "arg", "shape", "int", "+", "-", "*", "//", "%", "min", "max"};
static const int OPERANDS[] = {1, 1, 2, 1, 2, 2, 2, 2, 2, 2, 2};
static const char SORTED_OPS[] = "['%', '*', '+', '-', '//', 'arg', 'const', 'int', 'max', 'min', 'shape']";

static int is_int(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble == (double)(int64_t)v->valuedouble &&
           v->valuedouble > -9007199254740992.0 && v->valuedouble < 9007199254740992.0;
}

static const char *type_of(const cJSON *v) {
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsObject(v)) return "dict";
    if (cJSON_IsArray(v)) return "list";
    if (cJSON_IsString(v)) return "str";
    if (cJSON_IsNumber(v)) return is_int(v) ? "int" : "float";
    return "NoneType";
}

/* Python's repr() of a short JSON value, for messages */
static void repr(const cJSON *v, char *out, size_t n) {
    if (cJSON_IsString(v)) snprintf(out, n, "'%s'", v->valuestring);
    else if (cJSON_IsBool(v)) snprintf(out, n, "%s", cJSON_IsTrue(v) ? "True" : "False");
    else if (is_int(v)) snprintf(out, n, "%lld", (long long)v->valuedouble);
    else if (cJSON_IsNumber(v)) snprintf(out, n, "%g", v->valuedouble);
    else if (cJSON_IsNull(v)) snprintf(out, n, "None");
    else snprintf(out, n, "%s", cJSON_IsArray(v) ? "[...]" : "{...}");
}

/* obj[key] of a JSON type (cJSON_Number: an integer), or NULL with err filled */
static const cJSON *get(kiln_error *err, const cJSON *obj, const char *key, const char *path, int type) {
    if (!cJSON_IsObject(obj)) {
        FAIL(err, "manifest: %s: expected an object", path);
        return NULL;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        FAIL(err, "manifest: %s.%s: required field is missing", path, key);
        return NULL;
    }
    static const char *const names[] = {"an integer", "a string", "a list", "an object"};
    int which = type == cJSON_Number ? 0 : type == cJSON_String ? 1 : type == cJSON_Array ? 2 : 3;
    int ok = (v->type & 0xFF) == type && !(type == cJSON_Number && !is_int(v));
    if (!ok) {
        FAIL(err, "manifest: %s.%s: expected %s, got %s", path, key, names[which], type_of(v));
        return NULL;
    }
    return v;
}

static int is_identifier(const char *s) {
    if (!s[0] || (s[0] >= '0' && s[0] <= '9')) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p >= 0x80))
            return 0;
    return 1;
}

static int find_param(const kiln_graph_desc *k, const char *name) {
    for (size_t i = 0; i < k->nparams; i++)
        if (strcmp(k->params[i].info.name, name) == 0) return (int)i;
    return -1;
}

static void free_expr(kiln_expr *e) {
    if (!e) return;
    free_expr(e->a);
    free_expr(e->b);
    free(e);
}

static kiln_status read_expr(kiln_error *err, const cJSON *e, const char *path, const kiln_graph_desc *k,
                             kiln_expr **out) {
    *out = NULL;
    int op = -1;
    const cJSON *head = cJSON_IsArray(e) ? e->child : NULL;
    for (int i = 0; head && cJSON_IsString(head) && i < (int)(sizeof OPS / sizeof OPS[0]); i++)
        if (strcmp(head->valuestring, OPS[i]) == 0) op = i;
    if (op < 0) return FAIL(err, "manifest: %s: expected a host expression [op, ...] with op in %s", path, SORTED_OPS);
    int nargs = cJSON_GetArraySize(e) - 1;
    if (nargs != OPERANDS[op])
        return FAIL(err, "manifest: %s: '%s' takes %d operand(s), got %d", path, OPS[op], OPERANDS[op], nargs);
    kiln_expr *x = calloc(1, sizeof *x);
    if (!x) return OOM(err);
    *out = x;
    x->op = (kiln_expr_op)op;
    const cJSON *a = head->next, *b = a->next;
    char where[400], shown[128];
    if (x->op == KILN_EXPR_CONST) {
        if (!cJSON_IsNumber(a) && !cJSON_IsBool(a)) return FAIL(err, "manifest: %s[1]: expected a number", path);
        x->value = cJSON_IsBool(a) ? (cJSON_IsTrue(a) ? 1.0 : 0.0) : a->valuedouble;
        return KILN_OK;
    }
    if (x->op == KILN_EXPR_ARG || x->op == KILN_EXPR_SHAPE) {
        int want_array = x->op == KILN_EXPR_SHAPE;
        int p = cJSON_IsString(a) ? find_param(k, a->valuestring) : -1;
        if (p < 0 || (k->params[p].info.kind == KILN_ARRAY) != want_array) {
            repr(a, shown, sizeof shown);
            return FAIL(err, "manifest: %s[1]: expected the name of a %s parameter of the kernel, got %s", path,
                        want_array ? "ndarray" : "scalar", shown);
        }
        x->param = (size_t)p;
        if (want_array) {
            int ndim = k->params[p].info.ndim;
            if (!is_int(b) || b->valuedouble < 0 || b->valuedouble >= ndim) {
                repr(b, shown, sizeof shown);
                return FAIL(err, "manifest: %s[2]: expected a dimension index below %d, got %s", path, ndim, shown);
            }
            x->dim = (int)b->valuedouble;
        }
        return KILN_OK;
    }
    snprintf(where, sizeof where, "%s[1]", path);
    kiln_status st = read_expr(err, a, where, k, &x->a);
    if (st == KILN_OK && OPERANDS[op] == 2) {
        snprintf(where, sizeof where, "%s[2]", path);
        st = read_expr(err, b, where, k, &x->b);
    }
    return st;
}

static kiln_status read_launch(kiln_error *err, const cJSON *ln, const char *path, const kiln_graph_desc *k,
                               kiln_cuda_launch *out) {
    out->ndims = -1;
    const cJSON *entry = get(err, ln, "entry", path, cJSON_String);
    if (!entry) return KILN_ERR_FORMAT;
    if (!is_identifier(entry->valuestring))
        return FAIL(err, "manifest: %s.entry: expected a symbol name, got '%s'", path, entry->valuestring);
    if (!(out->entry = strdup(entry->valuestring))) return OOM(err);
    const cJSON *mode = get(err, ln, "mode", path, cJSON_String);
    if (!mode) return KILN_ERR_FORMAT;
    out->single = strcmp(mode->valuestring, "single") == 0;
    if (!out->single && strcmp(mode->valuestring, "loop") != 0)
        return FAIL(err, "manifest: %s.mode: expected one of ('loop', 'single'), got '%s'", path, mode->valuestring);
    out->waves = 1;
    if (cJSON_GetObjectItemCaseSensitive(ln, "waves")) {
        const cJSON *w = get(err, ln, "waves", path, cJSON_Number);
        if (!w) return KILN_ERR_FORMAT;
        if (w->valuedouble < 1 || w->valuedouble > 1024)
            return FAIL(err, "manifest: %s.waves: %.0f is out of range (1..1024)", path, w->valuedouble);
        out->waves = (int)w->valuedouble;
    }
    const cJSON *bp = cJSON_GetObjectItemCaseSensitive(ln, "block_ptr");
    if (bp && !cJSON_IsBool(bp)) return FAIL(err, "manifest: %s.block_ptr: expected a boolean", path);
    out->block_ptr = bp && cJSON_IsTrue(bp);
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(ln, "count");
    if (!count || cJSON_IsNull(count)) return KILN_OK;
    if (out->single) return FAIL(err, "manifest: %s.count: only loop launches have a count", path);
    if (!get(err, ln, "count", path, cJSON_Array)) return KILN_ERR_FORMAT;
    int ndims = cJSON_GetArraySize(count);
    if (!(out->count = calloc((size_t)ndims * 3 + 1, sizeof *out->count))) return OOM(err);
    out->ndims = ndims;
    char where[400];
    int j = 0;
    for (const cJSON *dim = count->child; dim; dim = dim->next, j++) {
        if (!cJSON_IsArray(dim) || cJSON_GetArraySize(dim) != 3)
            return FAIL(err, "manifest: %s.count[%d]: expected [start, stop, step]", path, j);
        int i = 0;
        for (const cJSON *e = dim->child; e; e = e->next, i++) {
            snprintf(where, sizeof where, "%s.count[%d][%d]", path, j, i);
            kiln_status st = read_expr(err, e, where, k, &out->count[j * 3 + i]);
            if (st != KILN_OK) return st;
        }
    }
    return KILN_OK;
}

static int in_list(char **names, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return 1;
    return 0;
}

static kiln_status read_blobs(kiln_error *err, const cJSON *sec, const kiln_target *t, kiln_cuda_section *c) {
    const cJSON *ptx = get(err, sec, "ptx", "cuda", cJSON_String);
    if (!ptx) return KILN_ERR_FORMAT;
    if (!in_list(t->blobs, t->nblobs, ptx->valuestring))
        return FAIL(err, "manifest: cuda.ptx: names a blob that is not in the cuda target: '%s'", ptx->valuestring);
    if (!(c->ptx = strdup(ptx->valuestring))) return OOM(err);
    const cJSON *cubins = get(err, sec, "cubins", "cuda", cJSON_Object);
    if (!cubins) return KILN_ERR_FORMAT;
    size_t n = (size_t)cJSON_GetArraySize(cubins);
    c->cubin_archs = calloc(n + 1, sizeof *c->cubin_archs);
    c->cubin_blobs = calloc(n + 1, sizeof *c->cubin_blobs);
    if (!c->cubin_archs || !c->cubin_blobs) return OOM(err);
    char shown[128];
    for (const cJSON *b = cubins->child; b; b = b->next) {
        if (!cJSON_IsString(b) || !in_list(t->blobs, t->nblobs, b->valuestring)) {
            repr(b, shown, sizeof shown);
            return FAIL(err, "manifest: cuda.cubins.%s: names a blob that is not in the cuda target: %s", b->string,
                        shown);
        }
        c->cubin_archs[c->ncubins] = strdup(b->string);
        c->cubin_blobs[c->ncubins] = strdup(b->valuestring);
        if (!c->cubin_archs[c->ncubins++] || !c->cubin_blobs[c->ncubins - 1]) return OOM(err);
    }
    static const char *const optional[] = {"cubins_missing", "nvjitlink", "math"};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, optional[i]);
        if (v && !get(err, sec, optional[i], "cuda", cJSON_String)) return KILN_ERR_FORMAT;
        if (i == 2 && v && strcmp(v->valuestring, "libdevice") != 0 && strcmp(v->valuestring, "builtin") != 0)
            return FAIL(err, "manifest: cuda.math: expected one of ('libdevice', 'builtin'), got '%s'", v->valuestring);
    }
    return KILN_OK;
}

static kiln_status read_launches(kiln_error *err, const cJSON *sec, kiln_manifest *m, kiln_cuda_section *c) {
    const cJSON *table = get(err, sec, "launches", "cuda", cJSON_Object);
    if (!table) return KILN_ERR_FORMAT;
    for (const cJSON *t = table->child; t; t = t->next) {
        int known = 0;
        for (size_t i = 0; i < m->nkernels && !known; i++) known = strcmp(m->kernels[i].name, t->string) == 0;
        if (!known) return FAIL(err, "manifest: cuda.launches.%s: names a kernel that is not in the file", t->string);
    }
    c->launches = calloc(m->nkernels + 1, sizeof *c->launches);
    c->nlaunches = calloc(m->nkernels + 1, sizeof *c->nlaunches);
    if (!c->launches || !c->nlaunches) return OOM(err);
    char path[300], where[360];
    for (size_t i = 0; i < m->nkernels; i++) {
        const kiln_graph_desc *k = &m->kernels[i];
        snprintf(path, sizeof path, "cuda.launches.%s", k->name);
        if (!cJSON_GetObjectItemCaseSensitive(table, k->name))
            return FAIL(err, "manifest: %s: required field is missing", path);
        const cJSON *raw = get(err, table, k->name, "cuda.launches", cJSON_Array);
        if (!raw) return KILN_ERR_FORMAT;
        int n = cJSON_GetArraySize(raw);
        if (n == 0) return FAIL(err, "manifest: %s: a kernel needs at least one launch", path);
        if (!(c->launches[i] = calloc((size_t)n, sizeof **c->launches))) return OOM(err);
        int j = 0;
        for (const cJSON *ln = raw->child; ln; ln = ln->next, j++) {
            snprintf(where, sizeof where, "%s[%d]", path, j);
            c->nlaunches[i]++;
            kiln_status st = read_launch(err, ln, where, k, &c->launches[i][j]);
            if (st != KILN_OK) return st;
        }
    }
    return KILN_OK;
}

kiln_status kiln_manifest_parse_cuda(const cJSON *doc, kiln_manifest *m, kiln_error *err) {
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(doc, "cuda");
    if (!sec) return KILN_OK;
    kiln_cuda_section *c = &m->cuda;
    const kiln_target *t = NULL;
    for (size_t i = 0; i < m->ntargets && !t; i++)
        if (strcmp(m->targets[i].kind, "cuda") == 0) t = &m->targets[i];
    if (!t) return FAIL(err, "manifest: cuda: present, but the file has no cuda target");
    if (!cJSON_IsObject(sec)) return FAIL(err, "manifest: cuda: expected an object, got %s", type_of(sec));
    c->present = 1;
    const cJSON *block = get(err, sec, "block_size", "cuda", cJSON_Number);
    if (!block) return KILN_ERR_FORMAT;
    if (block->valuedouble < 1 || block->valuedouble > 1024)
        return FAIL(err, "manifest: cuda.block_size: %.0f is out of range (1..1024)", block->valuedouble);
    c->block_size = (int)block->valuedouble;
    kiln_status st = read_blobs(err, sec, t, c);
    return st == KILN_OK ? read_launches(err, sec, m, c) : st;
}

void kiln_cuda_section_free(kiln_cuda_section *c) {
    free(c->ptx);
    for (size_t i = 0; i < c->ncubins; i++) {
        free(c->cubin_archs[i]);
        free(c->cubin_blobs[i]);
    }
    free(c->cubin_archs);
    free(c->cubin_blobs);
    for (size_t i = 0; c->nlaunches && c->launches && c->launches[i]; i++) {
        for (size_t j = 0; j < c->nlaunches[i]; j++) {
            kiln_cuda_launch *ln = &c->launches[i][j];
            free(ln->entry);
            for (int k = 0; ln->count && k < ln->ndims * 3; k++) free_expr(ln->count[k]);
            free(ln->count);
        }
        free(c->launches[i]);
    }
    free(c->launches);
    free(c->nlaunches);
    memset(c, 0, sizeof *c);
}
