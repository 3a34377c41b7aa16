"""Python-side stubs of the kernel builtins (`kl.sqrt`, `kl.min`, `kl.atomic_add`, `kl.ndrange`...).

Inside a kernel the front end maps each stub *object* (by identity) to its IR meaning, whatever
name or module path the user reached it through. Outside a kernel the math stubs compute on
Python/numpy values (`kl.sqrt(np.float32(2))`), which is handy for testing reference code;
the atomics and `ndrange` have no meaning outside a kernel and raise a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import product
from typing import Any

import numpy as np

from kiln.ir.builtins import BUILTINS
from kiln.types import ScalarType


class BuiltinStub:
    """A kernel builtin. `kind` says how the front end treats it: "math" (a BUILTINS entry),
    "select", "cast", "atomic", "static" or "ndrange"."""

    def __init__(self, name: str, kind: str, py_impl: Callable[..., Any] | None, doc: str) -> None:
        self.name = name
        self.kind = kind
        self._py_impl = py_impl
        self.__doc__ = doc
        self.__name__ = name
        self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._py_impl is None:
            raise RuntimeError(f"kl.{self.name}() can only be used inside a @kl.kernel or @kl.func")
        return self._py_impl(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<kiln builtin {self.name}>"


def _rsqrt(x: Any) -> Any:
    return 1 / np.sqrt(x)


def _round(x: Any) -> Any:
    return np.round(x)


def _min(a: Any, b: Any) -> Any:
    return np.fmin(a, b)


def _max(a: Any, b: Any) -> Any:
    return np.fmax(a, b)


_PY_MATH: dict[str, Callable[..., Any]] = {
    "abs": np.abs, "min": _min, "max": _max, "sqrt": np.sqrt, "rsqrt": _rsqrt, "exp": np.exp,
    "log": np.log, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "atan2": np.arctan2, "tanh": np.tanh, "floor": np.floor,
    "ceil": np.ceil, "round": _round, "pow": np.power, "isnan": np.isnan, "isinf": np.isinf,
}

#: every stub by name (math builtins plus the special forms)
STUBS: dict[str, BuiltinStub] = {}

for _name, _b in BUILTINS.items():
    STUBS[_name] = BuiltinStub(_name, "math", _PY_MATH.get(_name), _b.doc)


def _select(cond: Any, a: Any, b: Any) -> Any:
    return np.where(cond, a, b)


def _cast(value: Any, dtype: ScalarType) -> Any:
    return dtype(value)


def _static(value: Any) -> Any:
    return value


def _ndrange(*dims: Any) -> Any:
    ranges = []
    for d in dims:
        if isinstance(d, tuple | list):
            ranges.append(range(*d))
        else:
            ranges.append(range(d))
    return product(*ranges)


STUBS["select"] = BuiltinStub("select", "select", _select,
                              "select(cond, a, b): a where cond is true, else b (both evaluated)")
STUBS["cast"] = BuiltinStub("cast", "cast", _cast, "cast(value, dtype): numeric conversion")
STUBS["static"] = BuiltinStub("static", "static", _static,
                              "static(x): evaluate x at compile time (if conditions, loop unrolling)")
STUBS["ndrange"] = BuiltinStub("ndrange", "ndrange", _ndrange,
                               "ndrange(*dims): multi-dimensional range; each dim is n or (start, stop)")
for _op in ("add", "sub", "min", "max", "and", "or", "xor"):
    STUBS[f"atomic_{_op}"] = BuiltinStub(
        f"atomic_{_op}", "atomic", None,
        f"atomic_{_op}(x[i], v): atomically x[i] = x[i] {_op} v; returns the old value")

abs = STUBS["abs"]
min = STUBS["min"]
max = STUBS["max"]
sqrt = STUBS["sqrt"]
rsqrt = STUBS["rsqrt"]
exp = STUBS["exp"]
log = STUBS["log"]
sin = STUBS["sin"]
cos = STUBS["cos"]
tan = STUBS["tan"]
asin = STUBS["asin"]
acos = STUBS["acos"]
atan = STUBS["atan"]
atan2 = STUBS["atan2"]
tanh = STUBS["tanh"]
floor = STUBS["floor"]
ceil = STUBS["ceil"]
round = STUBS["round"]
pow = STUBS["pow"]
isnan = STUBS["isnan"]
isinf = STUBS["isinf"]
select = STUBS["select"]
cast = STUBS["cast"]
static = STUBS["static"]
ndrange = STUBS["ndrange"]
atomic_add = STUBS["atomic_add"]
atomic_sub = STUBS["atomic_sub"]
atomic_min = STUBS["atomic_min"]
atomic_max = STUBS["atomic_max"]
atomic_and = STUBS["atomic_and"]
atomic_or = STUBS["atomic_or"]
atomic_xor = STUBS["atomic_xor"]

#: Python's own builtins and `math` functions that mean a kiln builtin inside a kernel
PY_ALIASES: dict[int, str] = {}


def _alias(obj: object, name: str) -> None:
    PY_ALIASES[id(obj)] = name


for _fname in ("sqrt", "exp", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "tanh", "floor",
               "ceil", "pow", "isnan", "isinf", "log"):
    _alias(getattr(math, _fname), _fname)
_alias(math.fabs, "abs")

__all__ = list(STUBS) + ["BuiltinStub", "STUBS"]
