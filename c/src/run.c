/* Running a graph: check every argument (the checks of kiln/runtime/binding.py, same messages),
 * pack the argument block of kiln/abi.py (8-byte slots: a scalar in its native width at the start
 * of its slot; an array as its data pointer, its ndim int64 extents, then its ndim int64 element
 * strides), then one native call.
 * Nothing runs unless every check passes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

enum { SLOT = 8, STACK_BLOCK = 1024, STACK_SYMBOLS = 32, STACK_PARAMS = 64 };

static kiln_status fail_arg(const kiln_graph *g, kiln_error *err, kiln_status code, const char *name,
                            const char *what) {
    return kiln_fail(err, code, "%s: argument '%s': %s", g->owner, name, what);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int k = 0; k < ndim && used < n; k++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (used < n) snprintf(buf + used, n - used, ndim == 1 ? ",)" : ")");
}

static void names_list(char *buf, size_t n, const kiln_graph *g) {
    buf[0] = 0;
    for (size_t i = 0; i < g->nvisible; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, n - used, "%s%s", i ? ", " : "", g->desc->params[g->visible[i]].info.name);
    }
    if (!g->nvisible) snprintf(buf, n, "none");
}

static int is_visible_name(const kiln_graph *g, const char *name) {
    for (size_t v = 0; name && v < g->nvisible; v++)
        if (strcmp(name, g->desc->params[g->visible[v]].info.name) == 0) return 1;
    return 0;
}

/* match each parameter with its argument (`which[p]`; hidden parameters get the module's storage),
 * or fail on missing/unknown/repeated names */
static kiln_status match_names(const kiln_graph *g, const kiln_arg *args, size_t nargs, const kiln_arg **which,
                               kiln_error *err) {
    const kiln_graph_desc *d = g->desc;
    size_t nmissing = 0;
    char list[400], expected[300];
    list[0] = 0;
    for (size_t p = 0; p < d->nparams; p++) {
        const char *name = d->params[p].info.name;
        which[p] = NULL;
        if (name[0] == '@') {
            which[p] = &g->hidden[p];
            continue;
        }
        if (p < nargs && args[p].name && strcmp(args[p].name, name) == 0) {
            which[p] = &args[p];          /* the usual case: arguments in parameter order */
        } else {
            for (size_t i = 0; i < nargs; i++)
                if (args[i].name && strcmp(args[i].name, name) == 0) which[p] = &args[i];
        }
        if (!which[p]) {
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s'%s'", nmissing++ ? ", " : "", name);
        }
    }
    if (nmissing) {
        names_list(expected, sizeof expected, g);
        return kiln_fail(err, KILN_ERR_MISSING_ARGUMENT, "%s: missing argument%s %s; expected %s", g->owner,
                         nmissing > 1 ? "s" : "", list, expected);
    }
    if (nargs == g->nvisible) return KILN_OK;
    size_t nunknown = 0;
    for (size_t i = 0; i < nargs; i++) {
        if (!is_visible_name(g, args[i].name)) {
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s'%s'", nunknown++ ? ", " : "",
                     args[i].name ? args[i].name : "(null)");
        }
    }
    names_list(expected, sizeof expected, g);
    if (nunknown)
        return kiln_fail(err, KILN_ERR_UNKNOWN_ARGUMENT, "%s: unknown argument%s %s; expected %s", g->owner,
                         nunknown > 1 ? "s" : "", list, expected);
    return kiln_fail(err, KILN_ERR_UNKNOWN_ARGUMENT, "%s: an argument is given more than once; expected %s",
                     g->owner, expected);
}

/* The block's element strides (kiln/abi.py) of an array: C order when the caller gives none,
 * else its byte strides over the item size. 0 when a used stride (extent > 1) is not a multiple
 * of the item size; extent-1 strides are never used, so they become 0. */
static int element_strides(int ndim, const int64_t *shape, const int64_t *strides, int64_t itemsize,
                           int64_t *out) {
    int64_t c = 1;
    for (int k = ndim - 1; k >= 0; k--) {
        if (!strides) {
            out[k] = c;
            c *= shape[k];
        } else if (shape[k] <= 1) {
            out[k] = 0;
        } else if (strides[k] % itemsize) {
            return 0;
        } else {
            out[k] = strides[k] / itemsize;
        }
    }
    return 1;
}

/* Whether two elements may share memory (a zero stride, overlapping strides): the same
 * conservative rule as kiln.runtime.binding.may_overlap_itself, on element strides. */
static int may_overlap_itself(int ndim, const int64_t *shape, const int64_t *estrides) {
    int64_t s[KILN_MAX_NDIM], n[KILN_MAX_NDIM];
    int m = 0;
    for (int k = 0; k < ndim; k++) {
        if (shape[k] == 0) return 0;
        if (shape[k] == 1) continue;
        int64_t a = estrides[k] < 0 ? -estrides[k] : estrides[k];
        int j = m++;
        for (; j > 0 && s[j - 1] > a; j--) {       /* insertion sort by |stride| */
            s[j] = s[j - 1];
            n[j] = n[j - 1];
        }
        s[j] = a;
        n[j] = shape[k];
    }
    int64_t reach = 1;
    for (int j = 0; j < m; j++) {
        if (s[j] < reach) return 1;
        reach += s[j] * (n[j] - 1);
    }
    return 0;
}

static kiln_status check_shape(const kiln_graph *g, size_t p, const kiln_arg *a, int64_t *symvals, char *bound,
                               kiln_error *err) {
    const kiln_arg_info *info = &g->desc->params[p].info;
    char shape[200], msg[400];
    for (int k = 0; k < info->ndim; k++) {
        int64_t got = a->shape[k];
        if (info->shape_size[k] >= 0 && got != info->shape_size[k]) {
            shape_str(shape, sizeof shape, a->ndim, a->shape);
            snprintf(msg, sizeof msg, "dimension %d must be %lld, got shape %s", k, (long long)info->shape_size[k], shape);
            return fail_arg(g, err, KILN_ERR_SHAPE, info->name, msg);
        }
        int s = g->sym_index[p * KILN_MAX_NDIM + k];
        if (s < 0) continue;
        if (!bound[s]) {
            bound[s] = 1;
            symvals[s] = got;
        } else if (symvals[s] != got) {
            snprintf(msg, sizeof msg, "dimension %d is %lld but shape symbol '%s' is %lld from an earlier argument", k,
                     (long long)got, info->shape_symbol[k], (long long)symvals[s]);
            return fail_arg(g, err, KILN_ERR_SHAPE, info->name, msg);
        }
    }
    return KILN_OK;
}

static kiln_status pack_array(const kiln_graph *g, size_t p, const kiln_arg *a, uint8_t *slot, int64_t *symvals,
                              char *bound, kiln_error *err) {
    const kiln_arg_info *info = &g->desc->params[p].info;
    char msg[320], shape[200];
    if (a->kind != KILN_ARG_ARRAY) {
        snprintf(msg, sizeof msg, "expected an array of %s with ndim=%d, got a scalar", kiln_dtype_name(info->dtype),
                 info->ndim);
        return fail_arg(g, err, KILN_ERR_KIND, info->name, msg);
    }
    if (a->dtype != info->dtype) {
        snprintf(msg, sizeof msg, "expected dtype %s, got %s (kiln never converts arrays)", kiln_dtype_name(info->dtype),
                 kiln_dtype_name(a->dtype));
        return fail_arg(g, err, KILN_ERR_DTYPE, info->name, msg);
    }
    if (a->ndim < 0 || a->ndim > KILN_MAX_NDIM || (a->ndim && !a->shape))
        return fail_arg(g, err, KILN_ERR_INVALID_ARGUMENT, info->name, "ndim out of range or shape is NULL");
    if (a->ndim != info->ndim) {
        shape_str(shape, sizeof shape, a->ndim, a->shape);
        snprintf(msg, sizeof msg, "expected a %d-D array, got %d-D with shape %s", info->ndim, a->ndim, shape);
        return fail_arg(g, err, KILN_ERR_RANK, info->name, msg);
    }
    int64_t itemsize = (int64_t)kiln_dtype_size(info->dtype), count = 1;
    for (int k = 0; k < a->ndim; k++) {
        if (a->shape[k] < 0) {
            shape_str(shape, sizeof shape, a->ndim, a->shape);
            snprintf(msg, sizeof msg, "negative extent in shape %s", shape);
            return fail_arg(g, err, KILN_ERR_SHAPE, info->name, msg);
        }
        count = count && a->shape[k] ? count * a->shape[k] : 0;
    }
    int64_t estrides[KILN_MAX_NDIM];
    if ((count && !a->data) || ((uintptr_t)a->data % (uintptr_t)itemsize) ||
        !element_strides(a->ndim, a->shape, a->strides, itemsize, estrides))
        return fail_arg(g, err, KILN_ERR_ALIGNMENT, info->name,
                        a->data ? "array data or strides are not aligned to its dtype (pass a copy)"
                                : "array data is NULL");
    int written = info->access == KILN_ACCESS_WRITE || info->access == KILN_ACCESS_READWRITE;
    if (a->read_only && written)
        return fail_arg(g, err, KILN_ERR_READ_ONLY, info->name, "array is read-only but the compiled code writes to it");
    if (written && a->strides && may_overlap_itself(a->ndim, a->shape, estrides))
        return fail_arg(g, err, KILN_ERR_STRIDES, info->name,
                        "the compiled code writes to this array, but its strides make elements share memory "
                        "(pass an array with distinct elements)");
    if (info->has_shape) {
        kiln_status st = check_shape(g, p, a, symvals, bound, err);
        if (st != KILN_OK) return st;
    }
    uint64_t ptr = (uint64_t)(uintptr_t)a->data;
    memcpy(slot, &ptr, 8);
    memcpy(slot + 8, a->shape, 8 * (size_t)a->ndim);
    memcpy(slot + 8 + 8 * (size_t)a->ndim, estrides, 8 * (size_t)a->ndim);
    return KILN_OK;
}

uint16_t kiln_f64_to_f16(double d) {
    uint64_t b;
    memcpy(&b, &d, 8);
    uint16_t sign = (uint16_t)((b >> 48) & 0x8000);
    int exp = (int)((b >> 52) & 0x7ff);
    uint64_t mant = b & 0xfffffffffffffULL;
    if (exp == 0x7ff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp == 0) return sign;                       /* double subnormals round to zero */
    int e = exp - 1023 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    uint64_t m = mant | (1ULL << 52);
    int shift = e >= 1 ? 42 : 43 - e;
    if (shift >= 64) return sign;
    uint64_t q = m >> shift, rem = m & ((1ULL << shift) - 1), half = 1ULL << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    uint64_t bits = e >= 1 ? ((uint64_t)(e - 1) << 10) + q : q;
    return (uint16_t)(sign | (bits > 0x7c00 ? 0x7c00 : bits));
}

static kiln_status scalar_int(const kiln_graph *g, const kiln_arg_info *info, const kiln_arg *a, uint8_t *slot,
                              kiln_error *err) {
    char msg[200];
    int is_signed = info->dtype <= KILN_I64;
    int bits = (int)kiln_dtype_size(info->dtype) * 8;
    int neg = a->kind == KILN_VALUE_INT && a->value.i < 0;
    uint64_t mag = a->kind == KILN_VALUE_UINT ? a->value.u : (uint64_t)a->value.i;
    int ok;
    if (is_signed) {
        int64_t lo = bits == 64 ? INT64_MIN : -(INT64_C(1) << (bits - 1));
        int64_t hi = bits == 64 ? INT64_MAX : (INT64_C(1) << (bits - 1)) - 1;
        ok = a->kind == KILN_VALUE_UINT ? a->value.u <= (uint64_t)hi : (a->value.i >= lo && a->value.i <= hi);
        if (!ok) {
            if (a->kind == KILN_VALUE_UINT)
                snprintf(msg, sizeof msg, "%llu is out of range for %s (%lld..%lld)", (unsigned long long)a->value.u,
                         kiln_dtype_name(info->dtype), (long long)lo, (long long)hi);
            else
                snprintf(msg, sizeof msg, "%lld is out of range for %s (%lld..%lld)", (long long)a->value.i,
                         kiln_dtype_name(info->dtype), (long long)lo, (long long)hi);
        }
    } else {
        uint64_t hi = bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;
        ok = !neg && mag <= hi;
        if (!ok) {
            if (neg)
                snprintf(msg, sizeof msg, "%lld is out of range for %s (0..%llu)", (long long)a->value.i,
                         kiln_dtype_name(info->dtype), (unsigned long long)hi);
            else
                snprintf(msg, sizeof msg, "%llu is out of range for %s (0..%llu)", (unsigned long long)mag,
                         kiln_dtype_name(info->dtype), (unsigned long long)hi);
        }
    }
    if (!ok) return fail_arg(g, err, KILN_ERR_SCALAR_RANGE, info->name, msg);
    memcpy(slot, &mag, (size_t)bits / 8);   /* little-endian: the low bytes are the value */
    return KILN_OK;
}

/* a double as Python's repr() writes it: the shortest digits that read back the same, positional
 * for 1e-4 <= |v| < 1e16 (with ".0" when integral), else d.ddde+XX */
static void python_repr(char *buf, size_t n, double v) {
    if (!isfinite(v)) {
        snprintf(buf, n, isnan(v) ? "nan" : v < 0 ? "-inf" : "inf");
        return;
    }
    int p = 1;
    for (; p < 17; p++) {
        snprintf(buf, n, "%.*e", p - 1, v);
        if (strtod(buf, NULL) == v) break;
    }
    int exp = atoi(strchr(buf, 'e') + 1);
    if (v != 0 && (exp < -4 || exp >= 16)) return;      /* already d.ddde+XX */
    snprintf(buf, n, "%.*f", p - 1 - exp > 0 ? p - 1 - exp : 0, v);
    if (!strchr(buf, '.')) strncat(buf, ".0", n - strlen(buf) - 1);
}

static kiln_status scalar_float(const kiln_graph *g, const kiln_arg_info *info, const kiln_arg *a, uint8_t *slot,
                                kiln_error *err) {
    double v = a->kind == KILN_VALUE_FLOAT ? a->value.f
               : a->kind == KILN_VALUE_UINT ? (double)a->value.u : (double)a->value.i;
    double max = info->dtype == KILN_F16 ? 65504.0 : info->dtype == KILN_F32 ? 3.4028234663852886e38 : 0;
    if (max && isfinite(v) && fabs(v) > max) {
        char msg[160], num[64];
        python_repr(num, sizeof num, v);
        snprintf(msg, sizeof msg, "%s is out of range for %s", num, kiln_dtype_name(info->dtype));
        return fail_arg(g, err, KILN_ERR_SCALAR_RANGE, info->name, msg);
    }
    if (info->dtype == KILN_F64) {
        memcpy(slot, &v, 8);
    } else if (info->dtype == KILN_F32) {
        float f = (float)v;
        memcpy(slot, &f, 4);
    } else {
        uint16_t h = kiln_f64_to_f16(v);
        memcpy(slot, &h, 2);
    }
    return KILN_OK;
}

static kiln_status pack_scalar(const kiln_graph *g, size_t p, const kiln_arg *a, uint8_t *slot, kiln_error *err) {
    const kiln_arg_info *info = &g->desc->params[p].info;
    const char *dt = kiln_dtype_name(info->dtype);
    char msg[160];
    if (a->kind == KILN_ARG_ARRAY || (unsigned)a->kind > KILN_ARG_ARRAY) {
        snprintf(msg, sizeof msg, "expected a %s scalar, got an array", dt);
        return fail_arg(g, err, KILN_ERR_KIND, info->name, msg);
    }
    memset(slot, 0, SLOT);
    if (info->dtype == KILN_BOOL) {
        if (a->kind != KILN_VALUE_BOOL) return fail_arg(g, err, KILN_ERR_KIND, info->name, "expected a bool");
        slot[0] = a->value.b != 0;
        return KILN_OK;
    }
    if (a->kind == KILN_VALUE_BOOL) {
        snprintf(msg, sizeof msg, "expected a number for %s, got a bool", dt);
        return fail_arg(g, err, KILN_ERR_KIND, info->name, msg);
    }
    if (info->dtype <= KILN_U64) {
        if (a->kind == KILN_VALUE_FLOAT) {
            snprintf(msg, sizeof msg, "expected an integer for %s, got a float", dt);
            return fail_arg(g, err, KILN_ERR_KIND, info->name, msg);
        }
        return scalar_int(g, info, a, slot, err);
    }
    return scalar_float(g, info, a, slot, err);
}

kiln_status kiln_run(const kiln_graph *g, const kiln_arg *args, size_t nargs, void *stream, kiln_error *err) {
    if (!g) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "graph is NULL");
    if (nargs && !args) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "args is NULL");
    const kiln_graph_desc *d = g->desc;
    _Alignas(16) uint8_t stack_block[STACK_BLOCK];
    int64_t stack_sym[STACK_SYMBOLS];
    char stack_bound[STACK_SYMBOLS];
    const kiln_arg *stack_which[STACK_PARAMS];
    int small = d->block_size <= STACK_BLOCK && g->nsymbols <= STACK_SYMBOLS && d->nparams <= STACK_PARAMS;
    uint8_t *block = small ? stack_block : malloc(d->block_size + 16);
    int64_t *symvals = small ? stack_sym : malloc(sizeof(int64_t) * ((size_t)g->nsymbols + 1));
    char *bound = small ? stack_bound : malloc((size_t)g->nsymbols + 1);
    const kiln_arg **which = small ? stack_which : malloc(sizeof *which * (d->nparams + 1));
    kiln_status st = KILN_OK;
    if (!block || !symvals || !bound || !which) st = kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == KILN_OK) {
        memset(bound, 0, (size_t)g->nsymbols);
        st = match_names(g, args, nargs, which, err);
    }
    for (size_t p = 0; st == KILN_OK && p < d->nparams; p++) {
        uint8_t *slot = block + d->params[p].offset;
        st = d->params[p].info.kind == KILN_ARRAY ? pack_array(g, p, which[p], slot, symvals, bound, err)
                                                  : pack_scalar(g, p, which[p], slot, err);
    }
    if (st == KILN_OK && g->module->device == KILN_DEVICE_CUDA) {
        st = kiln_cuda_run(g, block, stream, err);
    } else if (st == KILN_OK) {
        int32_t status = g->entry(block);
        if (status) st = kiln_fail(err, KILN_ERR_RUNTIME, "%s: native code returned status %d", g->owner, status);
    }
    if (!small) {
        free(block);
        free(symvals);
        free(bound);
        free(which);
    }
    if (st == KILN_OK && err) {
        err->code = KILN_OK;
        err->message[0] = 0;
    }
    return st;
}

kiln_status kiln_graph_run(const kiln_graph *g, const kiln_arg *args, size_t nargs, kiln_error *err) {
    return kiln_run(g, args, nargs, NULL, err);
}

kiln_status kiln_graph_run_on_stream(const kiln_graph *g, const kiln_arg *args, size_t nargs, void *stream,
                                     kiln_error *err) {
    return kiln_run(g, args, nargs, stream, err);
}
