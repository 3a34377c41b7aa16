"""Several GPUs in one process, on real hardware (skipped with fewer than 2 GPUs or without
PyTorch): a graph per GPU, "cuda:N" in load / compile / set_device / run, arrays on the wrong
GPU refused before anything runs, and runs on PyTorch, CuPy and raw streams interleaved with
other work on those streams without a device-wide synchronise. tests/test_cuda_runtime.py checks
the same plumbing against the recording driver on any machine."""

from __future__ import annotations

import numpy as np
import pytest

import kiln as kl
from kiln.errors import ArgumentError


def _reason() -> str | None:
    from kiln.codegen.nvptx import nvptx_available
    from kiln.runtime.cuda_driver import cuda_available, device_count
    why = nvptx_available() or cuda_available()
    if why is not None:
        return why
    if device_count() < 2:
        return f"{device_count()} GPU visible, 2 needed"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if torch.cuda.device_count() < 2:
        return "PyTorch sees fewer than 2 GPUs"
    return None


REASON = _reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"multi-GPU tests: {REASON}")


@kl.kernel
def axpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


def _graph() -> kl.GraphBuilder:
    g = kl.GraphBuilder()
    x, y = kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",)), kl.Arg("y", kl.ndarray(kl.f32, ndim=1), shape=("n",))
    for k in range(3):
        g.dispatch(axpy, kl.Arg("a", kl.f32) if k != 1 else 1.0, x, y)
    return g


@pytest.fixture(scope="module")
def gpu_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi") / "axpy.kiln"
    m = kl.Module(targets=["cuda"])
    m.add_graph("main", _graph())
    m.save(path)
    return path


def test_a_graph_per_gpu(gpu_file):
    import torch
    graphs = [kl.load(gpu_file, device=f"cuda:{d}") for d in (0, 1)]
    ys = []
    for d, g in enumerate(graphs):
        x = torch.arange(1000, dtype=torch.float32, device=f"cuda:{d}")
        y = torch.full((1000,), float(d), device=f"cuda:{d}")
        for a in (2.0, 3.0):                     # a replay with a new scalar on each GPU
            g.run({"a": a, "x": x, "y": y})
        ys.append(y)
    x = np.arange(1000, dtype=np.float32)
    for d, y in enumerate(ys):
        torch.cuda.synchronize(d)
        want = d + (2.0 + 1.0 + 2.0) * x + (3.0 + 1.0 + 3.0) * x
        np.testing.assert_allclose(y.cpu().numpy(), want, rtol=1e-6)
    compiled = _graph().compile(targets=["cuda"], device="cuda:1")
    xn, yn = np.ones(64, np.float32), np.zeros(64, np.float32)
    compiled.run({"a": 1.0, "x": xn, "y": yn})      # numpy arrays: staged on GPU 1
    np.testing.assert_array_equal(yn, np.full(64, 3.0, np.float32))


def test_arrays_on_the_wrong_gpu_are_refused(gpu_file):
    import torch
    g1 = kl.load(gpu_file, device="cuda:1")
    x1 = torch.ones(16, device="cuda:1")
    y0 = torch.zeros(16, device="cuda:0")
    with pytest.raises(ArgumentError, match=r"argument 'y': the array is on GPU cuda:0, this run is on cuda:1"):
        g1.run({"a": 1.0, "x": x1, "y": y0})
    assert (y0.cpu() == 0).all()
    g1.run({"a": 1.0, "x": x1, "y": y0.to("cuda:1")})


def test_direct_calls_on_the_second_gpu():
    import torch
    kl.set_device("cuda:1")
    try:
        x = torch.ones(100, device="cuda:1")
        y = torch.zeros(100, device="cuda:1")
        axpy(2.0, x, y)
        torch.cuda.synchronize(1)
        assert (y.cpu() == 2.0).all()
        with pytest.raises(ArgumentError, match="the array is on GPU cuda:0"):
            axpy(2.0, torch.ones(100, device="cuda:0"), y)
    finally:
        kl.set_device("cpu")


def test_streams_of_pytorch_and_cupy_and_raw_handles(gpu_file):
    import torch
    g = kl.load(gpu_file, device="cuda:1")
    with torch.cuda.device(1):
        s = torch.cuda.Stream()
        x = torch.ones(1 << 20, device="cuda:1")
        y = torch.zeros(1 << 20, device="cuda:1")
        with torch.cuda.stream(s):
            y.add_(1.0)                          # other work on the same stream, before and after
            g.run({"a": 1.0, "x": x, "y": y}, stream=s)
            y.mul_(2.0)
            g.run({"a": 1.0, "x": x, "y": y}, stream=s.cuda_stream)   # the raw handle
        s.synchronize()
        assert (y.cpu() == (1 + 3) * 2 + 3).all()
    try:
        import cupy as cp
    except ImportError:
        return
    with cp.cuda.Device(1):
        cs = cp.cuda.Stream(non_blocking=True)
        cx = cp.ones(1000, dtype=cp.float32)
        cy = cp.zeros(1000, dtype=cp.float32)
        g.run({"a": 2.0, "x": cx, "y": cy}, stream=cs)
        cs.synchronize()
        assert float(cy[0]) == 2.0 + 1.0 + 2.0
