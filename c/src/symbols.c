/* External symbols the object code may call (the allow-list of kiln/runtime/elf.py, checked
 * against it by tests/test_c_runtime.py), their resolution from libm/libc/libgcc_s with dlopen,
 * and libgomp for parallel loops (kiln/runtime/threads.py: the object code calls it through
 * pointer globals that the runtime fills in, so it never links against libgomp). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* BEGIN ALLOWED_EXTERNAL_SYMBOLS (each double function also allowed with an "f" suffix) */
static const char *const LIBM_F64[] = {
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "exp", "exp2", "expm1", "exp10", "log", "log2", "log10", "log1p", "logb", "ilogb", "pow",
    "sqrt", "cbrt", "hypot", "fmod", "remainder", "remquo", "fabs", "floor", "ceil", "trunc", "round",
    "roundeven", "rint", "nearbyint", "lround", "llround", "lrint", "llrint", "fmin", "fmax", "fdim",
    "fma", "copysign", "nextafter", "nexttoward", "erf", "erfc", "tgamma", "lgamma", "frexp", "ldexp",
    "scalbn", "scalbln", "modf", "nan", "significand", "sincos", NULL};
static const char *const OTHERS[] = {
    "__sincos", "__sincosf", "__exp_finite", "__expf_finite", "__log_finite", "__logf_finite",
    "__pow_finite", "__powf_finite", "__sin_finite", "__cos_finite",
    "memset", "memcpy", "memmove", "memcmp", "bzero",
    "__extendhfsf2", "__truncsfhf2", "__truncdfhf2", "__extendhfdf2", "__gnu_h2f_ieee", "__gnu_f2h_ieee",
    "__truncsfbf2", "__truncdfbf2", "__extendbfsf2",
    "__divti3", "__udivti3", "__modti3", "__umodti3", "__muloti4", "__popcountdi2", "__powisf2", "__powidf2",
    "__fixsfti", "__fixdfti", "__fixunssfti", "__fixunsdfti", "__floattisf", "__floattidf", "__floatuntisf",
    "__floatuntidf", NULL};
/* END ALLOWED_EXTERNAL_SYMBOLS */

static int in_list(const char *const *list, const char *name, size_t len) {
    for (; *list; list++)
        if (strlen(*list) == len && strncmp(*list, name, len) == 0) return 1;
    return 0;
}

int kiln_external_allowed(const char *name) {
    size_t n = strlen(name);
    if (in_list(LIBM_F64, name, n) || in_list(OTHERS, name, n)) return 1;
    return n > 1 && name[n - 1] == 'f' && in_list(LIBM_F64, name, n - 1);
}

static void *libs[3];
static pthread_once_t libs_once = PTHREAD_ONCE_INIT;

static void open_libs(void) {
    static const char *const names[] = {"libm.so.6", "libc.so.6", "libgcc_s.so.1"};
    for (int i = 0; i < 3; i++) libs[i] = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
}

void *kiln_resolve_external(const char *name) {
    pthread_once(&libs_once, open_libs);
    for (int i = 0; i < 3; i++) {
        if (!libs[i]) continue;
        void *p = dlsym(libs[i], name);
        if (p) return p;
    }
    return NULL;
}

static void *gomp[3];
static int gomp_ok;
static pthread_once_t gomp_once = PTHREAD_ONCE_INIT;

static void open_gomp(void) {
    void *lib = dlopen("libgomp.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    gomp[0] = dlsym(lib, "GOMP_parallel");
    gomp[1] = dlsym(lib, "omp_get_thread_num");
    gomp[2] = dlsym(lib, "omp_get_num_threads");
    gomp_ok = gomp[0] && gomp[1] && gomp[2];
}

int kiln_gomp_functions(void *out[3]) {
    pthread_once(&gomp_once, open_gomp);
    if (!gomp_ok) return 0;
    memcpy(out, gomp, sizeof gomp);
    return 1;
}

int kiln_default_threads(void) {
    const char *env = getenv("KILN_NUM_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == 0 && n >= 1 && n <= 4096) return (int)n;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        return n > 0 ? n : 1;
    }
    return 1;
}
