"""kiln's data types: scalar dtypes, ndarray types, and the promotion rules.

This module is shared by every layer (front end, code generator, graph, runtime), so it
imports nothing but numpy and must stay small.

Promotion (documented in docs/language.md):
- kinds are ordered bool < unsigned/signed int < float;
- a float beats any int (i32 + f32 -> f32, Taichi-style, not numpy's f64);
- two floats, or two ints of the same signedness: the wider wins;
- signed with unsigned: a signed type wide enough for both, capped at 64 bits (u64 + i64 -> i64);
- Python literals are *weak* (NumPy 2 / NEP 50): they take the other operand's type when it is
  of the same or a higher kind (x_f32 * 0.5 -> f32, x_i8 + 1 -> i8); an int operand with a float
  literal gives the default float type (`default_fp()`, f32 unless set, as Taichi's default_fp),
  whatever the int's width (loop indices are i64).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Kind = Literal["b", "i", "u", "f"]


class ScalarType:
    """A scalar dtype. Instances are the public `kl.f32` etc.; calling one inside a kernel casts.

    A plain immutable class rather than a dataclass: the runtime imports this module in every
    process, and generating dataclass methods costs start-up time.
    """

    __slots__ = ("bits", "kind", "name")
    name: str
    kind: Kind
    bits: int

    def __init__(self, name: str, kind: Kind, bits: int) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "bits", bits)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is ScalarType and other.name == self.name  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("ScalarType", self.name))

    def __reduce__(self) -> tuple[object, ...]:
        return (ScalarType, (self.name, self.kind, self.bits))

    @property
    def itemsize(self) -> int:
        return max(1, self.bits // 8)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(_NP_NAMES[self.name])

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind in ("i", "u")

    @property
    def is_signed(self) -> bool:
        return self.kind in ("i", "f")

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def min(self) -> int | float:
        """Smallest value of the type (bool: 0; floats: the most negative finite value)."""
        return value_range(self)[0]

    @property
    def max(self) -> int | float:
        """Largest value of the type (bool: 1; floats: the largest finite value)."""
        return value_range(self)[1]

    def __call__(self, value: object) -> object:
        # Outside a kernel, kl.f32(1.5) behaves like np.float32(1.5); inside, the front end
        # turns the call into a cast and never runs this.
        return self.np_dtype.type(value)

    def __repr__(self) -> str:
        return f"kl.{self.name}"


bool_ = ScalarType("bool", "b", 1)
i8 = ScalarType("i8", "i", 8)
i16 = ScalarType("i16", "i", 16)
i32 = ScalarType("i32", "i", 32)
i64 = ScalarType("i64", "i", 64)
u8 = ScalarType("u8", "u", 8)
u16 = ScalarType("u16", "u", 16)
u32 = ScalarType("u32", "u", 32)
u64 = ScalarType("u64", "u", 64)
f16 = ScalarType("f16", "f", 16)
f32 = ScalarType("f32", "f", 32)
f64 = ScalarType("f64", "f", 64)

SCALAR_TYPES: tuple[ScalarType, ...] = (bool_, i8, i16, i32, i64, u8, u16, u32, u64, f16, f32, f64)
SCALARS_BY_NAME: dict[str, ScalarType] = {t.name: t for t in SCALAR_TYPES}

_NP_NAMES = {
    "bool": "bool", "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "f16": "float16", "f32": "float32", "f64": "float64",
}
_BY_NP = {np.dtype(v): SCALARS_BY_NAME[k] for k, v in _NP_NAMES.items()}

#: Type of loop indices, shapes and integer literals with no other context.
INDEX = i64
#: The initial default float type (Taichi's default_fp); the current one is `default_fp()`.
DEFAULT_FLOAT = f32
#: the current default float type: what a float literal with no typed operand beside it, int / int
#: and int-with-float-literal arithmetic give (changed by `set_default_fp`, or `kl.init(default_fp=)`)
_default_fp: list[ScalarType] = [DEFAULT_FLOAT]
#: Type of an int literal with no typed operand beside it.
DEFAULT_INT = i64

MAX_NDIM = 8


def int_range(t: ScalarType) -> tuple[int, int]:
    """(min, max) of an integer or bool type: the one home of kiln's integer ranges."""
    if t.kind == "b":
        return 0, 1
    if t.kind == "u":
        return 0, (1 << t.bits) - 1
    if t.kind == "i":
        return -(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1
    raise ValueError(f"{t!r} is not an integer type")


def value_range(t: ScalarType) -> tuple[int, int] | tuple[float, float]:
    """(min, max) finite values of any scalar type."""
    if t.kind == "f":
        big = float(np.finfo(t.np_dtype).max)
        return -big, big
    return int_range(t)


def wrap_int(value: int, t: ScalarType, *, bit_pattern: bool = False) -> int:
    """`value` reduced modulo 2**bits into the range of integer type `t` (two's complement):
    the value of type `t` (signed for signed types), or with `bit_pattern` the signed reading of
    those bits (how LLVM spells a constant)."""
    v = value & ((1 << t.bits) - 1)
    if (bit_pattern or t.kind == "i") and v >> (t.bits - 1):
        v -= 1 << t.bits
    return v


def from_numpy(dtype: np.dtype) -> ScalarType | None:
    """The kiln scalar type of a numpy dtype, or None when kiln has no such type."""
    return _BY_NP.get(np.dtype(dtype))


class NdArrayType:
    """A C-contiguous n-dimensional array of one scalar dtype (`kl.ndarray(kl.f32, ndim=2)`).

    `dtype` or `ndim` may be None in an annotation, meaning "any": the kernel is then specialised
    per call (or per graph Arg) once the concrete type is known.
    """

    __slots__ = ("dtype", "ndim")
    dtype: ScalarType | None
    ndim: int | None

    def __init__(self, dtype: ScalarType | None, ndim: int | None) -> None:
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "ndim", ndim)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return (type(other) is NdArrayType and other.dtype == self.dtype  # type: ignore[attr-defined]
                and other.ndim == self.ndim)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("NdArrayType", self.dtype, self.ndim))

    @property
    def is_concrete(self) -> bool:
        return self.dtype is not None and self.ndim is not None

    def accepts(self, concrete: NdArrayType) -> bool:
        """Whether an array of the concrete type `concrete` fits this annotation: the one rule every
        layer (front end, graph builder, direct calls, both runtimes) applies."""
        return self.mismatch(concrete.dtype, concrete.ndim or 0) is None

    def mismatch(self, dtype: ScalarType | None, ndim: int, shown_dtype: str | None = None,
                 shape: tuple[int, ...] | None = None) -> str | None:
        """None when an array of `dtype` with `ndim` dimensions fits this annotation, else the
        reason in kiln's words (`shown_dtype`: how to print the given dtype, e.g. numpy's name;
        `shape`: printed with an ndim mismatch). A dtype kiln lacks (None) fits no fixed dtype."""
        if self.dtype is not None and self.dtype != dtype:
            got = shown_dtype if shown_dtype is not None else getattr(dtype, "name", "an unsupported dtype")
            return f"expected dtype {self.dtype.name}, got {got} (kiln never converts arrays)"
        if self.ndim is not None and self.ndim != ndim:
            return f"expected a {self.ndim}-D array, got {ndim}-D" + ("" if shape is None else f" with shape {shape}")
        return None

    def __repr__(self) -> str:
        return f"kl.ndarray({self.dtype!r}, ndim={self.ndim})"


def ndarray(dtype: ScalarType | None = None, ndim: int | None = None) -> NdArrayType:
    if dtype is not None and not isinstance(dtype, ScalarType):
        raise TypeError(f"kl.ndarray: dtype must be a kiln scalar type such as kl.f32, got {dtype!r}")
    if ndim is not None and (not isinstance(ndim, int) or not 1 <= ndim <= MAX_NDIM):
        raise ValueError(f"kl.ndarray: ndim must be an int in 1..{MAX_NDIM}, got {ndim!r}")
    return NdArrayType(dtype, ndim)


KilnType = ScalarType | NdArrayType

_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2}


def promote(a: ScalarType, b: ScalarType) -> ScalarType:
    """Result type of a binary arithmetic op between two typed operands."""
    if a == b:
        return a
    ra, rb = _KIND_RANK[a.kind], _KIND_RANK[b.kind]
    if ra != rb:
        hi = a if ra > rb else b
        # bool promotes to the other operand's type; ints go to the float type.
        return hi
    if a.kind == "b":
        return bool_
    if a.kind == "f":
        return a if a.bits >= b.bits else b
    if a.kind == b.kind:
        return a if a.bits >= b.bits else b
    signed, unsigned = (a, b) if a.kind == "i" else (b, a)
    bits = max(signed.bits, min(64, unsigned.bits * 2))
    return SCALARS_BY_NAME[f"i{bits}"]


def default_fp() -> ScalarType:
    """The current default float type (f32 unless `set_default_fp` changed it)."""
    return _default_fp[0]


def set_default_fp(t: ScalarType) -> None:
    """Make `t` (kl.f16, kl.f32 or kl.f64) the default float type of kernels compiled from now on."""
    if not isinstance(t, ScalarType) or not t.is_float:
        raise TypeError(f"set_default_fp: expected a kiln float type (kl.f32, kl.f64), got {t!r}")
    _default_fp[0] = t


def literal_type(value: bool | float) -> ScalarType:
    """Type of a Python literal standing alone."""
    if isinstance(value, bool):
        return bool_
    if isinstance(value, int):
        return DEFAULT_INT
    return _default_fp[0]


def promote_with_literal(typed: ScalarType, value: bool | float) -> ScalarType:
    """Result type of `typed op literal`: the literal is weak and adapts (NEP 50 style)."""
    lit = literal_type(value)
    if _KIND_RANK[lit.kind] <= _KIND_RANK[typed.kind]:
        return typed
    if lit.kind == "f":
        # int (or bool) with a float literal: the default float, as in Taichi, even for i64 loop
        # indices (`i + 0.5` computes in f32 unless the default is f64)
        return _default_fp[0]
    return lit  # bool with an int literal


def parse_type_name(name: str) -> ScalarType:
    """`'f32'` -> kl.f32; used by the artifact manifest and the CLI."""
    try:
        return SCALARS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown scalar type {name!r}; expected one of {sorted(SCALARS_BY_NAME)}") from None
