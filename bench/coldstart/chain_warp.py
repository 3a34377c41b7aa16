"""The cold-start / dispatch workload for Warp: 10 tiny chained kernels, y = y * 1.0001 + c_k.

Kept literal (no codegen) so every peer compiles exactly these 10 distinct kernels."""

import warp as wp


@wp.kernel
def k0(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.1


@wp.kernel
def k1(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.2


@wp.kernel
def k2(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.3


@wp.kernel
def k3(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.4


@wp.kernel
def k4(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.5


@wp.kernel
def k5(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.6


@wp.kernel
def k6(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.7


@wp.kernel
def k7(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.8


@wp.kernel
def k8(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 0.9


@wp.kernel
def k9(y: wp.array(dtype=wp.float32)):
    i = wp.tid()
    y[i] = y[i] * 1.0001 + 1.0


KERNELS = (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9)


def run_chain(y):
    for k in KERNELS:
        wp.launch(k, dim=y.shape[0], inputs=[y], device="cpu")
