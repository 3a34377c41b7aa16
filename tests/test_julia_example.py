"""examples/julia.py (the Taichi julia program ported with inline funcs and a tuple return):
its main() at a small size, and its graph saved, then run in a fresh process (no kernel source,
no compiler) and checked against the numpy reference (tests/reference/julia_numpy.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.reference.julia_numpy import frame

ROOT = Path(__file__).resolve().parents[1]


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("example_julia", ROOT / "examples" / "julia.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_main_small(capsys) -> None:  # type: ignore[no-untyped-def]
    assert _example().main(steps=3, size=(48, 24)) == 0
    assert "julia: OK" in capsys.readouterr().out


def test_saved_graph_in_a_fresh_process_matches_numpy(tmp_path: Path) -> None:
    julia = _example()
    path = tmp_path / "julia.kiln"
    julia.build().compile().save(path)
    size, steps = (64, 32), 4
    code = (f"import sys, numpy as np, kiln\n"
            f"g = kiln.load({str(path)!r})\n"
            f"it, br = np.zeros({size}, np.int32), np.zeros({size}, np.float32)\n"
            f"for f in range({steps}): g.run({{'t': f * 0.03, 'iterations': it, 'brightness': br}})\n"
            "assert 'kiln.lang' not in sys.modules and 'llvmlite' not in sys.modules\n"
            f"np.save({str(tmp_path / 'it.npy')!r}, it); np.save({str(tmp_path / 'br.npy')!r}, br)\n")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 0, res.stderr
    counts, light = np.load(tmp_path / "it.npy"), np.load(tmp_path / "br.npy")
    want_counts, want_light = frame((steps - 1) * 0.03, size, julia.max_iterations)
    same = counts == want_counts
    assert same.mean() > 0.99                          # see examples/julia.py on f64 vs f32
    np.testing.assert_allclose(light[same], want_light[same], atol=1e-3)
    assert (counts == julia.max_iterations).any() and (counts < 5).any()   # inside and far outside
