"""Taichi kernels for the bandwidth and reduction benchmarks (numpy arrays passed zero-copy on CPU).
The outermost loop of a Taichi kernel runs in parallel on the CPU thread pool."""

import taichi as ti

F32_1 = ti.types.ndarray(dtype=ti.f32, ndim=1)
F32_2 = ti.types.ndarray(dtype=ti.f32, ndim=2)
I32_1 = ti.types.ndarray(dtype=ti.i32, ndim=1)


@ti.kernel
def saxpy(a: ti.f32, x: F32_1, y: F32_1):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@ti.kernel
def stencil(a: F32_2, out: F32_2):
    # outer loop parallel, inner serial (same shape as the Numba/kiln kernels; a 2-D ti.ndrange
    # measured ~2x slower here)
    for i in range(1, a.shape[0] - 1):
        for j in range(1, a.shape[1] - 1):
            out[i, j] = 0.2 * (a[i, j] + a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, j + 1])


@ti.kernel
def sum_f64(x: F32_1) -> ti.f64:
    # a kernel-local accumulator gets Taichi's thread-local reduction; `out[0] += ...` into an
    # ndarray stays a contended atomic (~15x slower here)
    s = ti.cast(0.0, ti.f64)
    for i in range(x.shape[0]):
        s += ti.cast(x[i], ti.f64)
    return s


@ti.kernel
def hist(keys: I32_1, bins: I32_1):
    for i in range(keys.shape[0]):
        bins[keys[i]] += 1
