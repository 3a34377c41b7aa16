"""The direct-call dispatcher (kiln.dispatch): one home for the current device, compiled code
cached on the kernel object itself, the front end's Kernel left uncallable."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import kiln as kl
from kiln import dispatch
from kiln.lang import kernel as compile_only_kernel


def _make_kernel():
    @kl.kernel
    def fill(x: kl.ndarray(kl.f32, ndim=1), v: kl.f32):
        for i in range(x.shape[0]):
            x[i] = v
    return fill


def test_kl_kernel_is_a_direct_kernel_and_a_front_end_kernel() -> None:
    k = _make_kernel()
    assert isinstance(k, dispatch.DirectKernel) and isinstance(k, kl.Kernel)
    x = np.zeros(4, np.float32)
    k(x, 2.5)
    assert (x == 2.5).all()
    device = dispatch.current_device()
    assert k._fixed is not None and k._fixed[0] == device             # fully annotated: one specialisation
    assert list(k._call_cache) == [(device, (kl.ndarray(kl.f32, ndim=1), kl.f32), kl.f32)]  # + default fp
    assert "_kiln_fixed" not in vars(k) and "_kiln_call_cache" not in vars(k)


def test_compiled_code_dies_with_the_kernel() -> None:
    k = _make_kernel()
    k(np.zeros(3, np.float32), 1.0)
    ref = weakref.ref(next(iter(k._call_cache.values())))
    del k
    gc.collect()
    assert ref() is None


def test_generic_kernels_compile_once_per_argument_types() -> None:
    @kl.kernel
    def double(x: kl.ndarray()):
        for i in range(x.shape[0]):
            x[i] = x[i] * 2

    a, b = np.ones(3, np.float32), np.ones(3, np.int64)
    double(a)
    double(b)
    double(a)
    assert (a == 4).all() and (b == 2).all()
    assert len(double._call_cache) == 2 and double._fixed is None


def test_set_device_is_the_one_place_of_the_device() -> None:
    before = dispatch.current_device()
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        kl.set_device("tpu")
    assert dispatch.current_device() == before
    try:
        kl.set_device("cpu")
        assert dispatch.current_device() == "cpu"
    finally:
        kl.set_device(before)


def test_front_end_kernels_only_compile() -> None:
    @compile_only_kernel
    def noop(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            x[i] = 0.0

    assert noop.specialize((kl.ndarray(kl.f32, ndim=1),)).kernel.is_kernel
    with pytest.raises(TypeError, match="@kl.kernel"):
        noop(np.zeros(2, np.float32))


def test_argument_errors_unchanged() -> None:
    k = _make_kernel()
    with pytest.raises(kl.ArgumentError, match="missing argument 'v'"):
        dispatch.call_kernel(k, (np.zeros(2, np.float32),), {})
    with pytest.raises(kl.ArgumentError, match="expected dtype f32"):
        dispatch.call_kernel(k, (np.zeros(2, np.float64), 1.0), {})
