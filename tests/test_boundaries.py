"""Layer boundaries: a saved file runs in a fresh process whose kernels' source is gone and where
the front end, the code generator and llvmlite cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

KERNELS = '''
import kiln as kl

@kl.func
def clamp(v: kl.f32, lo: kl.f32, hi: kl.f32) -> kl.f32:
    return kl.min(kl.max(v, lo), hi)

@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = clamp(a * x[i] + y[i], -1e3, 1e3)

@kl.kernel
def total(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]

@kl.kernel
def blur(src: kl.ndarray(kl.f32, ndim=2), dst: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange((1, src.shape[0] - 1), (1, src.shape[1] - 1)):
        dst[i, j] = 0.25 * (src[i-1, j] + src[i+1, j] + src[i, j-1] + src[i, j+1])
'''

BUILD = '''
import sys
sys.path.insert(0, sys.argv[1])
import kiln as kl
import user_kernels as k
x = kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",))
y = kl.Arg("y", kl.ndarray(kl.f32, ndim=1), shape=("n",))
a = kl.Arg("a", kl.f32)
out = kl.Arg("out", kl.ndarray(kl.f64, ndim=1))
src = kl.Arg("src", kl.ndarray(kl.f32, ndim=2))
dst = kl.Arg("dst", kl.ndarray(kl.f32, ndim=2))
g = kl.GraphBuilder()
g.dispatch(k.saxpy, a, x, y)
seq = g.create_sequential()
seq.dispatch(k.total, y, out)
seq.dispatch(k.blur, src, dst)
g.append(seq)
g.compile(target=sys.argv[3]).save(sys.argv[2])
'''

RUN = '''
import sys
BLOCKED = ("kiln.lang", "kiln.codegen", "kiln.driver", "kiln.dispatch", "kiln.passes", "kiln.graph", "llvmlite", "user_kernels")
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
import kiln as kl
step = kl.load(sys.argv[1])
print(step.args)
rng = np.random.default_rng(1)
xs = rng.random(1000, dtype=np.float32); ys = rng.random(1000, dtype=np.float32)
img = rng.random((40, 50), dtype=np.float32); out_img = np.zeros_like(img)
acc = np.zeros(1)
ref_y = np.clip(np.float32(2.0) * xs + ys, -1e3, 1e3)
ref_img = np.zeros_like(img)
ref_img[1:-1, 1:-1] = np.float32(0.25) * (img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:])
step.run({"a": 2.0, "x": xs, "y": ys, "out": acc, "src": img, "dst": out_img})
np.testing.assert_allclose(ys, ref_y, rtol=1e-6)
np.testing.assert_allclose(acc[0], ref_y.astype(np.float64).sum(), rtol=1e-6)
np.testing.assert_allclose(out_img, ref_img, rtol=1e-6)
leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
assert not leaked, leaked
print("RESULTS OK")
'''


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _build_and_run(tmp_path: Path, target: str) -> str:
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "user_kernels.py").write_text(textwrap.dedent(KERNELS))
    model = tmp_path / "model.kiln"
    subprocess.run([sys.executable, "-c", BUILD, str(src_dir), str(model), target], check=True, env=_env(),
                   cwd=tmp_path)
    # The kernels' source file is deleted before the file is loaded anywhere else.
    (src_dir / "user_kernels.py").unlink()
    for cached in src_dir.rglob("*.pyc"):
        cached.unlink()
    proc = subprocess.run([sys.executable, "-c", RUN, str(model)], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_saved_graph_runs_without_source_or_compiler(tmp_path: Path) -> None:
    out = _build_and_run(tmp_path, "host")
    assert "RESULTS OK" in out
    assert "x: ndarray(f32, ndim=1, shape=(n,)) [read]" in out


def test_portable_file_runs_the_same(tmp_path: Path) -> None:
    assert "RESULTS OK" in _build_and_run(tmp_path, "x86-64-v2")


def test_import_kiln_and_load_import_no_compiler() -> None:
    code = ("import sys, kiln, kiln.runtime.compiled; "
            "bad = [m for m in sys.modules if m.startswith(('kiln.lang', 'kiln.codegen', 'llvmlite', 'kiln.driver', 'kiln.dispatch'))]; "
            "print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def test_results_identical_with_both_loaders(tmp_path: Path) -> None:
    """The same saved file gives bit-identical results through kiln's ELF loader and MCJIT."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "user_kernels.py").write_text(textwrap.dedent(KERNELS))
    model = tmp_path / "model.kiln"
    subprocess.run([sys.executable, "-c", BUILD, str(src_dir), str(model), "host"], check=True, env=_env())
    from kiln import config
    from kiln.runtime import compiled, native

    data = model.read_bytes()
    results = []
    for loader in ("elf", "mcjit"):
        with config.configured(loader=loader):      # KILN_LOADER, read once into kiln.config
            step = compiled.load_bytes(data)
        assert type(step.graphs["main"]._module._native).__module__ == f"kiln.runtime.{loader}" or loader == "elf"
        rng = np.random.default_rng(3)
        args = {"a": 1.5, "x": rng.random(777, dtype=np.float32), "y": rng.random(777, dtype=np.float32),
                "out": np.zeros(1), "src": rng.random((9, 33), dtype=np.float32), "dst": np.zeros((9, 33), np.float32)}
        step.graphs["main"].run(args)
        results.append(args)
    for key in ("y", "dst"):
        np.testing.assert_array_equal(results[0][key], results[1][key])
    assert native.default_loader() in ("elf", "mcjit")
