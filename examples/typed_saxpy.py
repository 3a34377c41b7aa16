"""A small kiln program that type-checks with mypy (see docs/typing.md).

With `plugins = ["kiln.mypy_plugin"]` in the mypy configuration, scalar annotations (`kl.f32`)
read as Python floats and ints, and a module-level alias such as `F32 = kl.ndarray(...)` is a
valid annotation; the host code around the kernels (GraphBuilder, load, run) is checked against
kiln's own type hints. CI runs mypy on this file.

    python examples/typed_saxpy.py
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import kiln as kl

F32 = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def saxpy(a: kl.f32, x: F32, y: F32) -> None:
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.func
def clamp01(v: kl.f32) -> kl.f32:
    return kl.min(kl.max(v, 0.0), 1.0)


@kl.kernel
def saturate(y: F32) -> None:
    for i in range(y.shape[0]):
        y[i] = clamp01(y[i])


def build() -> kl.GraphBuilder:
    x = kl.Arg("x", F32, shape=("n",))
    y = kl.Arg("y", F32, shape=("n",))
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), x, y)
    g.dispatch(saturate, y)
    return g


def main(n: int = 1000) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "typed.kiln")
        build().compile(target="x86-64-v2").save(path)
        step: kl.CompiledGraph = kl.load(path)
        x = np.linspace(-1, 1, n, dtype=np.float32)
        y = np.full(n, 0.25, np.float32)
        step.run({"a": 0.5, "x": x, "y": y})
    expected = np.clip(np.float32(0.5) * x + np.float32(0.25), 0, 1)
    ok = bool(np.allclose(y, expected))
    print("typed_saxpy: OK" if ok else "typed_saxpy: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
