/* Running a graph or kernel on the GPU (kiln/runtime/cuda.py _launch_nodes, CudaRunnable.grid and
 * _run_plain): one node per launch of every dispatch, in order; each node's argument block is
 * gathered from the run's block (graph arguments, fields) and the dispatch's constants, its
 * kernelParams[k] is the address of slot k, its grid comes from the launch-count expressions
 * (capped at `waves` full waves of resident blocks), and it runs with cuLaunchKernel on the
 * caller's stream. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"

enum { SLOT = 8, STACK_BLOCK = 1024, STACK_SLOTS = 128 };

/* where one kernel parameter's slots come from */
typedef struct gather {
    int is_const;
    int64_t src;            /* offset in the run's block */
    size_t size;            /* bytes */
    uint8_t value[SLOT];    /* a constant */
} gather;

typedef struct node {
    const kiln_graph_desc *kernel;
    const kiln_cuda_launch *launch;
    const kiln_cuda_function *fn;
    gather *gathers;        /* one per kernel parameter */
} node;

struct kiln_cuda_plan {
    node *nodes;
    size_t nnodes;
};

void kiln_cuda_plan_free(struct kiln_cuda_plan *p) {
    if (!p) return;
    for (size_t i = 0; i < p->nnodes; i++) free(p->nodes[i].gathers);
    free(p->nodes);
    free(p);
}

static const kiln_cuda_function *function_of(const struct kiln_cuda_module *cu, const char *entry) {
    for (size_t i = 0; i < cu->nfunctions; i++)
        if (strcmp(cu->functions[i].entry, entry) == 0) return &cu->functions[i];
    return NULL;
}

/* a parameter's bytes in the argument block, from the manifest's offsets (so a change of the
 * layout in kiln/abi.py needs no change here) */
static size_t param_size(const kiln_graph_desc *k, size_t q) {
    int64_t end = q + 1 < k->nparams ? k->params[q + 1].offset : (int64_t)k->block_size;
    return (size_t)(end - k->params[q].offset);
}

/* the launches of one dispatch (kernel index `ki`; bindings NULL: a kernel run on its own block) */
static kiln_status add_dispatch(const kiln_module *m, struct kiln_cuda_plan *p, size_t ki, const kiln_binding *bindings,
                                const kiln_graph_desc *g, kiln_error *err) {
    const kiln_graph_desc *k = &m->manifest.kernels[ki];
    const kiln_cuda_section *s = &m->manifest.cuda;
    for (size_t j = 0; j < s->nlaunches[ki]; j++) {
        node *n = &p->nodes[p->nnodes];
        n->kernel = k;
        n->launch = &s->launches[ki][j];
        n->fn = function_of(m->cuda, n->launch->entry);
        n->gathers = calloc(k->nparams + 1, sizeof *n->gathers);
        if (!n->gathers) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        p->nnodes++;
        for (size_t q = 0; q < k->nparams; q++) {
            gather *ga = &n->gathers[q];
            ga->size = param_size(k, q);
            if (!bindings) {
                ga->src = k->params[q].offset;
            } else if (bindings[q].kind == KILN_BIND_CONST) {
                ga->is_const = 1;
                memcpy(ga->value, bindings[q].value, SLOT);
            } else {
                ga->src = g->params[bindings[q].param].offset;
            }
        }
    }
    return KILN_OK;
}

kiln_status kiln_cuda_plan(kiln_module *m, kiln_graph *g, kiln_error *err) {
    const kiln_graph_desc *d = g->desc;
    const kiln_cuda_section *s = &m->manifest.cuda;
    int is_kernel = d->display_name != NULL;
    long ki = -1;
    for (size_t i = 0; is_kernel && i < m->manifest.nkernels; i++)
        if (&m->manifest.kernels[i] == d) ki = (long)i;
    size_t total = 0;
    if (is_kernel) total = s->nlaunches[ki];
    for (size_t i = 0; !is_kernel && i < d->ndispatches; i++) total += s->nlaunches[d->dispatches[i].kernel];
    struct kiln_cuda_plan *p = g->cuda = calloc(1, sizeof *p);
    if (!p || !(p->nodes = calloc(total + 1, sizeof *p->nodes)))
        return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    if (is_kernel) return add_dispatch(m, p, (size_t)ki, NULL, d, err);
    for (size_t i = 0; i < d->ndispatches; i++) {
        kiln_status st = add_dispatch(m, p, d->dispatches[i].kernel, d->dispatches[i].bindings, d, err);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- grids */

/* a scalar slot's value as Python's int() of what struct.unpack gives; 0 when it has none (NaN) */
static int scalar_int(const kiln_param *p, const uint8_t *slot, int64_t *out) {
    double f;
    switch (p->info.dtype) {
    case KILN_BOOL: *out = slot[0] != 0; return 1;
    case KILN_I8: *out = (int8_t)slot[0]; return 1;
    case KILN_I16: { int16_t v; memcpy(&v, slot, 2); *out = v; return 1; }
    case KILN_I32: { int32_t v; memcpy(&v, slot, 4); *out = v; return 1; }
    case KILN_I64: memcpy(out, slot, 8); return 1;
    case KILN_U8: *out = slot[0]; return 1;
    case KILN_U16: { uint16_t v; memcpy(&v, slot, 2); *out = v; return 1; }
    case KILN_U32: { uint32_t v; memcpy(&v, slot, 4); *out = v; return 1; }
    case KILN_U64: { uint64_t v; memcpy(&v, slot, 8); if (v > INT64_MAX) return 0; *out = (int64_t)v; return 1; }
    case KILN_F16: {
        uint16_t h;
        memcpy(&h, slot, 2);
        int e = (h >> 10) & 0x1f, mant = h & 0x3ff;
        if (e == 31) return 0;
        f = ldexp(e ? (double)(mant | 0x400) : (double)mant, (e ? e : 1) - 25);
        if (h & 0x8000) f = -f;
        break;
    }
    case KILN_F32: { float v; memcpy(&v, slot, 4); f = v; break; }
    default: memcpy(&f, slot, 8); break;
    }
    if (!isfinite(f) || fabs(f) >= 9.2e18) return 0;
    *out = (int64_t)f;          /* truncation toward zero, as int() */
    return 1;
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* evaluate a launch-count expression on a kernel block; 0 when it cannot be (then the grid is
 * the largest one, which a grid-stride loop covers) */
static int eval(const kiln_expr *e, const kiln_graph_desc *k, const uint8_t *kb, int64_t *out) {
    int64_t a = 0, b = 0;
    switch (e->op) {
    case KILN_EXPR_CONST:
        if (!isfinite(e->value) || fabs(e->value) >= 9.2e18) return 0;
        *out = (int64_t)e->value;
        return 1;
    case KILN_EXPR_SHAPE:
        memcpy(out, kb + k->params[e->param].offset + SLOT * (1 + (size_t)e->dim), 8);
        return 1;
    case KILN_EXPR_ARG: return scalar_int(&k->params[e->param], kb + k->params[e->param].offset, out);
    case KILN_EXPR_INT: return eval(e->a, k, kb, out);
    default: break;
    }
    if (!eval(e->a, k, kb, &a) || !eval(e->b, k, kb, &b)) return 0;
    switch (e->op) {
    case KILN_EXPR_ADD: *out = a + b; return 1;
    case KILN_EXPR_SUB: *out = a - b; return 1;
    case KILN_EXPR_MUL: *out = a * b; return 1;
    case KILN_EXPR_FLOORDIV: *out = b ? floor_div(a, b) : 0; return 1;
    case KILN_EXPR_MOD: *out = b ? a - floor_div(a, b) * b : 0; return 1;
    case KILN_EXPR_MIN: *out = a < b ? a : b; return 1;
    case KILN_EXPR_MAX: *out = a > b ? a : b; return 1;
    default: return 0;
    }
}

/* len(range(start, stop, step)) */
static int64_t range_len(int64_t start, int64_t stop, int64_t step) {
    if (step > 0) return stop > start ? (stop - start + step - 1) / step : 0;
    if (step < 0) return start > stop ? (start - stop - step - 1) / -step : 0;
    return 0;
}

static int64_t grid_of(const node *n, const uint8_t *kb, int block) {
    if (n->launch->single) return 1;
    int64_t max_grid = n->fn->max_grid * n->launch->waves;
    if (n->launch->ndims < 0) return max_grid;
    int64_t total = 1;
    for (int d = 0; d < n->launch->ndims; d++) {
        int64_t v[3];
        for (int i = 0; i < 3; i++)
            if (!eval(n->launch->count[d * 3 + i], n->kernel, kb, &v[i])) return max_grid;
        total *= range_len(v[0], v[1], v[2]);
    }
    int64_t want = (total + block - 1) / block;
    if (want > max_grid) want = max_grid;
    return want < 1 ? 1 : want;
}

/* ---------------------------------------------------------------- runs */

static kiln_status launch(const kiln_graph *g, const node *n, const uint8_t *block, CUstream stream, uint8_t *kb,
                          void **params, kiln_error *err) {
    const struct kiln_cuda_module *cu = g->module->cuda;
    size_t nslots = 0;
    for (size_t q = 0; q < n->kernel->nparams; q++) {
        const gather *ga = &n->gathers[q];
        memcpy(kb + nslots * SLOT, ga->is_const ? ga->value : block + ga->src, ga->size);
        nslots += ga->size / SLOT;
    }
    for (size_t i = 0; i < nslots; i++) params[i] = kb + i * SLOT;
    if (n->launch->block_ptr) {     /* no device copy of the block: its address is 0 */
        memset(kb + nslots * SLOT, 0, SLOT);
        params[nslots] = kb + nslots * SLOT;
        nslots++;
    }
    int bs = g->module->manifest.cuda.block_size;
    int64_t grid = grid_of(n, kb, bs);
    CUresult r = cu->drv.LaunchKernel(n->fn->fn, (unsigned)grid, 1, 1, n->launch->single ? 1u : (unsigned)bs, 1, 1, 0,
                                      stream, nslots ? params : NULL, NULL);
    if (r == KILN_CUDA_SUCCESS) return KILN_OK;
    char what[700];
    snprintf(what, sizeof what, "%s: cuLaunchKernel(%s)", g->owner, n->launch->entry);
    return kiln_cuda_check(cu, r, what, err);
}

kiln_status kiln_cuda_run(const kiln_graph *g, const uint8_t *block, void *stream, kiln_error *err) {
    const struct kiln_cuda_module *cu = g->module->cuda;
    kiln_status st = kiln_cuda_check(cu, cu->drv.CtxSetCurrent(cu->ctx), "cuCtxSetCurrent", err);
    size_t most = 0;
    for (size_t i = 0; i < g->cuda->nnodes; i++)
        if (g->cuda->nodes[i].kernel->block_size > most) most = g->cuda->nodes[i].kernel->block_size;
    _Alignas(16) uint8_t stack_kb[STACK_BLOCK];
    void *stack_params[STACK_SLOTS];
    /* room for the block, then the one slot of its (zero) device address */
    int small = most + SLOT <= STACK_BLOCK && most / SLOT + 1 <= STACK_SLOTS;
    uint8_t *kb = small ? stack_kb : malloc(most + SLOT);
    void **params = small ? stack_params : malloc((most / SLOT + 2) * sizeof *params);
    if (st == KILN_OK && (!kb || !params)) st = kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; st == KILN_OK && i < g->cuda->nnodes; i++)
        st = launch(g, &g->cuda->nodes[i], block, (CUstream)stream, kb, params, err);
    if (!small) {
        free(kb);
        free(params);
    }
    return st;
}
