"""Max ulp error of kiln's math builtins, f32 and f64, on the CPU and on the GPU (docs/cuda.md table).

    PYTHONPATH=. python3 bench/gpu_math_ulp.py [--cpu-only] [--n 1048576] [--markdown]

Reference: float64 numpy for f32 results (exact enough: the f64 result carries 29 more bits than
an f32 needs), np.longdouble (x87 80-bit on x86-64: 11 more bits than f64) for f64 results. The
error of a result is |got - reference| in units of the spacing of the reference rounded to the
result's type; the table gives the maximum over random arguments in each function's range (and
a few special points). Columns: kiln's CPU target (LLVM + the C library's libm), the GPU with
libdevice (the default), with `fast_math=True` (f32 only), and with kiln's own f64 code (the
fallback when libdevice is missing: KILN_LIBDEVICE=builtin).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np

import kiln as kl

FUNCS = ("sin", "cos", "tan", "exp", "log", "asin", "acos", "atan", "tanh", "atan2", "pow")

# argument ranges (x, y): uniform, or "log" for log-uniform magnitudes
RANGES = {
    "sin": ((-100.0, 100.0), None), "cos": ((-100.0, 100.0), None), "tan": ((-100.0, 100.0), None),
    "exp": ((-80.0, 80.0), None), "log": (("log", 1e-30, 1e30), None),
    "asin": ((-1.0, 1.0), None), "acos": ((-1.0, 1.0), None), "atan": (("log", 1e-6, 1e6), None),
    "tanh": ((-10.0, 10.0), None), "atan2": ((-10.0, 10.0), (-10.0, 10.0)),
    "pow": (("log", 1e-3, 1e3), (-8.0, 8.0)),
}
RANGE_TEXT = {"sin": "[-100, 100]", "cos": "[-100, 100]", "tan": "[-100, 100]", "exp": "[-80, 80]",
              "log": "[1e-30, 1e30] log-uniform", "asin": "[-1, 1]", "acos": "[-1, 1]",
              "atan": "±[1e-6, 1e6] log-uniform", "tanh": "[-10, 10]", "atan2": "y, x in [-10, 10]",
              "pow": "x in [1e-3, 1e3] log-uniform, y in [-8, 8]"}


@kl.kernel
def all_math(x: kl.ndarray(ndim=2), y: kl.ndarray(ndim=2), o: kl.ndarray(ndim=2)):
    for i in range(x.shape[1]):
        o[0, i] = kl.sin(x[0, i])
        o[1, i] = kl.cos(x[1, i])
        o[2, i] = kl.tan(x[2, i])
        o[3, i] = kl.exp(x[3, i])
        o[4, i] = kl.log(x[4, i])
        o[5, i] = kl.asin(x[5, i])
        o[6, i] = kl.acos(x[6, i])
        o[7, i] = kl.atan(x[7, i])
        o[8, i] = kl.tanh(x[8, i])
        o[9, i] = kl.atan2(x[9, i], y[9, i])
        o[10, i] = kl.pow(x[10, i], y[10, i])


def _sample(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    if spec is None:
        return np.ones(n)
    if spec[0] == "log":
        lo, hi = np.log(spec[1]), np.log(spec[2])
        return np.exp(rng.uniform(lo, hi, n))
    return rng.uniform(spec[0], spec[1], n)


def inputs(n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    x = np.empty((len(FUNCS), n))
    y = np.empty((len(FUNCS), n))
    for k, f in enumerate(FUNCS):
        sx, sy = RANGES[f]
        x[k] = _sample(sx, n, rng)
        y[k] = _sample(sy, n, rng)
    x[7, : n // 2] *= -1.0                           # atan: both signs
    x[:, :4] = [0.5, 1.0, 0.0, 0.25]                 # a few exact points everywhere
    return x.astype(dtype), y.astype(dtype)


def reference(x: np.ndarray, y: np.ndarray, wide) -> np.ndarray:
    xw, yw = x.astype(wide), y.astype(wide)
    ref = np.empty(x.shape, dtype=wide)
    for k, f in enumerate(FUNCS):
        a, b = xw[k], yw[k]
        if f == "atan2":
            ref[k] = np.arctan2(a, b)
        elif f == "pow":
            ref[k] = np.power(a, b)
        else:
            ref[k] = getattr(np, {"asin": "arcsin", "acos": "arccos", "atan": "arctan"}.get(f, f))(a)
    return ref


def max_ulp(got: np.ndarray, ref: np.ndarray, dtype) -> np.ndarray:
    """Per function (row), the max |got - ref| in ulps of `ref` rounded to `dtype`."""
    with np.errstate(all="ignore"):
        r_t = ref.astype(dtype)
        ulp = np.spacing(np.abs(r_t)).astype(ref.dtype)
        err = np.abs(got.astype(ref.dtype) - ref) / ulp
        same = (got.astype(ref.dtype) == ref) | (np.isnan(got) & np.isnan(ref))
        finite_ref = np.isfinite(r_t)
        err = np.where(same, 0.0, np.where(finite_ref, err, np.inf))
    return err.max(axis=1)


def compile_kernel(target: str, dtype, variant: str):
    """The all_math kernel for `target` ("cpu"/"cuda"), GPU math `variant`: "libdevice",
    "fast" (fast_math=True) or "builtin" (kiln's own f64 code)."""
    from kiln.codegen import nvptx
    a2 = kl.ndarray(kl.f32 if dtype == np.float32 else kl.f64, ndim=2)
    m = kl.Module(targets=[target])
    m.add_kernel(all_math, a2, a2, a2)
    saved_env, saved_build = os.environ.get("KILN_LIBDEVICE"), nvptx.build_ptx
    try:
        if variant == "builtin":
            os.environ["KILN_LIBDEVICE"] = "builtin"
        if variant == "fast":
            # the compiler imports build_ptx when it runs: the user-facing option is not wired yet
            nvptx.build_ptx = functools.partial(saved_build, fast_math=True)
        return m.compile().kernels["all_math"]
    finally:
        nvptx.build_ptx = saved_build
        if saved_env is None:
            os.environ.pop("KILN_LIBDEVICE", None)
        else:
            os.environ["KILN_LIBDEVICE"] = saved_env


def measure(columns: list[tuple[str, str, str]], n: int) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], np.ndarray] = {}
    for dtype, wide, tname in ((np.float32, np.float64, "f32"), (np.float64, np.longdouble, "f64")):
        x, y = inputs(n, dtype)
        ref = reference(x, y, wide)
        for label, target, variant in columns:
            if variant == "fast" and tname == "f64":
                continue
            k = compile_kernel(target, dtype, variant)
            o = np.zeros_like(x)
            k(x, y, o)
            out[(label, tname)] = max_ulp(o, ref, dtype)
    return out


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "inf"
    return f"{v:.1f}" if v < 1e4 else f"{v:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--n", type=int, default=1 << 20)
    opts = ap.parse_args()
    np.seterr(all="ignore")
    columns = [("CPU", "cpu", "")]
    if not opts.cpu_only:
        from kiln.codegen.libdevice import find_libdevice
        from kiln.runtime.cuda import cuda_available
        why = cuda_available()
        if why:
            sys.exit(f"no GPU: {why} (use --cpu-only)")
        print("libdevice:", find_libdevice())
        columns += [("GPU libdevice", "cuda", "libdevice"), ("GPU fast_math", "cuda", "fast"),
                    ("GPU builtin (fallback)", "cuda", "builtin")]
    res = measure(columns, opts.n)
    heads = [f"{lab} {t}" for t in ("f32", "f64") for lab, _, v in columns if not (v == "fast" and t == "f64")]
    print(f"\nmax ulp error over {opts.n} arguments per function (reference: float64 for f32, "
          f"longdouble ({np.finfo(np.longdouble).nmant + 1}-bit mantissa) for f64)\n")
    print("| function | arguments | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(heads))
    for k, f in enumerate(FUNCS):
        cells = [_fmt(res[(lab, t)][k]) for t in ("f32", "f64") for lab, _, v in columns
                 if not (v == "fast" and t == "f64")]
        print(f"| {f} | {RANGE_TEXT[f]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
