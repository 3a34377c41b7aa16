"""kiln kernels for the bandwidth and reduction benchmarks, written against the planned API.
The outermost loop runs in parallel; `x[i] += v` inside it becomes an atomic."""

import kiln as kl

F32_1 = kl.ndarray(kl.f32, ndim=1)
F32_2 = kl.ndarray(kl.f32, ndim=2)
F64_1 = kl.ndarray(kl.f64, ndim=1)
I32_1 = kl.ndarray(kl.i32, ndim=1)


@kl.kernel
def saxpy(a: kl.f32, x: F32_1, y: F32_1):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def stencil(a: F32_2, out: F32_2):
    for i in range(1, a.shape[0] - 1):
        for j in range(1, a.shape[1] - 1):
            out[i, j] = 0.2 * (a[i, j] + a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, j + 1])


@kl.kernel
def sum_f64(x: F32_1, out: F64_1):
    for i in range(x.shape[0]):
        out[0] += kl.f64(x[i])


@kl.kernel
def hist(keys: I32_1, bins: I32_1):
    for i in range(keys.shape[0]):
        bins[keys[i]] += 1
