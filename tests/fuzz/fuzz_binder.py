"""Argument binder fuzz harness: random argument dicts for a compiled graph and kernel; every run
must either succeed or raise ArgumentError / ArgumentValueError, and a refused run must leave
every array untouched.

    PYTHONPATH=$PWD python tests/fuzz/fuzz_binder.py --seed 1 --count 20000

Each case starts from valid arguments and breaks one to three of them: wrong Python types,
numpy scalars of every dtype, 0-d arrays, huge Python ints (10**400), inf/nan, wrong dtypes
(byte-swapped too), wrong ndim, non-contiguous, misaligned and read-only arrays, shape-constraint
violations, missing and unknown names, non-dict argument containers. Escapes (any other
exception) are counted by type and message prefix; exit status 1 if there was any, or if an
array changed during a refused run.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import kiln as kl
from kiln.errors import ArgumentError, ArgumentValueError

SCALAR_PARAMS = {"a_i8": kl.i8, "b_u64": kl.u64, "c_f16": kl.f16, "d_bool": kl.bool_, "e_f32": kl.f32,
                 "f_i64": kl.i64, "g_f64": kl.f64, "h_u8": kl.u8}


@kl.kernel
def scalars_into(out: kl.ndarray(kl.f64, ndim=1), x: kl.ndarray(kl.i32, ndim=2), a_i8: kl.i8,
                 b_u64: kl.u64, c_f16: kl.f16, d_bool: kl.bool_, e_f32: kl.f32, f_i64: kl.i64,
                 g_f64: kl.f64, h_u8: kl.u8):
    for i in range(out.shape[0]):
        s = kl.f64(a_i8) + kl.f64(b_u64) + kl.f64(c_f16) + kl.f64(e_f32) + kl.f64(f_i64) + g_f64
        if d_bool:
            s = s + kl.f64(h_u8)
        out[i] = s + kl.f64(x[i % x.shape[0], 0])


def build() -> tuple[Any, Any]:
    """The graph (shape constraints: out is (n,), x is (m, 2)) and the exported kernel."""
    g = kl.GraphBuilder()
    args = [kl.Arg("out", kl.ndarray(kl.f64, ndim=1), shape=("n",)),
            kl.Arg("x", kl.ndarray(kl.i32, ndim=2), shape=("m", 2))]
    args += [kl.Arg(name, t) for name, t in SCALAR_PARAMS.items()]
    g.dispatch(scalars_into, *args)
    m = kl.Module(target="x86-64-v2")
    m.add_graph("main", g)
    m.add_kernel(scalars_into, kl.ndarray(kl.f64, ndim=1), kl.ndarray(kl.i32, ndim=2),
                 *SCALAR_PARAMS.values(), name="scalars_into")
    compiled = m.compile()
    return compiled.graphs["main"], compiled.kernels["scalars_into"]


def valid_args(rng: random.Random) -> dict[str, Any]:
    n, m = rng.randint(1, 6), rng.randint(1, 4)
    args: dict[str, Any] = {"out": np.zeros(n), "x": np.ones((m, 2), np.int32)}
    args.update(a_i8=-3, b_u64=7, c_f16=0.5, d_bool=True, e_f32=1.25, f_i64=-9, g_f64=2.0, h_u8=200)
    return args


NUMPY_SCALARS = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                 np.float16, np.float32, np.float64, np.longdouble, np.complex64]


class FrozenMapping(Mapping):
    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d

    def __getitem__(self, k: str) -> Any:
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


def _numpy_scalar(rng: random.Random) -> Any:
    """A numpy scalar of a random dtype holding a value that may not fit the parameter."""
    t = rng.choice(NUMPY_SCALARS)
    value = rng.choice([0, 1, -1, 127, 255, 1000, 65504, 70000])
    with np.errstate(all="ignore"):
        return np.array(value).astype(t)[()]


def bad_scalar(rng: random.Random) -> Any:
    return rng.choice([
        10**400, -10**400, 2**64, -(2**63) - 1, 2**63, 2**31, -129, 256, 70000.0, 1e39, -1e39, 1e309,
        float("inf"), float("-inf"), float("nan"), True, None, "1", b"1", 1j, [1], (1,), {},
        np.array(3), np.array([3]), np.array(1e300), np.zeros((0,)), object(),
        _numpy_scalar(rng), np.longdouble("1e4000"), np.float64(np.nan), np.uint64(2**64 - 1),
        np.int64(-2**63),
        __import__("fractions").Fraction(1, 3), __import__("decimal").Decimal("1.5"),
    ])


def bad_array(rng: random.Random, a: np.ndarray) -> Any:
    choice = rng.randrange(14)
    if choice == 0:
        return a.astype(rng.choice([np.float32, np.int64, np.int32, np.float64, np.uint8, object]))
    if choice == 1:
        return a.astype(a.dtype.newbyteorder(">"))
    if choice == 2:
        return a.reshape(a.shape + (1,))
    if choice == 3:
        return a.ravel()[:, None] if a.ndim == 1 else a.ravel()
    if choice == 4:
        big = np.zeros((a.shape[0] * 2,) + a.shape[1:], a.dtype)
        return big[::2]                                   # non-contiguous
    if choice == 5:
        b = a.copy()
        b.flags.writeable = False
        return b                                          # read-only
    if choice == 6:
        raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
        return raw.view(a.dtype).reshape(a.shape) if a.nbytes else raw   # misaligned
    if choice == 7:
        return a.tolist()
    if choice == 8:
        return np.zeros((a.shape[0] + 1,) + a.shape[1:], a.dtype)        # breaks a shape symbol
    if choice == 9:
        return np.zeros(a.shape[:-1] + (3,), a.dtype) if a.ndim == 2 else np.zeros((0,), a.dtype)
    if choice == 10:
        return np.asfortranarray(np.zeros(a.shape[::-1], a.dtype).T) if a.ndim == 2 else a[::-1]
    if choice == 11:
        return memoryview(a.tobytes())
    if choice == 12:
        return np.ma.masked_array(a)
    return bad_scalar(rng)


def mutate(rng: random.Random, args: dict[str, Any]) -> tuple[Any, str]:
    what = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        name = rng.choice(sorted(args, key=str))
        r = rng.random()
        if r < 0.08:
            del args[name]
            what.append(f"drop {name}")
        elif r < 0.14:
            args[rng.choice(["extra", str(name).upper(), 3, None])] = 1
            what.append("unknown name")
        elif isinstance(args[name], np.ndarray) and args[name].ndim >= 1:
            args[name] = bad_array(rng, args[name])
            what.append(f"{name} -> {type(args[name]).__name__}")
        else:
            args[name] = bad_scalar(rng)
            what.append(f"{name} -> {args[name]!r:.40}")
    r = rng.random()
    if r < 0.03:
        return list(args.items()), "a list of pairs"
    if r < 0.06:
        return FrozenMapping(args), "a Mapping " + "; ".join(what)
    return args, "; ".join(what)


class Stats:
    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.escapes: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self.half_written = 0

    def as_json(self) -> dict[str, Any]:
        return {"cases": sum(self.outcomes.values()), "outcomes": dict(self.outcomes),
                "escapes": dict(self.escapes), "half_written": self.half_written, "examples": self.examples}


def _arrays(args: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    values = args.values() if isinstance(args, Mapping) else [v for _k, v in args]
    return [(v, v.copy()) for v in values if isinstance(v, np.ndarray)]


def run(seed: int, count: int, log: Callable[[str], None] = print) -> Stats:
    rng = random.Random(seed)
    graph, kernel = build()
    stats = Stats()
    for i in range(count):
        args, what = mutate(rng, valid_args(rng))
        snapshot = _arrays(args)
        target = rng.choice(["graph", "kernel", "call"])
        if target == "call" and isinstance(args, dict) and not all(isinstance(k, str) for k in args):
            target = "kernel"       # f(**{3: 1}) is Python's TypeError, before kiln is called
        try:
            if target == "graph":
                graph.run(args)
            elif target == "kernel":
                kernel.run(args)
            elif isinstance(args, dict):
                kernel(**args)
            else:
                kernel(*args) if isinstance(args, list) else kernel(args)
            stats.outcomes["ran"] += 1
            continue
        except ArgumentValueError:
            stats.outcomes["ArgumentValueError"] += 1
        except ArgumentError:
            stats.outcomes["ArgumentError"] += 1
        except Exception as e:  # noqa: BLE001 - what the harness looks for
            sig = f"{type(e).__name__}: {str(e)[:60]}"
            stats.escapes[sig] += 1
            stats.outcomes["escaped"] += 1
            if sig not in stats.examples:
                stats.examples[sig] = f"case {i} ({target}; {what})"
                log(f"ESCAPE {sig} in {stats.examples[sig]}")
        if any(not np.array_equal(a, before, equal_nan=a.dtype.kind == "f") for a, before in snapshot
               if a.shape == before.shape and a.dtype != object):
            stats.half_written += 1
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args(argv)
    stats = run(args.seed, args.count, log=lambda s: print(s, file=sys.stderr))
    print(json.dumps(stats.as_json()))
    return 1 if stats.escapes or stats.half_written else 0


if __name__ == "__main__":
    sys.exit(main())
