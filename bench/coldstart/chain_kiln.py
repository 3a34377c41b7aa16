"""The cold-start / dispatch workload for kiln: 10 tiny chained kernels, y = y * 1.0001 + c_k.

Kept literal (no codegen) so every peer compiles exactly these 10 distinct kernels."""

import kiln as kl

Arr = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def k0(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.1


@kl.kernel
def k1(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.2


@kl.kernel
def k2(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.3


@kl.kernel
def k3(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.4


@kl.kernel
def k4(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.5


@kl.kernel
def k5(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.6


@kl.kernel
def k6(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.7


@kl.kernel
def k7(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.8


@kl.kernel
def k8(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 0.9


@kl.kernel
def k9(y: Arr):
    for i in range(y.shape[0]):
        y[i] = y[i] * 1.0001 + 1.0


KERNELS = (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9)


def build():
    """The 10 kernels as one kiln graph over a symbolic array `y`."""
    y = kl.Arg("y", Arr)
    g = kl.GraphBuilder()
    for k in KERNELS:
        g.dispatch(k, y)
    return g.compile()
