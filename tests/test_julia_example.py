"""examples/julia.py (the Taichi julia program ported by renaming `ti.` to `kl.`): its own host
code, `run()`, with direct kernel calls as in Taichi, against the numpy reference; and the saved
module in a fresh process on CPU (tests/test_taichi_examples.py runs main() on CPU and CUDA)."""

from __future__ import annotations

import importlib.util
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


def _check(julia, counts: np.ndarray, light: np.ndarray, t: float) -> None:  # type: ignore[no-untyped-def]
    want_counts, want_light = frame(t, julia.res, julia.max_iterations)
    same = counts == want_counts
    assert same.mean() > 0.999                    # see examples/julia.py on the set's edge
    np.testing.assert_allclose(light[same], want_light[same], atol=1e-3)
    assert (counts == julia.max_iterations).any() and (counts < 5).any()   # inside and far outside


def test_the_programs_own_run_with_direct_calls() -> None:
    julia = _example()
    counts, light = julia.run(4)                  # paint(t) four times, fields read with to_numpy()
    _check(julia, counts, light, 3 * 0.03)


def test_saved_module_in_a_fresh_process(tmp_path: Path) -> None:
    julia = _example()
    sys.path.insert(0, str(ROOT / "examples"))
    from fresh_process import run_saved

    path = tmp_path / "julia.kiln"
    julia.build().save(path)
    got = run_saved(path, [{"graph": "paint", "args": {"t": 0.5}}])   # also checks: no compiler imported
    _check(julia, got["field:" + julia.iterations.name], got["field:" + julia.brightness.name], 0.5)
