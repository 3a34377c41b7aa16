/* The module and graph structures (shared by module.c and run.c). */
#ifndef KILN_MODULE_H
#define KILN_MODULE_H

#include "internal.h"

typedef int32_t (*kiln_entry_fn)(uint8_t *args);

struct kiln_graph {
    const struct kiln_module *module;
    const kiln_graph_desc *desc;
    kiln_entry_fn entry;
    char owner[160];        /* "graph 'main'", the prefix of every argument error */
    int nsymbols;           /* distinct shape symbols */
    int *sym_index;         /* [param * KILN_MAX_NDIM + dim]: symbol index or -1 */
};

struct kiln_module {
    kiln_manifest manifest;
    const kiln_target *target;
    kiln_loaded_object object;
    kiln_graph *graphs;
    size_t ngraphs;
    int num_threads;
};

#endif /* KILN_MODULE_H */
