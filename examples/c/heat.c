/* Run the heat-diffusion graph of `kiln demo` from C, with no Python anywhere, and check it
 * against a plain C reference of the same simulation (the check `kiln demo` prints).
 *
 *   kiln demo -o heat.kiln                      # compile and save the graph (needs Python once)
 *   cc examples/c/heat.c $(pkg-config --cflags --libs kiln) -o heat && ./heat heat.kiln
 *   ./heat heat.kiln 3 cuda                     # on the GPU, for a file compiled with a cuda target
 *
 * The arrays live on the module's device (kiln_device_alloc: host memory for the CPU, device
 * memory for CUDA), so the same code runs on both.
 *
 * The grid, the diffusion constant, the heat source and the steps per run mirror
 * kiln/cli/demo_reference.py (the source strength and step count are baked into the file). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

enum { H = 256, W = 256, PAIRS_PER_RUN = 50 };
static const float ALPHA = 0.2f, SOURCE = 0.05f;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* a deterministic field in [0, 1) (xorshift64) */
static void initial_state(float *u) {
    uint64_t s = 7;
    for (int i = 0; i < H * W; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        u[i] = (float)(s >> 40) / (float)(1 << 24);
    }
}

/* one diffusion step src -> dst plus the heat source, in float32 like the kernels */
static void step(const float *src, float *dst) {
    for (int i = 1; i < H - 1; i++) {
        for (int j = 1; j < W - 1; j++) {
            float c = src[i * W + j];
            float sum = src[(i - 1) * W + j] + src[(i + 1) * W + j] + src[i * W + j - 1] + src[i * W + j + 1];
            dst[i * W + j] = c + ALPHA * (sum - 4.0f * c);
        }
    }
    for (int i = H / 2 - 4; i < H / 2 + 4; i++)
        for (int j = W / 2 - 4; j < W / 2 + 4; j++) dst[i * W + j] += SOURCE;
}

static double total(const float *u) {
    double e = 0;
    for (int i = 0; i < H * W; i++) e += u[i];
    return e;
}

/* u and v (both starting as `u`) and the energy on the module's device; 0 on failure */
static int device_arrays(const kiln_module *module, const float *u, size_t bytes, void **du, void **dv,
                         void **denergy) {
    kiln_error err;
    if (kiln_device_alloc(module, bytes, du, &err) != KILN_OK || kiln_device_alloc(module, bytes, dv, &err) != KILN_OK ||
        kiln_device_alloc(module, sizeof(double), denergy, &err) != KILN_OK ||
        kiln_device_upload(module, *du, u, bytes, &err) != KILN_OK ||
        kiln_device_upload(module, *dv, u, bytes, &err) != KILN_OK) {
        fprintf(stderr, "kiln demo (C): %s\n", err.message);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "heat.kiln";
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    if (runs < 1 || runs > 100) runs = 3;
    kiln_load_options options = {argc > 3 && strcmp(argv[3], "cuda") == 0 ? KILN_DEVICE_CUDA : KILN_DEVICE_CPU, 0,
                                 NULL};
    kiln_error err;
    kiln_module *module;
    double t0 = now();
    if (kiln_module_load_file_ex(path, &options, &module, &err) != KILN_OK) {
        fprintf(stderr, "kiln demo (C): cannot load: %s\n", err.message);
        return 1;
    }
    double t1 = now();
    const kiln_graph *graph = kiln_module_find_graph(module, "main");
    if (!graph) {
        fprintf(stderr, "kiln demo (C): %s has no graph named 'main'\n", path);
        return 1;
    }
    printf("kiln demo (C runtime %s): 2-D heat diffusion, %dx%d grid, %s code (%s), %d threads\n", kiln_version(),
           H, W, kiln_module_arch(module), kiln_module_cpu(module), kiln_module_num_threads(module));
    printf("  load     %8.2f ms   %s\n", 1e3 * (t1 - t0), path);

    float *u = malloc(sizeof(float) * H * W);
    float *ru = malloc(sizeof(float) * H * W), *rv = malloc(sizeof(float) * H * W);
    double energy[1], energies[100], ref_energies[100], best = 1e30;
    if (!u || !ru || !rv) return 1;
    initial_state(u);
    memcpy(ru, u, sizeof(float) * H * W);
    memcpy(rv, u, sizeof(float) * H * W);
    const size_t bytes = sizeof(float) * H * W;
    void *du = NULL, *dv = NULL, *denergy = NULL;     /* on the module's device */
    if (!device_arrays(module, u, bytes, &du, &dv, &denergy)) return 1;
    const int64_t shape[2] = {H, W}, one = 1;
    kiln_arg args[] = {kiln_arg_array("u", KILN_F32, du, 2, shape), kiln_arg_array("v", KILN_F32, dv, 2, shape),
                       kiln_arg_f64("alpha", ALPHA), kiln_arg_array("energy", KILN_F64, denergy, 1, &one)};
    for (int r = 0; r < runs; r++) {
        energy[0] = 0.0;
        kiln_device_upload(module, denergy, energy, sizeof energy, NULL);
        double s = now();
        if (kiln_graph_run(graph, args, 4, &err) != KILN_OK || kiln_module_synchronize(module, NULL, &err) != KILN_OK) {
            fprintf(stderr, "kiln demo (C): run failed: %s\n", err.message);
            return 1;
        }
        double t = now() - s;
        best = t < best ? t : best;
        kiln_device_download(module, energy, denergy, sizeof energy, NULL);
        energies[r] = energy[0];
        for (int p = 0; p < PAIRS_PER_RUN; p++) {
            step(ru, rv);
            step(rv, ru);
        }
        ref_energies[r] = total(ru);
    }
    if (kiln_device_download(module, u, du, bytes, &err) != KILN_OK) {
        fprintf(stderr, "kiln demo (C): %s\n", err.message);
        return 1;
    }
    double err_u = 0, err_e = 0;
    for (int i = 0; i < H * W; i++) {
        /* not fmax(): GCC 12's aarch64 vectorizer crashes on that reduction (an ICE) */
        double d = fabs((double)u[i] - (double)ru[i]);
        if (d > err_u) err_u = d;
    }
    for (int r = 0; r < runs; r++) err_e = fmax(err_e, fabs(energies[r] - ref_energies[r]) / fabs(ref_energies[r]));
    printf("  run      %8.2f ms   per graph run, %d runs\n", 1e3 * best, runs);
    printf("  check    max |u - reference| = %.2e, energy rel. error = %.2e, energy after each run:", err_u, err_e);
    for (int r = 0; r < runs; r++) printf("%s %.1f", r ? "," : "", energies[r]);
    printf("\n");
    int ok = err_u < 1e-3 && err_e < 1e-5;
    printf(ok ? "kiln demo: OK\n" : "kiln demo: MISMATCH\n");
    kiln_device_free(module, du);
    kiln_device_free(module, dv);
    kiln_device_free(module, denergy);
    kiln_module_free(module);
    free(u);
    free(ru);
    free(rv);
    return ok ? 0 : 1;
}
