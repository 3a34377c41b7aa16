"""The cold-start / dispatch workload for Taichi: 10 tiny chained kernels, y = y * 1.0001 + c_k.

Kept literal (no codegen) so every peer compiles exactly these 10 distinct kernels."""

import taichi as ti

Arr = ti.types.ndarray(dtype=ti.f32, ndim=1)


@ti.kernel
def k0(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.1


@ti.kernel
def k1(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.2


@ti.kernel
def k2(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.3


@ti.kernel
def k3(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.4


@ti.kernel
def k4(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.5


@ti.kernel
def k5(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.6


@ti.kernel
def k6(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.7


@ti.kernel
def k7(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.8


@ti.kernel
def k8(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.9


@ti.kernel
def k9(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 1.0


KERNELS = (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9)


def run_chain(y):
    for k in KERNELS:
        k(y)
