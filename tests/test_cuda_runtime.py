"""The CUDA runtime's loading, device choice, streams, pickling and direct calls, checked without a
GPU against the recording driver of tests/fake_cuda_driver.py (which can show several GPUs):
`kl.load` picks the GPU for files without CPU code, "cuda:N" everywhere a device is named,
arrays on the wrong GPU refused, one graph per GPU in one process, any stream object, CUDA
objects pickled as their file bytes and saved signed, vector arguments of direct calls."""

from __future__ import annotations

import pickle
import struct
import warnings

import numpy as np
import pytest

import kiln as kl
from kiln.errors import ArgumentError, ArtifactError

try:
    from kiln.codegen.nvptx import nvptx_available
    NVPTX_REASON = nvptx_available()
except ImportError as e:  # pragma: no cover - llvmlite missing
    NVPTX_REASON = str(e)

pytestmark = [pytest.mark.skipif(NVPTX_REASON is not None, reason=f"no NVPTX target: {NVPTX_REASON}"),
              pytest.mark.filterwarnings("ignore:kiln. the cuda target holds PTX only")]

A1F = kl.ndarray(kl.f32, ndim=1)
V2 = kl.ndarray(kl.vec2, ndim=1)


@kl.kernel
def axpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def affine(x: V2, g: kl.vec2, m: kl.mat2, s: kl.f32):
    for i in range(x.shape[0]):
        x[i] = m @ x[i] * s + g


class DeviceArray:
    def __init__(self, n: int, ptr: int) -> None:
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": "<f4", "data": (ptr, False),
                                         "strides": None, "version": 3}


def _graph() -> kl.GraphBuilder:
    g = kl.GraphBuilder()
    g.dispatch(axpy, kl.Arg("a", kl.f32), kl.Arg("x", A1F, shape=("n",)), kl.Arg("y", A1F, shape=("n",)))
    return g


def _cuda_only_file(tmp_path):
    m = kl.Module(targets=["cuda"], cuda_archs=[])
    m.add_graph("main", _graph())
    m.add_kernel(axpy, name="axpy")
    path = tmp_path / "gpu_only.kiln"
    m.compile().save(path)
    return path


def _fake(monkeypatch, gpus: int = 1):
    import fake_cuda_driver as fake
    fake.install(monkeypatch)
    fake.GPUS[0] = gpus
    return fake


def test_load_picks_the_gpu_for_a_file_without_cpu_code(tmp_path, monkeypatch):
    from kiln.runtime.cuda import CudaGraph, CudaModule
    from kiln.runtime.cuda_driver import cuda_available
    path = _cuda_only_file(tmp_path)
    if cuda_available() is not None:   # no usable GPU here (no cuda-bindings or no driver)
        with pytest.raises(ArtifactError, match='holds no CPU code.*load it with device="cuda"'):
            kl.load(path)
        with pytest.raises(ArtifactError, match='device="cuda"'):
            kl.load_module(path)
    with pytest.raises(ArtifactError, match="has no CPU code"):
        kl.load(path, device="cpu")                   # asked for the CPU: the CPU loader's error
    _fake(monkeypatch)
    assert isinstance(kl.load(path), CudaGraph)
    m = kl.load_module(path)
    assert isinstance(m, CudaModule) and m.device == 0 and sorted(m.kernels) == ["axpy"]
    cpu_and_gpu = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    cpu_and_gpu.add_graph("main", _graph())
    both = tmp_path / "both.kiln"
    cpu_and_gpu.save(both)
    assert isinstance(kl.load(both), kl.CompiledGraph)   # CPU code first, GPU or not


def test_device_names(tmp_path, monkeypatch):
    path = _cuda_only_file(tmp_path)
    assert kl.load(path, device="cuda:1")._module.device == 1
    assert kl.load_module(path, device="cuda").device == 0
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:x", "CUDA:1"):
        with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
            kl.load(path, device=bad)
        with pytest.raises(ValueError, match="set_device: device must be 'cpu', 'cuda' or 'cuda:N'"):
            kl.set_device(bad)
    g = _graph().compile(targets=["cuda"], cuda_archs=[], device="cuda:1")
    assert g._module.device == 1
    m = kl.Module(targets=["cuda"], cuda_archs=[])
    m.add_graph("main", _graph())
    assert m.compile().device == 0 and m.compile(device="cuda:1").device == 1 and m.compile().device == 0
    fake = _fake(monkeypatch, gpus=1)
    from kiln.errors import CudaError
    with pytest.raises(CudaError, match="CUDA device 1 does not exist"):
        g.run({"a": 1.0, "x": DeviceArray(8, 0x1000), "y": DeviceArray(8, 0x2000)})
    assert not [e for e in fake.LOG if e[0] in ("load", "graphlaunch")]


def test_one_graph_per_gpu_and_arrays_on_the_wrong_gpu(tmp_path, monkeypatch):
    fake = _fake(monkeypatch, gpus=2)
    path = _cuda_only_file(tmp_path)
    g0, g1 = kl.load(path), kl.load(path, device="cuda:1")
    fake.POINTER_GPU.update({0xA000: 0, 0xB000: 0, 0xC000: 1, 0xD000: 1})
    g0.run({"a": 2.0, "x": DeviceArray(100, 0xA000), "y": DeviceArray(100, 0xB000)})
    g1.run({"a": 3.0, "x": DeviceArray(100, 0xC000), "y": DeviceArray(100, 0xD000)})
    loads = [i for i, e in enumerate(fake.LOG) if e[0] == "load"]
    assert len(loads) == 2 and ("ctx", 1) in fake.LOG[loads[0]:loads[1]]    # loaded into GPU 1's context
    allocs = [e for e in fake.LOG if e[0] == "alloc"]
    assert {e[2] for e in allocs} == {0, 1}             # each graph's argument buffer on its own GPU
    with pytest.raises(ArgumentError, match=r"argument 'y': the array is on GPU cuda:0, this run is on cuda:1"):
        g1.run({"a": 3.0, "x": DeviceArray(100, 0xC000), "y": DeviceArray(100, 0xB000)})
    with pytest.raises(ArgumentError, match=r"argument 'x': the array is on GPU cuda:1, this run is on cuda:0"):
        g0.run({"a": 3.0, "x": DeviceArray(100, 0xC000), "y": DeviceArray(100, 0xB000)})
    # the same module on both GPUs: numpy arguments staged on the GPU of each run
    m = kl.load_module(path)
    x, y = np.ones(64, np.float32), np.zeros(64, np.float32)
    fake.LOG.clear()
    m.graphs["main"].run({"a": 1.0, "x": x, "y": y}, device="cuda:1")
    m.graphs["main"].run({"a": 1.0, "x": x, "y": y}, device=0)
    staged = [e for e in fake.LOG if e[0] == "alloc" and e[1] == 256]
    assert [e[2] for e in staged] == [1, 1, 0, 0]


class TorchLikeStream:
    cuda_stream = 0x5150


class CupyLikeStream:
    ptr = 0x5151


class ProtocolStream:
    def __cuda_stream__(self):
        return (0, 0x5152)


@pytest.mark.parametrize("stream,handle", [(TorchLikeStream(), 0x5150), (CupyLikeStream(), 0x5151),
                                           (ProtocolStream(), 0x5152), (0x5153, 0x5153), (None, 0)])
def test_runs_go_to_the_callers_stream(tmp_path, monkeypatch, stream, handle):
    fake = _fake(monkeypatch)
    g = kl.load(_cuda_only_file(tmp_path))
    g.run({"a": 2.0, "x": DeviceArray(100, 0xA000), "y": DeviceArray(100, 0xB000)}, stream=stream)
    x, y = np.ones(64, np.float32), np.zeros(64, np.float32)
    g.run({"a": 2.0, "x": x, "y": y}, stream=stream)
    streams = {e[-1] for e in fake.LOG if e[0] in ("htod", "dtoh", "record", "graphlaunch", "sync")}
    assert streams == {handle}        # every copy, replay and the one wait: the caller's stream alone
    with pytest.raises(ArgumentError, match="stream: expected an int handle"):
        g.run({"a": 2.0, "x": x, "y": y}, stream="default")


def test_cuda_objects_pickle_as_their_file_bytes(tmp_path, monkeypatch):
    from kiln.runtime.cuda import CudaGraph, CudaKernel, CudaModule
    m = kl.load_module(_cuda_only_file(tmp_path), device="cuda:1")
    for obj, cls in ((m, CudaModule), (m.graphs["main"], CudaGraph), (m.kernels["axpy"], CudaKernel)):
        data = pickle.dumps(obj)
        assert b"kiln.runtime.cuda" in data and b"_unpickle" in data
        back = pickle.loads(data)
        assert isinstance(back, cls)
        module = back if isinstance(back, CudaModule) else back._module
        assert module.device == 1 and module.to_bytes() == m.to_bytes()
    fake = _fake(monkeypatch, gpus=2)
    fake.POINTER_GPU.update({0xC000: 1, 0xD000: 1})
    pickle.loads(pickle.dumps(m.graphs["main"])).run({"a": 1.0, "x": DeviceArray(8, 0xC000),
                                                       "y": DeviceArray(8, 0xD000)})
    assert any(e[0] == "graphlaunch" for e in fake.LOG)


def test_cuda_module_saves_signed(tmp_path):
    pytest.importorskip("cryptography")
    from kiln.signing import generate_key, signature_key
    keys = generate_key()
    m = kl.load_module(_cuda_only_file(tmp_path), device="cuda")
    m.save(tmp_path / "signed.kiln", sign_key=keys.private)
    m.graphs["main"].save(tmp_path / "signed_graph.kiln", sign_key=keys.private)
    for name in ("signed.kiln", "signed_graph.kiln"):
        data = (tmp_path / name).read_bytes()
        assert signature_key(data) == keys.public
        assert kl.load_module(tmp_path / name, device="cuda", trusted_keys=[keys.public]).to_bytes() == data
    with pytest.raises(ArtifactError):
        kl.load(tmp_path / "signed.kiln", device="cuda", trusted_keys=[generate_key().public])


def test_vector_and_matrix_arguments_of_direct_calls(monkeypatch):
    """A direct call on the GPU binds a vector or matrix argument by its one name (the compiled
    kernel's binder, used from the second call on, took one name per element)."""
    from kiln.codegen import nvptx
    fake = _fake(monkeypatch)
    # PTX only: the recording driver reads ABI descriptors from PTX text, not from cubins (which
    # direct calls link where nvJitLink is installed)
    monkeypatch.setattr(nvptx, "DEFAULT_CUBIN_ARCHS", ())
    kl.set_device("cuda")
    try:
        x = np.ones((5, 2), np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            affine(x, (1.0, 2.0), [[0, 1], [1, 0]], 2.0)
        for g, m, s in [((0.5, 0.25), np.eye(2), 1.0), (np.float32([3, 4]), [[1, 2], [3, 4]], -1.0)]:
            fake.LOG.clear()
            affine(x, g, m, s)
            (launch,) = [e for e in fake.LOG if e[0] == "launch"]
            slots = fake.slots(launch[6], 13)     # x: pointer, 2 extents, 2 strides (kiln.abi)
            floats = [struct.unpack("<f", b[:4])[0] for b in slots[5:12]]
            assert floats == [*np.float32(g), *np.float32(m).ravel(), s]
            assert slots[12] == bytes(8)          # no block address: the slots are the block
        with pytest.raises(ArgumentError, match=r"argument 'g': expected a f32 vector/matrix of shape \(2,\)"):
            affine(x, (1.0, 2.0, 3.0), np.eye(2), 1.0)
        with pytest.raises(ArgumentError, match=r"argument 'm'"):
            affine(x, (1.0, 2.0), "eye", 1.0)
    finally:
        kl.set_device("cpu")
