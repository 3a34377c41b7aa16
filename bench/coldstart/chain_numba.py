"""The cold-start / dispatch workload for Numba: 10 tiny chained kernels, y = y * 1.0001 + c_k.

Kept literal (no codegen) so every peer compiles exactly these 10 distinct kernels."""

from numba import njit


@njit(cache=True)
def k0(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.1


@njit(cache=True)
def k1(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.2


@njit(cache=True)
def k2(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.3


@njit(cache=True)
def k3(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.4


@njit(cache=True)
def k4(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.5


@njit(cache=True)
def k5(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.6


@njit(cache=True)
def k6(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.7


@njit(cache=True)
def k7(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.8


@njit(cache=True)
def k8(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.9


@njit(cache=True)
def k9(y):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 1.0


KERNELS = (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9)


def run_chain(y):
    for k in KERNELS:
        k(y)
