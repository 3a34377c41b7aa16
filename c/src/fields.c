/* Module-level fields and the random-number state, owned by each loaded module as in the Python
 * runtime (kiln/runtime/binding.py allocate_fields, kiln/runtime/rng.py): every load allocates
 * its own storage, filled from the file's `init` blobs (zeros without one), and passes it to the
 * hidden `@name` parameters; `@rng` gets the module's u32[4] state (seed lo, seed hi, run lo, run
 * hi), which the compiled code itself advances after each launch that draws. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

static const int64_t RNG_SHAPE[1] = {4};

static void seed_state(uint32_t state[4], uint64_t seed) {
    state[0] = (uint32_t)(seed & 0xFFFFFFFFu);
    state[1] = (uint32_t)(seed >> 32);
    state[2] = state[3] = 0;
}

/* put `nbytes` of host memory into a field's or the state's storage (host or device) */
static kiln_status store(const kiln_module *m, void *dst, const void *src, size_t nbytes, kiln_error *err) {
    if (m->device == KILN_DEVICE_CUDA) return kiln_cuda_copy(m, dst, src, nbytes, 1, err);
    memcpy(dst, src, nbytes);
    return KILN_OK;
}

static kiln_status allocate(kiln_module *m, size_t nbytes, void **out, kiln_error *err) {
    if (m->device == KILN_DEVICE_CUDA) return kiln_cuda_alloc(m, nbytes ? nbytes : 1, out, err);
    *out = calloc(1, nbytes ? nbytes : 1);      /* malloc's alignment covers every dtype */
    return *out ? KILN_OK : kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
}

static kiln_status fill_field(kiln_module *m, const kiln_field_desc *f, kiln_field_store *s, const kiln_container *c,
                              kiln_error *err) {
    const void *init = NULL;
    for (size_t b = 0; f->init && b < c->nblobs; b++)
        if (strcmp(c->blobs[b].name, f->init) == 0) {
            if (c->blobs[b].size != s->nbytes)
                return kiln_fail(err, KILN_ERR_FORMAT, "field '%s': its init blob holds %zu bytes, expected %zu",
                                 f->name, c->blobs[b].size, s->nbytes);
            init = c->blobs[b].data;
        }
    if (m->device == KILN_DEVICE_CPU) {             /* calloc'ed: zeros already */
        if (init) memcpy(s->data, init, s->nbytes);
        return KILN_OK;
    }
    void *zeros = init ? NULL : calloc(1, s->nbytes + 1);
    if (!init && !zeros) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    kiln_status st = s->nbytes ? store(m, s->data, init ? init : zeros, s->nbytes, err) : KILN_OK;
    free(zeros);
    return st;
}

kiln_status kiln_fields_allocate(kiln_module *m, const kiln_container *c, kiln_error *err) {
    const kiln_manifest *man = &m->manifest;
    m->fields = calloc(man->nfields + 1, sizeof *m->fields);
    if (!m->fields) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < man->nfields; i++) {
        const kiln_field_desc *f = &man->fields[i];
        kiln_field_store *s = &m->fields[i];
        s->storage_ndim = 0;
        if (f->ndim == 0) s->storage_shape[s->storage_ndim++] = 1;
        for (int k = 0; k < f->ndim + f->element_ndim; k++) s->storage_shape[s->storage_ndim++] = f->shape[k];
        s->nbytes = kiln_dtype_size(f->dtype);
        for (int k = 0; k < s->storage_ndim; k++) s->nbytes *= (size_t)s->storage_shape[k];
        kiln_status st = allocate(m, s->nbytes, &s->data, err);
        if (st == KILN_OK) st = fill_field(m, f, s, c, err);
        if (st != KILN_OK) return st;
    }
    seed_state(m->rng_host, man->random_seed);
    if (m->device == KILN_DEVICE_CPU) {
        m->rng_data = m->rng_host;
        return KILN_OK;
    }
    kiln_status st = allocate(m, sizeof m->rng_host, &m->rng_data, err);
    return st == KILN_OK ? store(m, m->rng_data, m->rng_host, sizeof m->rng_host, err) : st;
}

void kiln_fields_free(kiln_module *m) {
    if (m->device == KILN_DEVICE_CPU) {
        for (size_t i = 0; m->fields && i < m->manifest.nfields; i++) free(m->fields[i].data);
    }   /* CUDA: device memory goes with the context (kiln_cuda_close) */
    free(m->fields);
    m->fields = NULL;
}

kiln_status kiln_hidden_arguments(kiln_module *m, kiln_graph *g, kiln_error *err) {
    const kiln_graph_desc *d = g->desc;
    g->hidden = calloc(d->nparams + 1, sizeof *g->hidden);
    g->visible = calloc(d->nparams + 1, sizeof *g->visible);
    if (!g->hidden || !g->visible) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t p = 0; p < d->nparams; p++) {
        const kiln_arg_info *info = &d->params[p].info;
        if (info->name[0] != '@') {
            g->visible[g->nvisible++] = p;
            continue;
        }
        if (strcmp(info->name, "@rng") == 0) {
            g->hidden[p] = kiln_arg_array(info->name, KILN_U32, m->rng_data, 1, RNG_SHAPE);
            continue;
        }
        for (size_t i = 0; i < m->manifest.nfields; i++)
            if (strcmp(m->manifest.fields[i].name, info->name + 1) == 0)
                g->hidden[p] = kiln_arg_array(info->name, m->manifest.fields[i].dtype, m->fields[i].data,
                                              m->fields[i].storage_ndim, m->fields[i].storage_shape);
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- the public API */

size_t kiln_module_field_count(const kiln_module *m) { return m ? m->manifest.nfields : 0; }

kiln_status kiln_module_field_info(const kiln_module *m, size_t index, kiln_field_info *out) {
    if (!m || !out || index >= m->manifest.nfields) return KILN_ERR_INVALID_ARGUMENT;
    const kiln_field_desc *f = &m->manifest.fields[index];
    memset(out, 0, sizeof *out);
    out->name = f->name;
    out->dtype = f->dtype;
    out->ndim = f->ndim + f->element_ndim;
    for (int k = 0; k < out->ndim; k++) out->shape[k] = f->shape[k];
    out->element_ndim = f->element_ndim;
    out->nbytes = m->fields[index].nbytes;
    out->data = m->fields[index].data;
    return KILN_OK;
}

static long field_index(const kiln_module *m, const char *name) {
    for (size_t i = 0; m && name && i < m->manifest.nfields; i++)
        if (strcmp(m->manifest.fields[i].name, name) == 0) return (long)i;
    return -1;
}

static kiln_status no_field(const kiln_module *m, const char *name, kiln_error *err) {
    if (!m || !name) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "module or name is NULL");
    char names[300] = "";
    for (size_t i = 0; i < m->manifest.nfields; i++) {
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", m->manifest.fields[i].name);
    }
    return kiln_fail(err, KILN_ERR_NOT_FOUND, "no field named '%s'; fields: %s", name, names[0] ? names : "none");
}

kiln_status kiln_module_find_field(const kiln_module *m, const char *name, kiln_field_info *out, kiln_error *err) {
    long i = field_index(m, name);
    if (i < 0) return no_field(m, name, err);
    if (!out) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "out is NULL");
    return kiln_module_field_info(m, (size_t)i, out);
}

static kiln_status check_copy(const kiln_module *m, const char *name, const void *buf, size_t nbytes, long *index,
                              kiln_error *err) {
    *index = field_index(m, name);
    if (*index < 0) return no_field(m, name, err);
    size_t want = m->fields[*index].nbytes;
    if (nbytes != want)
        return kiln_fail(err, KILN_ERR_SHAPE, "field '%s' holds %zu bytes, got a buffer of %zu", name, want, nbytes);
    if (!buf && nbytes) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "buffer is NULL");
    return KILN_OK;
}

kiln_status kiln_module_read_field(const kiln_module *m, const char *name, void *dst, size_t nbytes, kiln_error *err) {
    long i;
    kiln_status st = check_copy(m, name, dst, nbytes, &i, err);
    if (st != KILN_OK || !nbytes) return st;
    if (m->device == KILN_DEVICE_CUDA) return kiln_cuda_copy(m, dst, m->fields[i].data, nbytes, 0, err);
    memcpy(dst, m->fields[i].data, nbytes);
    return KILN_OK;
}

kiln_status kiln_module_write_field(kiln_module *m, const char *name, const void *src, size_t nbytes,
                                    kiln_error *err) {
    long i;
    kiln_status st = check_copy(m, name, src, nbytes, &i, err);
    if (st != KILN_OK || !nbytes) return st;
    return store(m, m->fields[i].data, src, nbytes, err);
}

kiln_status kiln_module_seed(kiln_module *m, uint64_t seed, kiln_error *err) {
    if (!m) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "module is NULL");
    seed_state(m->rng_host, seed);
    if (m->device == KILN_DEVICE_CPU) return KILN_OK;
    return store(m, m->rng_data, m->rng_host, sizeof m->rng_host, err);
}

kiln_status kiln_module_rng_state(const kiln_module *m, uint32_t state[4], kiln_error *err) {
    if (!m || !state) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "module or state is NULL");
    if (m->device == KILN_DEVICE_CUDA) return kiln_cuda_copy(m, state, m->rng_data, 4 * sizeof *state, 0, err);
    memcpy(state, m->rng_host, 4 * sizeof *state);
    return KILN_OK;
}
