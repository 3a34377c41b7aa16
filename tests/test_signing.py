"""Signed .kiln files (kiln.signing): save(sign_key=...), load(trusted_keys=...), describe_trust."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import kiln as kl
from kiln.artifact import container
from kiln.errors import ArtifactError
from kiln.runtime.compiled import load, load_bytes, load_module
from kiln.signing import describe_trust, generate_key, sign_bytes, signature_key, verify_signature

ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")


@kl.kernel
def scale(x: kl.ndarray(kl.f32, ndim=1), a: kl.f32):
    for i in range(x.shape[0]):
        x[i] = x[i] * a


@pytest.fixture(scope="module")
def graph():
    g = kl.GraphBuilder()
    g.dispatch(scale, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), kl.Arg("a", kl.f32))
    return g.compile(target="x86-64-v2")


@pytest.fixture(scope="module")
def keys():
    return generate_key()


def _runs(g) -> None:
    x = np.arange(4, dtype=np.float32)
    g.run({"x": x, "a": 3.0})
    np.testing.assert_array_equal(x, np.arange(4, dtype=np.float32) * 3)


def test_signed_file_loads_with_its_key(graph, keys, tmp_path):
    path = tmp_path / "m.kiln"
    graph.save(path, sign_key=keys.private)
    data = path.read_bytes()
    assert struct.unpack_from("<I", data, 12)[0] == container.FLAG_SIGNED
    assert signature_key(data) == keys.public
    _runs(load(path, trusted_keys=[keys.public]))
    _runs(load(path, trusted_keys=keys.public))                     # one key on its own
    _runs(load(path))                                                # no check asked for
    module = load_module(path, trusted_keys=[keys.public])
    _runs(next(iter(module.graphs.values())))


def test_key_objects_accepted(graph, tmp_path):
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "m.kiln"
    graph.save(path, sign_key=private)
    _runs(load(path, trusted_keys=[private.public_key()]))
    _runs(load(path, trusted_keys=[private]))       # a private key stands for its public key


def test_unsigned_or_foreign_files_refused(graph, keys, tmp_path):
    path = tmp_path / "m.kiln"
    graph.save(path)
    with pytest.raises(ArtifactError, match="not signed"):
        load(path, trusted_keys=[keys.public])
    _runs(load(path))                                 # old and unsigned files still load
    other = generate_key()
    graph.save(path, sign_key=other.private)
    with pytest.raises(ArtifactError, match="not in trusted_keys"):
        load(path, trusted_keys=[keys.public])
    with pytest.raises(ArtifactError, match="not in trusted_keys"):
        load(path, trusted_keys=[])                   # an empty list trusts nobody


def test_signature_covers_every_byte(graph, keys):
    signed = sign_bytes(graph._module.to_bytes(), keys.private)
    content = len(signed) - container.SIGNATURE_TRAILER.size
    for off in sorted({0, 8, 12, 20, 40, 64, 100, content // 2, content - 1, content + 10,
                       len(signed) - 1}):
        bad = bytearray(signed)
        bad[off] ^= 0x01
        with pytest.raises(ArtifactError):
            load_bytes(bytes(bad), trusted_keys=[keys.public])
    # stripping the trailer (and the flag) leaves an unsigned file: refused under trusted_keys
    stripped = bytearray(signed[:content])
    struct.pack_into("<I", stripped, 12, 0)
    with pytest.raises(ArtifactError, match="not signed"):
        load_bytes(bytes(stripped), trusted_keys=[keys.public])
    # a re-signed manifest edit with a foreign key is refused
    mallory = generate_key()
    with pytest.raises(ArtifactError, match="not in trusted_keys"):
        load_bytes(sign_bytes(signed, mallory.private), trusted_keys=[keys.public])
    # swapping in the trusted key's bytes without its private key: the signature fails
    forged = bytearray(sign_bytes(signed, mallory.private))
    forged[content + 8:content + 40] = keys.public
    with pytest.raises(ArtifactError, match="does not match"):
        load_bytes(bytes(forged), trusted_keys=[keys.public])


def test_resigning_replaces_the_signature(graph, keys):
    a = sign_bytes(graph._module.to_bytes(), generate_key().private)
    b = sign_bytes(a, keys.private)
    assert len(a) == len(b) and signature_key(b) == keys.public
    assert verify_signature(b, [keys.public]) == keys.public


def test_bad_keys_are_artifact_errors(graph, keys):
    data = graph._module.to_bytes()
    for key in (b"short", 42, "a string of 32 characters.......", None):
        with pytest.raises(ArtifactError, match="sign_key"):
            sign_bytes(data, key)
    with pytest.raises(ArtifactError, match="trusted_keys"):
        load_bytes(sign_bytes(data, keys.private), trusted_keys=[b"x" * 31])


def test_signed_flag_without_trailer_refused(graph):
    data = bytearray(graph._module.to_bytes())
    struct.pack_into("<I", data, 12, container.FLAG_SIGNED)
    with pytest.raises(ArtifactError, match="no signature trailer"):
        load_bytes(bytes(data))


def test_describe_trust(graph, keys, tmp_path):
    path = tmp_path / "m.kiln"
    graph.save(path)
    lines = describe_trust(str(path))
    assert lines[0] == "signature: none (unsigned file)"
    assert "runs its native code" in lines[-1]
    graph.save(path, sign_key=keys.private)
    lines = describe_trust(str(path))
    assert keys.public.hex() in lines[0] and "valid for the key it names" in lines[1]
    assert "valid, by a trusted key" in describe_trust(str(path), [keys.public])[1]
    assert "FAILED" in describe_trust(str(path), [generate_key().public])[1]


def test_keypair_repr_hides_private(keys):
    assert keys.private.hex() not in repr(keys) and len(keys.private) == len(keys.public) == 32


# ---------------------------------------------------------------------------------------------
# Provenance: an optional manifest field (the compiler does not write it yet)
# ---------------------------------------------------------------------------------------------


def _with_provenance(data: bytes, provenance: object) -> bytes:
    c = container.unpack(data)
    doc = dict(c.manifest)
    blobs = {e["name"]: bytes(c.blobs[e["name"]]) for e in doc.pop("blobs")}
    doc["provenance"] = provenance
    return container.pack(doc, blobs)


def test_provenance_round_trip(graph) -> None:
    from kiln.artifact.manifest import Manifest
    prov = {"kiln_version": "0.1.0", "target": "x86-64-v2", "flags": {"opt": 3, "fast_math": False},
            "sources": {"scale": "ab" * 32}}
    data = _with_provenance(graph._module.to_bytes(), prov)
    module = load_bytes(data)
    assert module.manifest.provenance == prov
    assert module.manifest.to_json()["provenance"] == prov
    c = container.unpack(graph._module.to_bytes())
    old = {k: v for k, v in c.manifest.items() if k != "provenance"}        # files from older writers
    assert Manifest.from_json(old, set(c.blobs)).provenance is None


@pytest.mark.parametrize("bad", [[], "x", {"target": 3}, {"flags": {"a": [1]}}, {"flags": []},
                                 {"sources": {"k": "xyz"}}, {"sources": {"k": "AB" * 32}}])
def test_malformed_provenance_refused(graph, bad) -> None:
    with pytest.raises(ArtifactError, match="provenance"):
        load_bytes(_with_provenance(graph._module.to_bytes(), bad))
