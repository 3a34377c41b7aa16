"""The compiler records provenance in the manifest (docs/format.md "Provenance"): kiln's version,
the targets, the flags that change the code and a SHA-256 of each kernel's source; `kiln inspect`
shows it with the signature status and the trust model."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import pytest

import kiln as kl
from kiln._version import KILN_VERSION
from kiln.artifact.container import read_file
from kiln.cli.main import main
from kiln.signing import TRUST_NOTE


@kl.kernel
def scale(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        x[i] = a * x[i]


def _graph() -> kl.GraphBuilder:
    g = kl.GraphBuilder()
    g.dispatch(scale, kl.Arg("a", kl.f32), kl.Arg("x", kl.ndarray(kl.f32, ndim=1)))
    return g


@pytest.mark.parametrize("debug", [False, True])
def test_manifest_records_provenance(tmp_path: Path, debug: bool) -> None:
    path = tmp_path / "scale.kiln"
    _graph().compile(debug=debug).save(path)
    manifest = read_file(path).manifest
    prov = manifest["provenance"]
    assert prov["kiln_version"] == KILN_VERSION
    assert prov["target"] == manifest["targets"][0]["name"]
    assert prov["flags"] == {"debug": debug, "fast_math": False}
    source_hash = hashlib.sha256(inspect.getsource(scale.py_func).encode()).hexdigest()
    assert list(prov["sources"].values()) == [source_hash]
    assert list(prov["sources"]) == list(manifest["kernels"])


def test_cuda_provenance_names_both_targets(tmp_path: Path) -> None:
    path = tmp_path / "both.kiln"
    _graph().compile(targets=["cpu", "cuda"], cuda_archs=[]).save(path)   # PTX only: no nvJitLink
    prov = read_file(path).manifest["provenance"]
    assert prov["target"].split(",")[-1] == "cuda" and prov["flags"]["cuda_archs"] == ""


def test_inspect_shows_provenance_and_trust(tmp_path: Path, capsys) -> None:
    path = tmp_path / "scale.kiln"
    _graph().compile().save(path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"provenance: built by kiln {KILN_VERSION} for " in out and "flags: debug=False, fast_math=False" in out
    assert "source of scale" in out
    assert "signature: none (unsigned file)" in out
    assert f"trust: {TRUST_NOTE}" in out
    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["provenance"]["flags"]["debug"] is False and doc["trust"][-1] == f"trust: {TRUST_NOTE}"


def test_inspect_without_provenance(tmp_path: Path, capsys) -> None:
    """Files from before provenance (or from another writer) are reported as such."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    import fuzz_loader
    path = tmp_path / "new.kiln"
    _graph().compile().save(path)
    doc, blobs = fuzz_loader.split(path.read_bytes())
    del doc["provenance"]
    path = tmp_path / "old.kiln"
    path.write_bytes(fuzz_loader.rebuild(doc, blobs))
    assert main(["inspect", str(path)]) == 0
    assert "provenance: not recorded" in capsys.readouterr().out
