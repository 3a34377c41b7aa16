"""The manifest is bound to its code (kiln.runtime.abi_digest): a manifest edited consistently
and re-checksummed, or another file's object under this manifest, is refused with ArtifactError
before anything runs."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import numpy as np
import pytest

import kiln as kl
from kiln.artifact import container
from kiln.runtime.abi_digest import abi_digest, canonical_abi
from kiln.runtime.compiled import load_bytes

F32_1 = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def saxpy(a: kl.f32, x: F32_1, y: F32_1):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def scale(a: kl.f32, x: F32_1, y: F32_1):
    for i in range(x.shape[0]):
        y[i] = a * x[i]


def _file(kernel) -> bytes:
    g = kl.GraphBuilder()
    g.dispatch(kernel, kl.Arg("a", kl.f32), kl.Arg("x", F32_1, shape=("n",)), kl.Arg("y", F32_1, shape=("n",)))
    m = kl.Module()
    m.add_graph("main", g)
    m.add_kernel(kernel, name="k")
    return m.compile().to_bytes()


@pytest.fixture(scope="module")
def good() -> bytes:
    return _file(saxpy)


def _split(data: bytes) -> dict:
    m_len = struct.unpack_from("<Q", data, 24)[0]
    return json.loads(data[64:64 + m_len])


def _repack(data: bytes, doc: dict, blob: bytes | None = None) -> bytes:
    """`data` with manifest `doc` (and `blob` as its object), every checksum recomputed."""
    entry = doc.pop("blobs")[0]
    if blob is None:
        blob = data[entry["offset"]:entry["offset"] + entry["size"]]
    return container.pack(doc, {entry["name"]: blob})


def _blob(data: bytes) -> bytes:
    entry = _split(data)["blobs"][0]
    return data[entry["offset"]:entry["offset"] + entry["size"]]


def _graph_param(doc: dict, name: str) -> dict:
    return next(p for p in doc["graphs"]["main"]["params"] if p["name"] == name)


def _kernel(doc: dict) -> dict:
    return next(iter(doc["kernels"].values()))


def _both_dtypes(name: str, k: int, dtype: str) -> Callable[[dict], None]:
    """Parameter `name` (the kernel's k-th) gets `dtype` in the graph and in the kernel:
    consistent, so only the ABI check can see it."""
    def edit(d: dict) -> None:
        _graph_param(d, name)["dtype"] = dtype
        _kernel(d)["params"][k]["dtype"] = dtype
    return edit


EDITS: list[tuple[str, Callable[[dict], None]]] = [
    ("array dtype", _both_dtypes("y", 2, "f64")),
    ("array dtype to int", _both_dtypes("x", 1, "i32")),
    ("scalar dtype", _both_dtypes("a", 0, "f64")),
    ("graph access", lambda d: _graph_param(d, "y").__setitem__("access", "read")),
    ("graph shape", lambda d: _graph_param(d, "x").__setitem__("shape", [None])),
    ("graph shape dropped", lambda d: _graph_param(d, "y").pop("shape")),
    ("kernel access", lambda d: _kernel(d)["params"][2].__setitem__("access", "read")),
    ("kernel entry is the graph's", lambda d: _kernel(d)["entries"].__setitem__("cpu", "kiln_graph_main")),
    ("graph entry is the kernel's",
     lambda d: d["graphs"]["main"]["entries"].__setitem__("cpu", _kernel(d)["entries"]["cpu"])),
]


def test_good_file_loads_and_runs(good: bytes) -> None:
    g = load_bytes(good).graphs["main"]
    y = np.ones(4, np.float32)
    g.run({"a": 2.0, "x": np.ones(4, np.float32), "y": y})
    np.testing.assert_array_equal(y, 3.0)


@pytest.mark.parametrize("what,edit", EDITS, ids=[e[0] for e in EDITS])
def test_consistently_edited_manifest_is_refused(good: bytes, what: str, edit) -> None:
    doc = _split(good)
    edit(doc)
    bad = _repack(good, doc)
    with pytest.raises(kl.ArtifactError, match="ABI descriptor"):
        load_bytes(bad)


def test_another_files_object_is_refused(good: bytes) -> None:
    other = _file(scale)                 # same parameters, same symbol names, other code
    bad = _repack(good, _split(good), _blob(other))
    with pytest.raises(kl.ArtifactError, match="ABI descriptor"):
        load_bytes(bad)


def test_object_without_descriptors_is_refused(good: bytes) -> None:
    """An object that has the entries but no descriptors (built without them)."""
    from kiln.codegen import build_object, host_target
    from kiln.driver import lower_kernel
    kir = lower_kernel(saxpy, (kl.f32, F32_1, F32_1))
    doc = _split(good)
    doc["graphs"] = {}
    doc["kernels"] = {kir.kernel.name: {**_kernel(doc), "entries": {"cpu": f"kiln_kernel_{kir.kernel.name}"}}}
    doc["exported_kernels"] = {"k": kir.kernel.name}
    bad = _repack(good, doc, build_object([kir], [], host_target()).blob)
    with pytest.raises(kl.ArtifactError, match="has no ABI descriptor"):
        load_bytes(bad)


def test_digest_is_canonical() -> None:
    from kiln.abi import layout_params
    from kiln.artifact.manifest import ParamInfo
    params = tuple(ParamInfo(lay, "read") for lay in layout_params([("x", F32_1)]))
    text = canonical_abi("kernel", "k", "sym", params)
    assert json.loads(text)["params"][0] == {"name": "x", "kind": "ndarray", "dtype": "f32", "ndim": 1,
                                             "offset": 0, "access": "read", "shape": None}
    assert b" " not in text and len(abi_digest("kernel", "k", "sym", params)) == 32
    assert abi_digest("kernel", "k", "sym", params) != abi_digest("graph", "k", "sym", params)


def test_cuda_manifest_is_bound_to_the_ptx() -> None:
    """The PTX carries the kernels' descriptors too; the CUDA loader checks them when it reads
    the file (no GPU needed); a cubin is checked on the device when it is loaded."""
    import warnings

    from kiln.runtime import cuda

    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    m.add_kernel(saxpy, name="k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = m.compile().to_bytes()
    cuda.load_bytes(data)                                   # agrees: loads
    doc = _split(data)
    _kernel(doc)["params"][2]["access"] = "read"
    entries = doc.pop("blobs")
    blobs = {e["name"]: data[e["offset"]:e["offset"] + e["size"]] for e in entries}
    bad = container.pack(doc, blobs)
    with pytest.raises(kl.ArtifactError, match="PTX's ABI descriptor"):
        cuda.load_bytes(bad)


def test_ptx_descriptor_with_trailing_zero_bytes() -> None:
    """LLVM's PTX printer leaves an initializer's trailing zeros out (PTX zero-fills the rest)."""
    from kiln.runtime.abi_digest import ptx_descriptor
    digest = bytes(range(1, 32)) + b"\0"
    ptx = (b".visible .global .align 8 .b8 k_abi[32] = {" + b", ".join(str(v).encode() for v in digest[:31])
           + b"};\n")
    assert ptx_descriptor(ptx, "k") == digest
