/* The C runtime's per-run overhead (bench/c_runtime_bench.py builds and runs this): load a .kiln
 * file, then time kiln_graph_run of graph "main" on a 16-element float32 array `y`, as
 * bench/run.py times CompiledGraph.run: best of 5 rounds of the mean of REPS runs (one warm-up;
 * y is reset between rounds, outside the timing).
 *
 *   c_runtime_bench FILE REPS      prints "load_us <t> run_us <t> y0 <value>" */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kiln.h"

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e6 * (double)t.tv_sec + 1e-3 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: c_runtime_bench FILE REPS\n");
        return 2;
    }
    long reps = atol(argv[2]);
    kiln_error err;
    kiln_module *m;
    double t0 = now_us();
    if (kiln_module_load_file(argv[1], &m, &err) != KILN_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    double load = now_us() - t0;
    const kiln_graph *g = kiln_module_find_graph(m, "main");
    float y[16] = {0};
    const int64_t n = 16;
    kiln_arg args[1] = {kiln_arg_array("y", KILN_F32, y, 1, &n)};
    if (!g || kiln_graph_run(g, args, 1, &err) != KILN_OK) {
        fprintf(stderr, "%s\n", g ? err.message : "no graph 'main'");
        return 1;
    }
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 16; i++) y[i] = 0.0f;   /* y grows 1.0001x per kernel: keep it finite */
        double s = now_us();
        for (long r = 0; r < reps; r++) kiln_graph_run(g, args, 1, NULL);
        double mean = (now_us() - s) / (double)reps;
        best = mean < best ? mean : best;
    }
    printf("load_us %.1f run_us %.3f y0 %g\n", load, best, (double)y[0]);
    kiln_module_free(m);
    return 0;
}
