"""Arrays of any layout run in place (kiln.abi: the argument block carries element strides):
numpy views, transposes, Fortran order, negative steps and broadcast inputs, and host arrays
that are not numpy arrays (__array_interface__, the buffer protocol, CPU DLPack), through direct
kernel calls, graphs and loaded files. Every case checks that the caller's memory changed, not
a copy's."""

from __future__ import annotations

import array
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln as kl

F64_1 = kl.ndarray(kl.f64, ndim=1)
F64_2 = kl.ndarray(kl.f64, ndim=2)
F32_1 = kl.ndarray(kl.f32, ndim=1)
I32_1 = kl.ndarray(kl.i32, ndim=1)


@kl.kernel
def axpy2(a: kl.f64, x: F64_2, y: F64_2):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            y[i, j] = a * x[i, j] + y[i, j]


@kl.kernel
def scale32(x: F32_1, out: F32_1):
    for i in range(x.shape[0]):
        out[i] = 2.0 * x[i]


@kl.kernel
def hist(keys: I32_1, bins: I32_1):
    for i in range(keys.shape[0]):
        bins[keys[i]] += 1


@kl.kernel
def hist2(keys: I32_1, bins: kl.ndarray(kl.i32, ndim=2)):
    for i in range(keys.shape[0]):
        bins[keys[i] % 4, keys[i] // 4] += 1


@kl.func
def first_plus_last(v: F64_2, i: kl.i64) -> kl.f64:
    return v[i, 0] + v[i, v.shape[1] - 1]


@kl.kernel
def ends(x: F64_2, out: F64_1):
    for i in range(x.shape[0]):
        out[i] = first_plus_last(x, i)


def _layouts() -> list[tuple[str, Any]]:
    """(name, function of a C-ordered (6, 5) base giving a view of shape (3, 5) or (5, 3))."""
    return [("contiguous", lambda b: b[:3]), ("row step", lambda b: b[::2]), ("column step", lambda b: b[:3, ::1]),
            ("transpose", lambda b: b[:3].T), ("negative steps", lambda b: b[5:2:-1, ::-1]),
            ("fortran", lambda b: np.asfortranarray(b[:3]).T.T), ("both steps", lambda b: b[::2, ::-2])]


@pytest.mark.parametrize("name,view", _layouts())
def test_direct_call_any_layout_writes_through(name: str, view: Any) -> None:
    base_x = np.arange(30.0).reshape(6, 5)
    base_y = np.ones((6, 5))
    x, y = view(base_x), view(base_y)
    if name == "fortran":        # an independent Fortran-ordered array: x and y differ in layout
        y = np.asfortranarray(np.ones_like(x))
        base_y = y
    want = 3.0 * x + y
    axpy2(3.0, x, y)
    np.testing.assert_array_equal(y, want)
    assert np.shares_memory(y, base_y)     # written in place: the caller's array changed
    assert y.base is base_y or y is base_y or name == "fortran"


def test_broadcast_inputs_are_read_but_never_written() -> None:
    x = np.broadcast_to(np.arange(5.0), (4, 5))        # zero stride, read-only
    y = np.zeros((4, 5))
    axpy2(2.0, x, y)
    np.testing.assert_array_equal(y, 2.0 * np.arange(5.0)[None, :].repeat(4, 0))
    writable_alias = np.lib.stride_tricks.as_strided(np.zeros(5), (4, 5), (0, 8))
    before = y.copy()
    with pytest.raises(kl.ArgumentValueError, match="argument 'y': .*strides .*make elements share memory"):
        axpy2(2.0, y, writable_alias)
    with pytest.raises(kl.ArgumentValueError, match="argument 'y': array is read-only"):
        axpy2(2.0, y, x)
    np.testing.assert_array_equal(y, before)


def test_overlapping_strides_refused_for_written_arrays() -> None:
    mem = np.zeros(10)
    overlapping = np.lib.stride_tricks.as_strided(mem, (3, 4), (16, 8))   # rows share elements
    with pytest.raises(kl.ArgumentValueError, match="make elements share memory"):
        axpy2(1.0, np.ones((3, 4)), overlapping)
    axpy2(1.0, overlapping, np.zeros((3, 4)))            # reading it is fine
    assert not mem.any()


def test_misaligned_strides_refused() -> None:
    raw = np.zeros(41, np.uint8)
    odd = np.lib.stride_tricks.as_strided(raw[1:].view(np.float32)[:1], (5,), (5,))   # 5-byte stride
    with pytest.raises(kl.ArgumentValueError, match="not aligned"):
        scale32(odd, np.zeros(5, np.float32))


def test_funcs_and_parallel_privatised_loops_see_strides() -> None:
    x = np.arange(20.0).reshape(4, 5)[:, ::-2]           # (4, 3), negative inner stride
    out = np.zeros(8)[::2]
    ends(x, out)
    np.testing.assert_array_equal(out, x[:, 0] + x[:, -1])
    keys = np.random.default_rng(0).integers(0, 16, 5000).astype(np.int32)
    base = np.zeros(64, np.int32)
    bins = base[::-4]                                     # 16 bins, stride -4
    hist(keys[::-1], bins)
    np.testing.assert_array_equal(bins, np.bincount(keys, minlength=16))
    assert base.sum() == 5000 and base[::-4].sum() == 5000
    base2 = np.zeros((8, 6), np.int32)
    bins2 = base2[1:5, ::-1][:, :4].T                      # (4, 4): privatised, merged through strides
    hist2(keys, bins2.T)
    np.testing.assert_array_equal(bins2.T, np.bincount(keys, minlength=16).reshape(4, 4).T)
    assert base2.sum() == 5000


def test_graph_run_and_loaded_file_with_views(tmp_path: Path) -> None:
    g = kl.GraphBuilder()
    x, y = kl.Arg("x", F64_2, shape=("n", "m")), kl.Arg("y", F64_2, shape=("n", "m"))
    g.dispatch(axpy2, 2.0, x, y)
    g.dispatch(axpy2, 1.0, x, y)
    compiled = g.compile()
    compiled.save(tmp_path / "g.kiln")
    for runner in (compiled, kl.load(tmp_path / "g.kiln")):
        bx = np.arange(24.0).reshape(4, 6)
        by = np.zeros((6, 4))
        runner.run({"x": bx[:, ::-1].T, "y": by})
        np.testing.assert_array_equal(by, 3.0 * bx[:, ::-1].T)


class _Interface:
    """Only numpy's array interface (version 3), over another array's memory."""

    def __init__(self, a: np.ndarray) -> None:
        self.base = a
        self.__array_interface__ = {"shape": a.shape, "typestr": a.dtype.str, "version": 3,
                                    "data": (a.ctypes.data, not a.flags.writeable), "strides": a.strides}


class _DLPackOnly:
    """Only the DLPack protocol (what PyTorch or JAX CPU arrays offer), here over a numpy array."""

    def __init__(self, a: np.ndarray, versioned: bool = True, device: tuple[int, int] = (1, 0)) -> None:
        self.a, self.versioned, self.device = a, versioned, device

    def __dlpack__(self, **kwargs: Any) -> Any:
        if not self.versioned:
            if "max_version" in kwargs:
                raise TypeError("an old producer: no max_version")
            return self.a.__dlpack__()
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device


def test_array_interface_objects_zero_copy() -> None:
    base = np.ones((6, 5))
    axpy2(2.0, _Interface(np.arange(15.0).reshape(5, 3).T), _Interface(base[::2]))
    np.testing.assert_array_equal(base[::2], 1.0 + 2.0 * np.arange(15.0).reshape(5, 3).T)
    np.testing.assert_array_equal(base[1::2], 1.0)
    ro = np.zeros((3, 5))
    ro.flags.writeable = False
    with pytest.raises(kl.ArgumentValueError, match="argument 'y': array is read-only"):
        axpy2(2.0, np.ones((3, 5)), _Interface(ro))


def test_buffer_protocol_objects_zero_copy() -> None:
    out = array.array("f", [0.0] * 4)
    scale32(memoryview(array.array("f", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]))[::2], out)
    assert list(out) == [2.0, 6.0, 10.0, 14.0]
    raw = bytearray(16)
    scale32(np.arange(4, dtype=np.float32), memoryview(raw).cast("f"))
    assert np.frombuffer(raw, np.float32).tolist() == [0.0, 2.0, 4.0, 6.0]
    with pytest.raises(kl.ArgumentValueError, match="argument 'out': array is read-only"):
        scale32(np.ones(4, np.float32), memoryview(bytes(16)).cast("f"))
    with pytest.raises(kl.ArgumentError, match="argument 'x': expected dtype f32, got uint8"):
        scale32(bytearray(4), np.zeros(4, np.float32))


def test_cpu_dlpack_producers_zero_copy() -> None:
    base = np.zeros((6, 5))
    axpy2(1.0, _DLPackOnly(np.arange(15.0).reshape(3, 5)), _DLPackOnly(base[::2, ::-1]))
    np.testing.assert_array_equal(base[::2, ::-1], np.arange(15.0).reshape(3, 5))
    # an old producer cannot say its memory is writable: numpy views it read-only
    axpy2(1.0, _DLPackOnly(np.ones((3, 5)), versioned=False), base[:3])
    with pytest.raises(kl.ArgumentValueError, match="argument 'y': .*DLPack export is read-only.*tensor.numpy"):
        axpy2(1.0, np.ones((3, 5)), _DLPackOnly(base[:3], versioned=False))


@pytest.mark.parametrize("device,hint", [((2, 0), "device cuda:0.*device='cuda'"), ((4, 1), "device opencl:1")])
def test_dlpack_on_a_device_is_refused_with_the_way_to_run_it(device: tuple[int, int], hint: str) -> None:
    y = np.zeros((3, 5))
    g = kl.GraphBuilder()
    g.dispatch(axpy2, 1.0, kl.Arg("x", F64_2), kl.Arg("y", F64_2))
    compiled = g.compile()
    with pytest.raises(kl.ArgumentError, match=f"argument 'x': a DLPack array on {hint}"):
        compiled.run({"x": _DLPackOnly(np.ones((3, 5)), device=device), "y": y})
    assert not y.any()


class _CudaOnly:
    def __init__(self) -> None:
        self.__cuda_array_interface__ = {"shape": (3, 5), "typestr": "<f8", "data": (4096, False), "version": 3}


def test_non_array_objects_still_refused() -> None:
    with pytest.raises(kl.ArgumentError, match="expected a numpy.ndarray"):
        axpy2(1.0, [[1.0]], np.zeros((1, 1)))
    g = kl.GraphBuilder()
    g.dispatch(axpy2, 1.0, kl.Arg("x", F64_2), kl.Arg("y", F64_2))
    with pytest.raises(kl.ArgumentError, match="argument 'x': a CUDA device array .*device='cuda'"):
        g.compile().run({"x": _CudaOnly(), "y": np.zeros((3, 5))})


def test_torch_cpu_tensors_when_installed() -> None:
    torch = pytest.importorskip("torch")
    t = torch.zeros((6, 5), dtype=torch.float64)
    axpy2(2.0, torch.ones((5, 3), dtype=torch.float64).T, t[::2])
    assert float(t[::2].sum()) == 30.0 and float(t[1::2].sum()) == 0.0


def test_interpreter_runs_strided_views() -> None:
    from kiln import passes
    from kiln.interp import run_kernel
    base = np.ones((6, 5))
    kir = passes.lower_aug_stores(axpy2.specialize((kl.f64, F64_2, F64_2)))
    run_kernel(kir, {"a": 2.0, "x": np.arange(15.0).reshape(5, 3).T, "y": base[::2]})
    np.testing.assert_array_equal(base[::2], 1.0 + 2.0 * np.arange(15.0).reshape(5, 3).T)
