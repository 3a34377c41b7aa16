/* Errors, versions and dtypes. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

kiln_status kiln_fail(kiln_error *err, kiln_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void kiln_error_prefix(kiln_error *err, const char *prefix) {
    if (!err || !prefix) return;
    char tmp[sizeof err->message];
    size_t n = strlen(prefix);
    if (n + 2 >= sizeof tmp) return;
    memcpy(tmp, prefix, n);
    memcpy(tmp + n, ": ", 2);
    size_t rest = sizeof tmp - n - 3, len = strlen(err->message);
    if (len > rest) len = rest;
    memcpy(tmp + n + 2, err->message, len);
    tmp[n + 2 + len] = 0;
    memcpy(err->message, tmp, sizeof tmp);
}

const char *kiln_version(void) { return KILN_VERSION_STRING; }

void kiln_format_version(int *major, int *minor) {
    if (major) *major = KILN_FORMAT_MAJOR;
    if (minor) *minor = KILN_FORMAT_MINOR;
}

const char *kiln_status_name(kiln_status status) {
    switch (status) {
    case KILN_OK: return "ok";
    case KILN_ERR_INVALID_ARGUMENT: return "invalid argument";
    case KILN_ERR_IO: return "cannot read file";
    case KILN_ERR_FORMAT: return "damaged or invalid file";
    case KILN_ERR_VERSION: return "unsupported file format version";
    case KILN_ERR_ELF: return "object code refused";
    case KILN_ERR_NO_TARGET: return "no code for this machine";
    case KILN_ERR_NOT_FOUND: return "not found";
    case KILN_ERR_MISSING_ARGUMENT: return "missing argument";
    case KILN_ERR_UNKNOWN_ARGUMENT: return "unknown argument";
    case KILN_ERR_KIND: return "wrong argument kind";
    case KILN_ERR_DTYPE: return "wrong dtype";
    case KILN_ERR_RANK: return "wrong number of dimensions";
    case KILN_ERR_SHAPE: return "shape mismatch";
    case KILN_ERR_STRIDES: return "array not C-contiguous";
    case KILN_ERR_READ_ONLY: return "read-only array written";
    case KILN_ERR_ALIGNMENT: return "misaligned array";
    case KILN_ERR_SCALAR_RANGE: return "scalar out of range";
    case KILN_ERR_RUNTIME: return "native code failed";
    case KILN_ERR_OUT_OF_MEMORY: return "out of memory";
    case KILN_ERR_SYSTEM: return "system call failed";
    case KILN_ERR_NO_DEVICE: return "no CUDA driver, GPU or code for this GPU";
    case KILN_ERR_CUDA: return "CUDA driver call failed";
    }
    return "unknown status";
}

static const char *const DTYPE_NAMES[] = {"bool", "i8",  "i16", "i32", "i64", "u8",
                                          "u16",  "u32", "u64", "f16", "f32", "f64"};
static const size_t DTYPE_SIZES[] = {1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8};
#define NDTYPES (sizeof DTYPE_SIZES / sizeof DTYPE_SIZES[0])

size_t kiln_dtype_size(kiln_dtype dtype) {
    return (unsigned)dtype < NDTYPES ? DTYPE_SIZES[dtype] : 0;
}

const char *kiln_dtype_name(kiln_dtype dtype) {
    return (unsigned)dtype < NDTYPES ? DTYPE_NAMES[dtype] : "?";
}

int kiln_dtype_from_name(const char *name) {
    for (size_t i = 0; i < NDTYPES; i++)
        if (strcmp(name, DTYPE_NAMES[i]) == 0) return (int)i;
    return -1;
}
