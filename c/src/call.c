/* Calling an exported kernel with positional and named arguments (kiln/runtime/binding.py
 * bind_call_arguments: the same rules and messages), then the checks and run of kiln_run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

enum { STACK_ARGS = 32 };

static const char *param_name(const kiln_graph *g, size_t v) { return g->desc->params[g->visible[v]].info.name; }

static void parameter_list(const kiln_graph *g, char *buf, size_t n) {
    buf[0] = 0;
    for (size_t v = 0; v < g->nvisible; v++) {
        size_t used = strlen(buf);
        snprintf(buf + used, n - used, "%s%s", v ? ", " : "", param_name(g, v));
    }
}

/* names for the positional arguments, and the named ones' checks against them */
static kiln_status bind(const kiln_graph *g, const kiln_arg *args, size_t nargs, kiln_arg *out, kiln_error *err) {
    size_t npos = 0;
    while (npos < nargs && !args[npos].name) npos++;
    for (size_t i = npos; i < nargs; i++)
        if (!args[i].name)
            return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "%s: positional argument %zu follows a named one",
                             g->owner, i);
    if (npos > g->nvisible)
        return kiln_fail(err, KILN_ERR_UNKNOWN_ARGUMENT, "%s: takes %zu arguments, got %zu", g->owner, g->nvisible,
                         nargs);
    for (size_t i = npos; i < nargs; i++) {
        int known = 0;
        for (size_t v = 0; v < g->nvisible && !known; v++) {
            if (strcmp(args[i].name, param_name(g, v)) != 0) continue;
            if (v < npos)
                return kiln_fail(err, KILN_ERR_UNKNOWN_ARGUMENT, "%s: argument '%s' given twice", g->owner,
                                 args[i].name);
            known = 1;
        }
        if (!known) {
            char list[300];
            parameter_list(g, list, sizeof list);
            return kiln_fail(err, KILN_ERR_UNKNOWN_ARGUMENT, "%s: has no parameter '%s'; parameters: %s", g->owner,
                             args[i].name, list);
        }
    }
    for (size_t i = 0; i < nargs; i++) {
        out[i] = args[i];
        if (i < npos) out[i].name = param_name(g, i);
    }
    return KILN_OK;
}

kiln_status kiln_kernel_call_on_stream(const kiln_kernel *k, const kiln_arg *args, size_t nargs, void *stream,
                                       kiln_error *err) {
    if (!k) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "kernel is NULL");
    if (nargs && !args) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "args is NULL");
    kiln_arg stack[STACK_ARGS];
    kiln_arg *named = nargs <= STACK_ARGS ? stack : malloc(nargs * sizeof *named);
    if (!named) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    kiln_status st = bind(&k->graph, args, nargs, named, err);
    if (st == KILN_OK) st = kiln_run(&k->graph, named, nargs, stream, err);
    if (named != stack) free(named);
    return st;
}

kiln_status kiln_kernel_call(const kiln_kernel *k, const kiln_arg *args, size_t nargs, kiln_error *err) {
    return kiln_kernel_call_on_stream(k, args, nargs, NULL, err);
}
