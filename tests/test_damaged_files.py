"""A corpus of damaged real .kiln files: every case ends in ArtifactError, never a crash.

Damage at the container level (truncation, flipped bytes), in the manifest with the checksums
recomputed (so the damage gets past the container), and inside the object blob with both
checksums recomputed (so it reaches kiln's ELF loader).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import kiln as kl
from kiln.artifact import container
from kiln.runtime.compiled import load_bytes
from kiln.runtime.elf import inspect_elf_object


@kl.kernel
def axpb(x: kl.ndarray(kl.f32, ndim=1), a: kl.f32, b: kl.f32):
    for i in range(x.shape[0]):
        x[i] = kl.sin(a * x[i]) + b


@pytest.fixture(scope="module")
def good() -> bytes:
    g = kl.GraphBuilder()
    X = kl.Arg("x", kl.ndarray(kl.f32, ndim=1))
    g.dispatch(axpb, X, 2.0, 1.0)
    g.dispatch(axpb, X, kl.Arg("a", kl.f32), 0.5)
    m = kl.Module()
    m.add_graph("main", g)
    return m.compile().to_bytes()


def _split(data: bytes) -> tuple[dict, int]:
    m_len = struct.unpack_from("<Q", data, 24)[0]
    return json.loads(data[64:64 + m_len]), m_len


def _rebuild(data: bytes, doc: dict, blob: bytes | None = None) -> bytes:
    """Re-serialise with a new manifest (and blob), recomputing every checksum."""
    entry = doc.pop("blobs")[0]
    if blob is None:
        blob = data[entry["offset"]:entry["offset"] + entry["size"]]
    return container.pack(doc, {entry["name"]: blob})


def test_good_file_runs(good: bytes) -> None:
    g = load_bytes(good).graphs["main"]
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    ref = np.sin(np.float32(3.0) * (np.sin(np.float32(2.0) * x) + 1)) + np.float32(0.5)
    g.run({"x": x, "a": 3.0})
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)


def test_truncated_at_many_offsets(good: bytes) -> None:
    for cut in list(range(200)) + list(range(200, len(good), max(1, len(good) // 300))):
        with pytest.raises(kl.ArtifactError):
            load_bytes(good[:cut])


def test_flipped_bytes(good: bytes) -> None:
    doc, m_len = _split(good)
    blob = doc["blobs"][0]
    loaded = 0
    for pos in range(0, len(good), max(1, len(good) // 600)):
        bad = bytearray(good)
        bad[pos] ^= 0x5A
        try:
            load_bytes(bytes(bad))
        except kl.ArtifactError:
            continue
        loaded += 1
        # only the minor version and the padding between manifest and blob are harmless
        assert pos in (10, 11) or 64 + m_len <= pos < blob["offset"], pos
    assert loaded < 10


MANIFEST_DAMAGE = [
    (lambda d: d["graphs"]["main"]["entries"].__setitem__("cpu", "kiln_graph_nope"),
     "symbol 'kiln_graph_nope'"),
    (lambda d: d["targets"][0].__setitem__("features", "+avx512vp2intersect,+amx-tile"),
     "needs CPU features this machine lacks"),
    (lambda d: d["targets"][0].__setitem__("arch", "aarch64"), "this machine is x86_64"),
    (lambda d: d["targets"][0].__setitem__("kind", "cuda"), "no CPU code"),
    (lambda d: d["graphs"]["main"]["params"][0].__setitem__("dtype", "f64"), "does not match kernel parameter"),
    (lambda d: d["graphs"]["main"]["dispatches"][0]["bindings"][1].__setitem__("dtype", "i32"),
     "constant does not match"),
    (lambda d: d["graphs"]["main"]["dispatches"][0]["bindings"][1].__setitem__("const", "2.0"),
     "expected a boolean or an integer or a number"),
    (lambda d: d.__delitem__("kernels"), "kernels: required field is missing"),
    (lambda d: d["graphs"]["main"]["params"][0].__setitem__("ndim", 2), "offset"),
]


@pytest.mark.parametrize("edit,message", MANIFEST_DAMAGE)
def test_edited_manifest_real_file(good: bytes, edit, message: str) -> None:
    doc, _ = _split(good)
    edit(doc)
    with pytest.raises(kl.ArtifactError, match=message.replace("(", r"\(")):
        load_bytes(_rebuild(good, doc))


def _structural_offsets(blob: bytes) -> list[int]:
    """Offsets in the object's headers, section table, symbol table, string tables and relocations."""
    info = inspect_elf_object(blob)
    e_shoff = struct.unpack_from("<Q", blob, 0x28)[0]
    e_shnum = struct.unpack_from("<H", blob, 0x3C)[0]
    offsets = list(range(64))
    offsets += list(range(e_shoff, e_shoff + 64 * e_shnum, 3))
    for s in info.sections:
        if s.type in (2, 3, 4):   # symtab, strtab, rela
            offsets += list(range(s.offset, s.offset + s.size, 5))
    return sorted(set(offsets))


def test_damaged_object_blob_reaches_elf_loader(good: bytes) -> None:
    doc, _ = _split(good)
    entry = doc["blobs"][0]
    blob = good[entry["offset"]:entry["offset"] + entry["size"]]
    errors = 0
    loaded = 0
    for pos in _structural_offsets(blob):
        for mask in (0xFF, 0x01):
            bad = bytearray(blob)
            bad[pos] ^= mask
            try:
                mod = load_bytes(_rebuild(good, json.loads(json.dumps(doc)), bytes(bad)))
            except kl.ArtifactError as e:
                errors += 1
                assert str(e).strip()
                continue
            loaded += 1   # e.g. a flip in a symbol's size field or an unused string byte
            del mod
    assert errors > 200, (errors, loaded)


def test_damaged_object_examples(good: bytes) -> None:
    doc, _ = _split(good)
    entry = doc["blobs"][0]
    blob = bytearray(good[entry["offset"]:entry["offset"] + entry["size"]])
    cases = []
    b = bytearray(blob)
    b[0:4] = b"\x7fELG"
    cases.append((b, "ELF: bad magic"))
    b = bytearray(blob)
    struct.pack_into("<H", b, 0x12, 40)          # e_machine = ARM
    cases.append((b, "machine"))
    b = bytearray(blob)
    struct.pack_into("<Q", b, 0x28, 1 << 40)     # e_shoff far beyond the blob
    cases.append((b, "section header table"))
    for bad, msg in cases:
        with pytest.raises(kl.ArtifactError, match=msg):
            load_bytes(_rebuild(good, json.loads(json.dumps(doc)), bytes(bad)))


# ---------------------------------------------------------------------------------------------
# The manifest's cuda section: every malformed field is an ArtifactError naming its JSON path,
# from the CPU loader (which validates the whole manifest) and from the CUDA runtime alike.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_cuda() -> bytes:
    g = kl.GraphBuilder()
    g.dispatch(axpb, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), 2.0, kl.Arg("b", kl.f32))
    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])    # PTX only: no nvJitLink needed
    m.add_graph("main", g)
    return m.compile().to_bytes()


def _rebuild_all(data: bytes, doc: dict) -> bytes:
    """Re-serialise every blob with a new manifest, recomputing every checksum."""
    blobs = {e["name"]: data[e["offset"]:e["offset"] + e["size"]] for e in doc.pop("blobs")}
    return container.pack(doc, blobs)


def _launch(d: dict) -> dict:
    return next(iter(d["cuda"]["launches"].values()))[0]


def _set(obj_of, key, value):
    return lambda d: obj_of(d).__setitem__(key, value)


CUDA_DAMAGE = [
    (lambda d: d.__setitem__("cuda", []), "cuda: expected an object"),
    (_set(lambda d: d["cuda"], "block_size", 0), "cuda.block_size: 0 is out of range"),
    (_set(lambda d: d["cuda"], "block_size", 4096), "cuda.block_size: 4096 is out of range"),
    (_set(lambda d: d["cuda"], "block_size", "256"), "cuda.block_size: expected an integer"),
    (_set(lambda d: d["cuda"], "block_size", True), "cuda.block_size: expected an integer, got a boolean"),
    (lambda d: d["cuda"].__delitem__("block_size"), "cuda.block_size: required field is missing"),
    (_set(lambda d: d["cuda"], "ptx", "nope.ptx"), "cuda.ptx: names a blob that is not in the cuda target"),
    (_set(lambda d: d["cuda"], "ptx", "cpu.o"), "cuda.ptx: names a blob that is not in the cuda target"),
    (_set(lambda d: d["cuda"], "ptx", 3), "cuda.ptx: expected a string"),
    (_set(lambda d: d["cuda"], "cubins", {"sm_90": "cuda.sm_90.cubin"}), "cuda.cubins.sm_90: names a blob"),
    (_set(lambda d: d["cuda"], "cubins", {"sm_90": 7}), "cuda.cubins.sm_90: names a blob"),
    (_set(lambda d: d["cuda"], "cubins", []), "cuda.cubins: expected an object"),
    (_set(lambda d: d["cuda"], "cubins_missing", 1), "cuda.cubins_missing: expected a string"),
    (_set(lambda d: d["cuda"], "nvjitlink", None), "cuda.nvjitlink: expected a string"),
    (_set(lambda d: d["cuda"], "launches", []), "cuda.launches: expected an object"),
    (lambda d: d["cuda"]["launches"].clear(), r"cuda.launches.axpb__\w+: required field is missing"),
    (lambda d: d["cuda"]["launches"].__setitem__("ghost", []), "cuda.launches.ghost: names a kernel that is not"),
    (lambda d: d["cuda"]["launches"].__setitem__(next(iter(d["cuda"]["launches"])), {}),
     r"cuda.launches.axpb__\w+: expected a list"),
    (lambda d: d["cuda"]["launches"].__setitem__(next(iter(d["cuda"]["launches"])), []),
     "a kernel needs at least one launch"),
    (lambda d: next(iter(d["cuda"]["launches"].values())).__setitem__(0, "launch"),
     r"cuda.launches.axpb__\w+\[0\]: expected an object"),
    (_set(_launch, "entry", 5), r"\[0\].entry: expected a string"),
    (_set(_launch, "entry", "not a symbol"), r"\[0\].entry: expected a symbol name"),
    (lambda d: _launch(d).__delitem__("entry"), r"\[0\].entry: required field is missing"),
    (_set(_launch, "mode", "warp"), r"\[0\].mode: expected one of"),
    (lambda d: _launch(d).__delitem__("mode"), r"\[0\].mode: required field is missing"),
    (_set(_launch, "waves", 0), r"\[0\].waves: 0 is out of range"),
    (_set(_launch, "waves", 2.5), r"\[0\].waves: expected an integer"),
    (_set(_launch, "count", "all"), r"\[0\].count: expected a list"),
    (_set(_launch, "count", [[1, 2]]), r"\[0\].count\[0\]: expected \[start, stop, step\]"),
    (_set(_launch, "count", [[["const", 0], ["nope", 1], ["const", 1]]]), r"\[0\].count\[0\]\[1\]: expected a host"),
    (_set(_launch, "count", [[["const", "0"], ["const", 1], ["const", 1]]]), r"\[0\].count\[0\]\[0\]\[1\]: expected a number"),
    (_set(_launch, "count", [[["+", ["const", 0]], ["const", 1], ["const", 1]]]), r"'\+' takes 2 operand"),
    (_set(_launch, "count", [[["const", 0], ["shape", "y", 0], ["const", 1]]]),
     r"\[0\].count\[0\]\[1\]\[1\]: expected the name of a ndarray parameter"),
    (_set(_launch, "count", [[["const", 0], ["shape", "x", 1], ["const", 1]]]),
     r"\[0\].count\[0\]\[1\]\[2\]: expected a dimension index below 1"),
    (_set(_launch, "count", [[["const", 0], ["arg", "x"], ["const", 1]]]),
     r"\[0\].count\[0\]\[1\]\[1\]: expected the name of a scalar parameter"),
    (_set(_launch, "count", [[["min", ["const", 0], ["arg", 3]], ["const", 1], ["const", 1]]]),
     r"\[0\].count\[0\]\[0\]\[2\]\[1\]: expected the name of a scalar parameter"),
    (lambda d: (_launch(d).__setitem__("mode", "single")), r"\[0\].count: only loop launches have a count"),
    (lambda d: _drop_cuda_target(d), "cuda: present, but the file has no cuda target"),
]


def _drop_cuda_target(d: dict) -> None:
    """The file without its cuda target (blob and kernel entries too), but with the cuda section."""
    d["targets"] = [t for t in d["targets"] if t["kind"] != "cuda"]
    d["blobs"] = [b for b in d["blobs"] if b["name"] == "cpu.o"]
    for k in d["kernels"].values():
        k["entries"].pop("cuda")


@pytest.mark.parametrize("edit,message", CUDA_DAMAGE)
def test_edited_cuda_section(good_cuda: bytes, edit, message: str) -> None:
    from kiln.runtime import cuda

    doc, _ = _split(good_cuda)
    assert _launch(doc)["count"] and _launch(doc)["mode"] == "loop"   # the fields the edits damage
    edit(doc)
    bad = _rebuild_all(good_cuda, doc)
    with pytest.raises(kl.ArtifactError, match=message):
        load_bytes(bad)
    with pytest.raises(kl.ArtifactError, match=message):
        cuda.load_bytes(bad)


def test_cuda_section_round_trip(good_cuda: bytes) -> None:
    from kiln.artifact.manifest import CudaLaunch, Manifest
    from kiln.runtime import cuda

    doc, _ = _split(good_cuda)
    manifest = Manifest.from_json(doc, {b["name"] for b in doc["blobs"]})
    assert manifest.cuda is not None and manifest.cuda.block_size == doc["cuda"]["block_size"]
    (launch,) = next(iter(manifest.cuda.launches.values()))
    assert isinstance(launch, CudaLaunch) and launch.mode == "loop" and launch.waves == 16
    assert manifest.to_json()["cuda"] == doc["cuda"]       # the typed section writes what it read
    m = cuda.load_bytes(good_cuda)                         # no driver call until a run
    assert m.launches == manifest.cuda.launches and m.ptx_blob == "cuda.ptx" and m.cubins == {}
    missing = {k: v for k, v in doc.items() if k != "cuda"}
    assert load_bytes(_rebuild_all(good_cuda, dict(missing))).graphs["main"]   # the CPU runtime needs none
    with pytest.raises(kl.ArtifactError, match="cuda: the launch table is missing"):
        cuda.load_bytes(_rebuild_all(good_cuda, missing))
