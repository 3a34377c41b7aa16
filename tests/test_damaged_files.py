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
