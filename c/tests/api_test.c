/* API checks that need no data files beyond one: run by tests/test_c_runtime.py with the path of
 * a file holding the saxpy graph (a: f32, x: f32[n] read, y: f32[n] readwrite, out: f64[1]).
 * Prints one line per failed check and "api_test: N failures"; exits non-zero on any failure. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

static int failures;

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (!(cond)) {                                                   \
            printf("FAILED line %d: %s\n", __LINE__, #cond);             \
            failures++;                                                  \
        }                                                                \
    } while (0)

typedef struct job {
    const kiln_graph *g;
    float x[64], y[64];
    double out;
    int ok;
} job;

static void *worker(void *p) {
    job *j = p;
    int64_t n = 64, one = 1;
    j->ok = 1;
    for (int r = 0; r < 200; r++) {
        for (int i = 0; i < 64; i++) j->y[i] = 0.0f;
        j->out = 0;
        kiln_arg args[] = {kiln_arg_f64("a", 1.0), kiln_arg_array_const("x", KILN_F32, j->x, 1, &n),
                           kiln_arg_array("y", KILN_F32, j->y, 1, &n), kiln_arg_array("out", KILN_F64, &j->out, 1, &one)};
        if (kiln_graph_run(j->g, args, 4, NULL) != KILN_OK || j->y[5] != j->x[5]) j->ok = 0;
    }
    return NULL;
}

static void check_statics(const char *path) {
    CHECK(strcmp(kiln_version(), KILN_VERSION_STRING) == 0);
    int major = -1, minor = -1;
    kiln_format_version(&major, &minor);
    kiln_format_version(NULL, NULL);
    CHECK(major == KILN_FORMAT_MAJOR && minor == KILN_FORMAT_MINOR);
    for (int s = KILN_OK; s <= KILN_ERR_SYSTEM; s++) CHECK(strcmp(kiln_status_name((kiln_status)s), "unknown status") != 0);
    CHECK(strcmp(kiln_status_name((kiln_status)999), "unknown status") == 0);
    CHECK(kiln_dtype_size(KILN_F16) == 2 && kiln_dtype_size(KILN_U64) == 8 && kiln_dtype_size((kiln_dtype)99) == 0);
    CHECK(strcmp(kiln_dtype_name(KILN_BOOL), "bool") == 0 && strcmp(kiln_dtype_name((kiln_dtype)-1), "?") == 0);
    kiln_error err;
    CHECK(kiln_check_file_header(NULL, 0, &err) == KILN_ERR_FORMAT);
    CHECK(kiln_check_file_header("KILN", 4, &err) == KILN_ERR_FORMAT && strstr(err.message, "truncated"));
    kiln_module *m = (kiln_module *)1;
    CHECK(kiln_module_load_file(NULL, &m, &err) == KILN_ERR_INVALID_ARGUMENT);
    CHECK(kiln_module_load_memory(NULL, 10, &m, &err) == KILN_ERR_INVALID_ARGUMENT && m == NULL);
    CHECK(kiln_module_load_memory("", 0, &m, NULL) == KILN_ERR_FORMAT && m == NULL);
    CHECK(kiln_module_load_file("/nonexistent/x.kiln", &m, &err) == KILN_ERR_IO && m == NULL);
    kiln_module_free(NULL);
    CHECK(kiln_module_graph_count(NULL) == 0 && kiln_module_graph(NULL, 0) == NULL);
    CHECK(kiln_module_find_graph(NULL, "main") == NULL && kiln_graph_name(NULL) == NULL);
    CHECK(kiln_graph_run(NULL, NULL, 0, &err) == KILN_ERR_INVALID_ARGUMENT);
    (void)path;
}

static void check_module(const char *path) {
    kiln_error err;
    kiln_module *m;
    if (kiln_module_load_file(path, &m, &err) != KILN_OK) {
        printf("FAILED: load: %s\n", err.message);
        failures++;
        return;
    }
    const kiln_graph *g = kiln_module_find_graph(m, "main");
    CHECK(g && kiln_module_graph(m, 0) == g && kiln_module_graph(m, 1) == NULL);
    CHECK(kiln_module_find_graph(m, "nope") == NULL);
    CHECK(kiln_graph_arg_count(g) == 4);
    kiln_arg_info info;
    CHECK(kiln_graph_arg_info(g, 4, &info) == KILN_ERR_INVALID_ARGUMENT);
    CHECK(kiln_graph_arg_info(g, 1, &info) == KILN_OK && strcmp(info.name, "x") == 0 && info.kind == KILN_ARRAY &&
          info.dtype == KILN_F32 && info.ndim == 1 && info.access == KILN_ACCESS_READ && info.has_shape &&
          strcmp(info.shape_symbol[0], "n") == 0 && info.shape_size[0] == -1);
    CHECK(kiln_module_set_num_threads(m, 0, &err) == KILN_ERR_INVALID_ARGUMENT);
    CHECK(kiln_module_set_num_threads(m, 1, &err) == KILN_OK && kiln_module_num_threads(m) == 1);
    CHECK(kiln_module_set_num_threads(m, 2, &err) == KILN_OK);

    float x[4] = {1, 2, 3, 4}, y[4] = {0};
    double out = 0;
    int64_t n = 4, one = 1, zero = 0;
    /* any order, err reset on success */
    kiln_arg args[] = {kiln_arg_array("out", KILN_F64, &out, 1, &one), kiln_arg_array("y", KILN_F32, y, 1, &n),
                       kiln_arg_array_const("x", KILN_F32, x, 1, &n), kiln_arg_i64("a", 2)};
    err.code = KILN_ERR_IO;
    CHECK(kiln_graph_run(g, args, 4, &err) == KILN_OK && err.code == KILN_OK && y[3] == 8.0f && out == 20.0);
    /* a name given twice */
    kiln_arg twice[] = {args[0], args[1], args[2], args[3], args[3]};
    CHECK(kiln_graph_run(g, twice, 5, &err) == KILN_ERR_UNKNOWN_ARGUMENT && strstr(err.message, "more than once"));
    /* empty arrays: NULL data is fine, the symbol binds to 0 */
    out = 0;
    kiln_arg empty[] = {kiln_arg_f64("a", 1.0), kiln_arg_array("x", KILN_F32, NULL, 1, &zero),
                        kiln_arg_array("y", KILN_F32, NULL, 1, &zero), kiln_arg_array("out", KILN_F64, &out, 1, &one)};
    CHECK(kiln_graph_run(g, empty, 4, &err) == KILN_OK && out == 0.0);
    /* any strides run in place: x read backwards (a negative stride, data at its element 0) */
    float yr[4] = {0};
    int64_t back = -4;
    kiln_arg xr = kiln_arg_array_const("x", KILN_F32, &x[3], 1, &n);
    xr.strides = &back;
    kiln_arg yarg = kiln_arg_array("y", KILN_F32, yr, 1, &n);
    kiln_arg with_strides[] = {args[0], yarg, xr, args[3]};
    CHECK(kiln_graph_run(g, with_strides, 4, &err) == KILN_OK && yr[0] == 8.0f && yr[3] == 2.0f);
    /* a written array whose elements share memory; strides that are not whole elements */
    int64_t stride = 0;
    kiln_arg ybad = yarg;
    ybad.strides = &stride;
    kiln_arg with_bad_strides[] = {args[0], ybad, args[2], args[3]};
    CHECK(kiln_graph_run(g, with_bad_strides, 4, &err) == KILN_ERR_STRIDES && strstr(err.message, "share memory"));
    stride = 6;
    CHECK(kiln_graph_run(g, with_bad_strides, 4, &err) == KILN_ERR_ALIGNMENT);
    /* a bad kind value */
    kiln_arg bad = args[3];
    bad.kind = (kiln_value_kind)77;
    kiln_arg with_bad[] = {args[0], args[1], args[2], bad};
    CHECK(kiln_graph_run(g, with_bad, 4, &err) == KILN_ERR_KIND);

    /* several threads run one graph at once */
    job jobs[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        jobs[t].g = g;
        for (int i = 0; i < 64; i++) jobs[t].x[i] = (float)(t * 100 + i);
        pthread_create(&th[t], NULL, worker, &jobs[t]);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CHECK(jobs[t].ok);
    }
    kiln_module_free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    check_statics(argv[1]);
    check_module(argv[1]);
    printf("api_test: %d failures\n", failures);
    return failures ? 1 : 0;
}
