"""The .kiln container and manifest: round trips, and every kind of damage ends in ArtifactError."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from kiln.artifact import container
from kiln.artifact.manifest import Manifest
from kiln.errors import ArtifactError


def _manifest() -> dict:
    return {
        "format": "kiln", "format_version": [container.FORMAT_MAJOR, 0], "kiln_version": "0.1.0", "created": "2026-11-25T00:00:00+00:00",
        "targets": [{"name": "cpu", "kind": "cpu", "arch": "x86_64", "triple": "x86_64-unknown-linux-gnu",
                     "cpu": "x86-64-v2", "features": "", "blobs": ["cpu.o"]}],
        "kernels": {"k": {"display_name": "k", "entries": {"cpu": "kiln_kernel_k"}, "params": [
            {"name": "a", "kind": "scalar", "dtype": "f32", "ndim": 0, "offset": 0, "access": "read"},
            {"name": "x", "kind": "ndarray", "dtype": "f32", "ndim": 1, "offset": 8, "access": "write"}]}},
        "graphs": {"main": {"entries": {"cpu": "kiln_graph_main"}, "params": [
            {"name": "x", "kind": "ndarray", "dtype": "f32", "ndim": 1, "offset": 0, "access": "write",
             "shape": ["n"]}],
            "dispatches": [{"kernel": "k", "bindings": [{"const": 2.0, "dtype": "f32"}, {"arg": "x"}]}]}},
        "exported_kernels": {"k": "k"},
    }


def _packed() -> bytes:
    return container.pack(_manifest(), {"cpu.o": b"\x7fELF" + bytes(range(256)) * 4})


def test_round_trip_and_alignment() -> None:
    data = _packed()
    c = container.unpack(data)
    assert c.format_version == (container.FORMAT_MAJOR, container.FORMAT_MINOR)
    assert bytes(c.blobs["cpu.o"]) == b"\x7fELF" + bytes(range(256)) * 4
    (entry,) = c.manifest["blobs"]
    assert entry["offset"] % container.BLOB_ALIGN == 0
    m = Manifest.from_json(c.manifest, set(c.blobs))
    assert m.graphs["main"].params[0].shape == ("n",)
    assert Manifest.from_json(m.to_json() | {"blobs": c.manifest["blobs"]}, set(c.blobs)) == m


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 20, 63, 64, 100, -1, -17, -300])
def test_truncated(cut: int) -> None:
    data = _packed()
    with pytest.raises(ArtifactError, match="truncated|empty|bad magic|damaged|checksum"):
        container.unpack(data[:cut])


def test_truncated_everywhere() -> None:
    data = _packed()
    for cut in range(0, len(data) - 1, 7):
        with pytest.raises(ArtifactError):
            container.unpack(data[:cut])


def test_flipped_bytes_everywhere() -> None:
    data = _packed()
    for pos in range(0, len(data), 5):
        bad = bytearray(data)
        bad[pos] ^= 0x41
        # A flip in the minor version (compatible by definition) or in alignment padding between
        # blobs is harmless; everything else must be caught.
        if pos in (10, 11):
            continue
        try:
            container.unpack(bytes(bad))
        except ArtifactError:
            continue
        c = container.unpack(data)
        padding = all(not (e["offset"] <= pos < e["offset"] + e["size"]) for e in c.manifest["blobs"])
        assert padding and pos >= 64 + struct.unpack_from("<Q", data, 24)[0], pos


def test_bad_magic_and_versions() -> None:
    data = bytearray(_packed())
    with pytest.raises(ArtifactError, match="bad magic"):
        container.unpack(b"PK\x03\x04" + bytes(data[4:]))
    newer = bytearray(data)
    struct.pack_into("<H", newer, 8, container.FORMAT_MAJOR + 1)
    with pytest.raises(ArtifactError, match=f"format version {container.FORMAT_MAJOR + 1}.0 is newer"):
        container.unpack(bytes(newer))
    older = bytearray(data)       # 1.x code takes arrays without strides: never run it
    struct.pack_into("<H", older, 8, 1)
    with pytest.raises(ArtifactError, match="format version 1.0 was written by an older kiln.*recompile"):
        container.unpack(bytes(older))
    flagged = bytearray(data)
    struct.pack_into("<I", flagged, 12, 1)
    with pytest.raises(ArtifactError, match="flags"):
        container.unpack(bytes(flagged))


def test_blob_checksum_mismatch() -> None:
    data = bytearray(_packed())
    c = container.unpack(bytes(data))
    off = c.manifest["blobs"][0]["offset"]
    data[off + 10] ^= 1
    with pytest.raises(ArtifactError, match="checksum mismatch in blob 'cpu.o'"):
        container.unpack(bytes(data))


def _repack_manifest(data: bytes, edit) -> bytes:
    """Edit the manifest JSON and re-serialise with every checksum recomputed, so the damage gets
    past the container."""
    c = container.unpack(data)
    doc = json.loads(json.dumps(c.manifest))
    blobs = {e["name"]: bytes(c.blobs[e["name"]]) for e in doc.pop("blobs")}
    edit(doc)
    return container.pack(doc, blobs)


MANIFEST_EDITS = [
    (lambda d: d.pop("graphs"), "graphs: required field is missing"),
    (lambda d: d.__setitem__("targets", []), "no compiled target"),
    (lambda d: d["targets"][0].__setitem__("kind", "tpu"), "unknown target kind"),
    (lambda d: d["targets"][0].__setitem__("blobs", ["nope.o"]), "not in the file"),
    (lambda d: d["kernels"]["k"]["params"][0].__setitem__("dtype", "f33"), "unknown dtype 'f33'"),
    (lambda d: d["kernels"]["k"]["params"][1].__setitem__("ndim", 9), "invalid ndim"),
    (lambda d: d["kernels"]["k"]["params"][1].__setitem__("offset", 16), "packed layout"),
    (lambda d: d["kernels"]["k"]["params"][0].__setitem__("name", 5), "expected a string"),
    (lambda d: d["graphs"]["main"]["dispatches"][0].__setitem__("kernel", "zz"), "unknown kernel 'zz'"),
    (lambda d: d["graphs"]["main"]["dispatches"][0]["bindings"].pop(), "takes 2 arguments, got 1"),
    (lambda d: d["graphs"]["main"]["dispatches"][0]["bindings"][1].__setitem__("arg", "q"),
     "unknown graph parameter 'q'"),
    (lambda d: d["graphs"]["main"]["entries"].__setitem__("cpu", "rm -rf /"), "expected a symbol name"),
    (lambda d: d["graphs"]["main"]["params"][0].__setitem__("shape", [-3]), "shape"),
    (lambda d: d["exported_kernels"].__setitem__("k", "missing"), "unknown kernel"),
    (lambda d: d.__setitem__("format", "zip"), "expected 'kiln'"),
    (lambda d: d.__setitem__("format_version", "1.0"), "expected a list"),
    (lambda d: d["kernels"]["k"].__setitem__("params", {}), "expected a list"),
    (lambda d: d["graphs"]["main"]["params"][0].__setitem__("access", True), "got a boolean"),
]


@pytest.mark.parametrize("edit,message", MANIFEST_EDITS)
def test_edited_manifest(edit, message: str) -> None:
    data = _repack_manifest(_packed(), edit)
    c = container.unpack(data)
    with pytest.raises(ArtifactError, match="manifest: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        Manifest.from_json(c.manifest, set(c.blobs))


def test_manifest_not_json_or_not_object() -> None:
    data = _packed()
    for body in (b"{" * 40 + b" " * 10, b"[1, 2, 3]", b"\xff\xfe"):
        m_len = len(body)
        out = bytearray(data[:64]) + body
        struct.pack_into("<Q", out, 24, m_len)
        out[32:64] = hashlib.sha256(body).digest()
        with pytest.raises(ArtifactError, match="manifest"):
            container.unpack(bytes(out))


def test_blob_table_lies() -> None:
    def huge(d: dict) -> None:
        d["blobs"][0]["size"] = 1 << 40
    data = _packed()
    # the blobs table is part of the manifest: rewrite it with a huge size
    m_len = struct.unpack_from("<Q", data, 24)[0]
    doc = json.loads(data[64:64 + m_len])
    huge(doc)
    body = json.dumps(doc).encode()
    out = bytearray(data[:64]) + body + data[64 + m_len:]
    struct.pack_into("<Q", out, 24, len(body))
    out[32:64] = hashlib.sha256(body).digest()
    with pytest.raises(ArtifactError, match="truncated or corrupt file: blob 'cpu.o'"):
        container.unpack(bytes(out))


def test_read_missing_file(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="cannot read"):
        container.read_file(str(tmp_path / "nope.kiln"))


def test_manifest_json_reader_matches_json() -> None:
    from kiln.artifact.container import json_loads
    for text in ['{"a": [1, 2.5, "x", null, true, false, {"b": -3e-5}]}', '  [1,2] \n', '{"a": "\\u00e9\\n"}']:
        assert json_loads(text) == json.loads(text)
    for bad in ['{"a": NaN}', '{"a": 1} x', '{"a": ', '', '[1,]', '{"a" 1}', "Infinity", "[" * 100000]:
        with pytest.raises((ValueError, RecursionError)):
            json_loads(bad)


def test_pack_many_blobs_converges() -> None:
    # Blob offsets live in the manifest that precedes the blobs: packing iterates to a fixed point.
    # Four blobs whose offsets cross digit boundaries needed more passes than a fixed three.
    for sizes in ([10, 9000, 90000, 5], [1, 1, 1, 1], [99990, 7, 900000, 12345]):
        blobs = {f"b{i}.bin": bytes([i]) * n for i, n in enumerate(sizes)}
        data = container.pack(_manifest(), blobs)
        c = container.unpack(data)
        assert {k: bytes(v) for k, v in c.blobs.items()} == blobs
