"""CUDA graphs whose launches read their arguments from a device buffer (kiln.runtime.cuda_graph),
checked against the recording driver of tests/fake_cuda_driver.py: a run whose scalars or array
pointers change costs one copy and one replay, never a node update or a rebuild; a change of
what sizes a grid builds (and caches) another graph; each stream replays its own graph; files
whose entries predate the block address keep the node-update path."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import kiln as kl
from kiln.artifact import container

try:
    from kiln.codegen.nvptx import nvptx_available
    NVPTX_REASON = nvptx_available()
except ImportError as e:  # pragma: no cover - llvmlite missing
    NVPTX_REASON = str(e)

pytestmark = pytest.mark.skipif(NVPTX_REASON is not None, reason=f"no NVPTX target: {NVPTX_REASON}")

A1F = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def scale(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i]


@kl.kernel
def shift(b: kl.f32, c: kl.f32, y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(y.shape[0]):
        y[i] = y[i] * c + b


class DeviceArray:
    def __init__(self, n: int, ptr: int = 0xA000) -> None:
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": "<f4", "data": (ptr, False),
                                         "strides": None, "version": 3}


def _module(monkeypatch, legacy: bool = False):
    import fake_cuda_driver as fake

    from kiln.runtime import cuda

    fake.install(monkeypatch)
    x, y = kl.Arg("x", A1F, shape=("n",)), kl.Arg("y", A1F, shape=("n",))
    g = kl.GraphBuilder()
    g.dispatch(scale, kl.Arg("a", kl.f32), x, y)
    g.dispatch(shift, kl.Arg("b", kl.f32), 1.0, y)
    g.dispatch(shift, 1.5, 1.0, y)                   # constant bindings: baked into the image
    m = kl.Module(targets=["cuda"], cuda_archs=[])
    m.add_graph("main", g)
    data = m.compile().to_bytes()
    if legacy:           # a file from before CudaLaunch.block_ptr (its PTX still takes the address)
        c = container.unpack(data)
        doc = dict(c.manifest)
        doc.pop("blobs")
        for launches in doc["cuda"]["launches"].values():
            for ln in launches:
                ln.pop("block_ptr")
        data = container.pack(doc, {k: bytes(v) for k, v in c.blobs.items()})
    return fake, cuda.load_bytes(data).graphs["main"]


def _events(fake, *kinds):
    return [e[0] for e in fake.LOG if e[0] in kinds]


def _node_blocks(fake):
    """Each logged node's argument block, read where its last parameter points."""
    out = []
    for e in (e for e in fake.LOG if e[0] == "node"):
        # scale: a, x (pointer, extent, stride), y (same); shift: b, c, y (kiln.abi)
        nslots = 7 if e[1].startswith("kiln_kernel_scale") else 5
        *zeros, where = fake.slots(e[6], nslots + 1)
        assert zeros == [bytes(8)] * nslots
        out.append(int.from_bytes(where, "little"))
    return out


def test_changing_scalars_and_pointers_cost_one_copy_per_run(monkeypatch):
    fake, graph = _module(monkeypatch)
    x, y = DeviceArray(1000, 0xA000), DeviceArray(1000, 0xB000)
    graph.run({"a": 2.0, "b": 0.25, "x": x, "y": y}, stream=5)
    assert _events(fake, "node", "htod", "record", "graphlaunch") == [
        "node", "node", "node", "htod", "record", "graphlaunch"]
    where = _node_blocks(fake)
    blocks = [fake.device_bytes(w, 40) for w in where]
    assert struct.unpack("<f", blocks[0][:4])[0] == 2.0
    assert blocks[0][8:16] == struct.pack("<Q", 0xA000) and blocks[0][16:24] == struct.pack("<q", 1000)
    assert struct.unpack("<f", blocks[1][:4])[0] == 0.25 and struct.unpack("<f", blocks[2][:4])[0] == 1.5
    assert blocks[2][16:24] == struct.pack("<Q", 0xB000)
    assert all(e[-1] == 5 for e in fake.LOG if e[0] in ("htod", "record", "graphlaunch"))   # the caller's stream
    for a, xp in [(3.0, 0xA000), (3.0, 0xC000), (4.0, 0xC000)]:   # a scalar, then a pointer, then both
        fake.LOG.clear()
        graph.run({"a": a, "b": 0.25, "x": DeviceArray(1000, xp), "y": y}, stream=5)
        assert _events(fake, "node", "setparams", "htod", "graphlaunch") == ["htod", "graphlaunch"]
        kb = fake.device_bytes(where[0], 16)
        assert struct.unpack("<f", kb[:4])[0] == a and kb[8:16] == struct.pack("<Q", xp)
    fake.LOG.clear()
    graph.run({"a": 4.0, "b": 0.25, "x": DeviceArray(1000, 0xC000), "y": y}, stream=5)
    assert _events(fake, "node", "htod", "graphlaunch") == ["graphlaunch"]     # nothing changed: no copy


def test_grid_sizes_and_streams_select_cached_graphs(monkeypatch):
    fake, graph = _module(monkeypatch)

    def run(n, stream=0):
        fake.LOG.clear()
        graph.run({"a": 1.0, "b": 2.0, "x": DeviceArray(n), "y": DeviceArray(n, 0xB000)}, stream=stream)
        return [e[2] for e in fake.LOG if e[0] == "node"]

    # ceil(4000 / 4 / 256) blocks: each thread runs groups of 4 elements (vector access)
    assert run(4000) == [4, 4, 4]
    assert run(12000) == [12, 12, 12]        # the shape sizes the grids: another graph
    assert run(4000) == []                   # the first one, from the cache
    assert run(4000, stream=9) == [4, 4, 4]  # another stream replays its own graph
    assert len(graph._graphs) == 3


def test_numpy_arguments_and_the_device_image(monkeypatch):
    fake, graph = _module(monkeypatch)
    x = np.arange(600, dtype=np.float32)
    y = np.zeros(600, np.float32)
    graph.run({"a": 2.0, "b": 0.5, "x": x, "y": y})
    htod = [e[1] for e in fake.LOG if e[0] == "htod"]
    assert htod[:2] == [2400, 2400] and len(htod) == 3       # x, y staged, then the blocks
    where = _node_blocks(fake)
    staged_x = struct.unpack("<Q", fake.device_bytes(where[0] + 8, 8))[0]
    assert fake.device_bytes(staged_x, 8) == x[:2].tobytes()
    assert ("dtoh", 2400, 0) in fake.LOG                      # y, written, copied back


def test_files_without_block_addresses_update_nodes(monkeypatch):
    fake, graph = _module(monkeypatch, legacy=True)
    assert not any(n.block_ptr for n in graph.nodes)
    x, y = DeviceArray(1000), DeviceArray(1000, 0xB000)
    graph.run({"a": 2.0, "b": 0.25, "x": x, "y": y})
    nodes = [e for e in fake.LOG if e[0] == "node"]
    assert struct.unpack("<f", bytes.fromhex(nodes[0][5])[:4])[0] == 2.0    # the block in the parameters
    fake.LOG.clear()
    graph.run({"a": 3.0, "b": 0.25, "x": x, "y": y})
    assert _events(fake, "node", "setparams", "htod", "graphlaunch") == ["setparams", "graphlaunch"]


def test_the_graph_cache_is_bounded_and_frees_what_it_drops(monkeypatch):
    from kiln.runtime.cuda_graph import STAGING_SLOTS
    fake, graph = _module(monkeypatch)

    def run(n):
        graph.run({"a": 1.0, "b": 0.0, "x": DeviceArray(n), "y": DeviceArray(n, 0xB000)})

    run(65 * 256)
    first = next(iter(graph._graphs.values()))
    for k in range(1, 65):                   # 64 more grid sizes: the first graph is dropped
        run((65 - k) * 256)
    assert len(graph._graphs) == 64 and first not in graph._graphs.values()
    assert ("destroy",) in fake.LOG and ("free", first.dbuf) in fake.LOG
    assert not first._slots and len(fake.HOST) == 64 * STAGING_SLOTS    # its staging slots given back
