"""Numba kernels for the bandwidth and reduction benchmarks (parallel = prange, serial = range)."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def copy_par(src, dst):
    for i in prange(src.shape[0]):
        dst[i] = src[i]


@njit(parallel=True, cache=True)
def saxpy_par(a, x, y):
    for i in prange(x.shape[0]):
        y[i] = a * x[i] + y[i]


@njit(cache=True)
def saxpy_ser(a, x, y):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@njit(parallel=True, cache=True)
def stencil_par(a, out):
    n, m = a.shape
    for i in prange(1, n - 1):
        for j in range(1, m - 1):
            out[i, j] = np.float32(0.2) * (a[i, j] + a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, j + 1])


@njit(cache=True)
def stencil_ser(a, out):
    n, m = a.shape
    for i in range(1, n - 1):
        for j in range(1, m - 1):
            out[i, j] = np.float32(0.2) * (a[i, j] + a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, j + 1])


@njit(parallel=True, cache=True)
def sum_par(x):
    s = 0.0
    for i in prange(x.shape[0]):
        s += np.float64(x[i])
    return s


@njit(parallel=True, cache=True)
def hist_par(keys, nbins, nt):
    # Numba has no atomics: one private histogram per thread (nt = numba.get_num_threads()),
    # merged at the end.
    n = keys.shape[0]
    chunk = (n + nt - 1) // nt
    local = np.zeros((nt, nbins), dtype=np.int32)
    for t in prange(nt):
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            local[t, keys[i]] += 1
    return local.sum(axis=0).astype(np.int32)
