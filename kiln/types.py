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

from typing import Literal, overload

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


MAX_MATRIX_DIM = 4


class MatrixType:
    """A small vector (`shape == (n,)`) or matrix (`shape == (n, m)`) of one scalar dtype:
    `kl.vec3`, `kl.mat2`, `kl.types.vector(n, dt)`. Inside kernels these are front-end values
    expanded into scalar IR (kiln.lang.matrices); calling one constructs a value."""

    __slots__ = ("dtype", "shape")
    shape: tuple[int, ...]
    dtype: ScalarType

    def __init__(self, shape: tuple[int, ...], dtype: ScalarType) -> None:
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return (type(other) is MatrixType and other.shape == self.shape  # type: ignore[attr-defined]
                and other.dtype == self.dtype)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("MatrixType", self.shape, self.dtype))

    def __reduce__(self) -> tuple[object, ...]:
        return (MatrixType, (self.shape, self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __call__(self, *args: object) -> np.ndarray:
        # Outside a kernel a vector type builds a numpy array (kernels capture it as a constant);
        # inside, the front end turns the call into a constructor and never runs this.
        if len(args) == 1 and np.ndim(args[0]) == 0:  # type: ignore[arg-type]
            return np.full(self.shape, args[0], dtype=self.dtype.np_dtype)
        flat = np.concatenate([np.ravel(np.asarray(a)) for a in args]) if args else np.zeros(0)
        if flat.size != self.size:
            raise ValueError(f"{self!r} needs {self.size} values, got {flat.size}")
        return flat.astype(self.dtype.np_dtype).reshape(self.shape)

    def __repr__(self) -> str:
        prefix = {"f32": "", "i32": "i", "u32": "u"}.get(self.dtype.name)
        if prefix is not None and self.ndim == 1 and self.shape[0] > 1:
            return f"kl.{prefix}vec{self.shape[0]}"
        if self.dtype.name == "f32" and self.shape in ((2, 2), (3, 3), (4, 4)):
            return f"kl.mat{self.shape[0]}"
        if self.ndim == 1:
            return f"kl.types.vector({self.shape[0]}, {self.dtype!r})"
        return f"kl.types.matrix({self.shape[0]}, {self.shape[1]}, {self.dtype!r})"


def _check_dim(what: str, n: object) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_MATRIX_DIM:
        raise ValueError(f"{what} must be an int in 1..{MAX_MATRIX_DIM} (kiln keeps vectors and matrices "
                         f"in registers), got {n!r}")
    return n


def vector(n: int, dtype: ScalarType) -> MatrixType:
    """`kl.types.vector(3, kl.f32)`: the type of a vector of n elements (n in 1..4)."""
    if not isinstance(dtype, ScalarType):
        raise TypeError(f"kl.types.vector: dtype must be a kiln scalar type such as kl.f32, got {dtype!r}")
    return MatrixType((_check_dim("vector size", n),), dtype)


def matrix(n: int, m: int, dtype: ScalarType) -> MatrixType:
    """`kl.types.matrix(2, 2, kl.f32)`: the type of an n x m matrix (n, m in 1..4)."""
    if not isinstance(dtype, ScalarType):
        raise TypeError(f"kl.types.matrix: dtype must be a kiln scalar type such as kl.f32, got {dtype!r}")
    return MatrixType((_check_dim("matrix rows", n), _check_dim("matrix columns", m)), dtype)


class NdArrayType:
    """A C-contiguous n-dimensional array of one scalar dtype (`kl.ndarray(kl.f32, ndim=2)`), or
    of small vectors/matrices (`kl.ndarray(kl.vec2, ndim=1)`).

    `ndim` counts every native dimension, element dimensions included and LAST: an ndarray of
    vec2 of length n is a numpy array of shape (n, 2), `ndim == 2`, `element_shape == (2,)`.
    `dtype` or `ndim` may be None in an annotation, meaning "any": the kernel is then specialised
    per call (or per graph Arg) once the concrete type is known.
    """

    __slots__ = ("dtype", "element_shape", "ndim")
    dtype: ScalarType | None
    ndim: int | None
    element_shape: tuple[int, ...]

    def __init__(self, dtype: ScalarType | None, ndim: int | None, element_shape: tuple[int, ...] = ()) -> None:
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "ndim", ndim)
        object.__setattr__(self, "element_shape", tuple(element_shape))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return (type(other) is NdArrayType and other.dtype == self.dtype  # type: ignore[attr-defined]
                and other.ndim == self.ndim  # type: ignore[attr-defined]
                and other.element_shape == self.element_shape)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("NdArrayType", self.dtype, self.ndim, self.element_shape))

    @property
    def rank(self) -> int:
        """The number of native dimensions of a concrete array type (what codegen and the ABI use)."""
        if self.ndim is None:
            raise TypeError(f"{self!r} has no fixed number of dimensions")
        return self.ndim

    @property
    def is_concrete(self) -> bool:
        return self.dtype is not None and self.ndim is not None

    def accepts(self, concrete: NdArrayType) -> bool:
        """Whether an array of the concrete type `concrete` fits this annotation: the one rule every
        layer (front end, graph builder, direct calls, both runtimes) applies."""
        return (self.mismatch(concrete.dtype, concrete.ndim or 0) is None
                and self.element_shape == concrete.element_shape)

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

    @property
    def outer_ndim(self) -> int | None:
        """Dimensions indexed by `x[i, j]`: the native ones less the element dimensions."""
        return None if self.ndim is None else self.ndim - len(self.element_shape)

    @property
    def element_type(self) -> ScalarType | MatrixType | None:
        if not self.element_shape or self.dtype is None:
            return self.dtype
        return MatrixType(self.element_shape, self.dtype)

    def __repr__(self) -> str:
        return f"kl.ndarray({self.element_type!r}, ndim={self.outer_ndim})"


class HostNdarray(np.ndarray):
    """The storage `kl.ndarray(dtype, shape=...)`, `kl.Vector.ndarray` and `kl.Matrix.ndarray`
    make: a plain numpy array (kernels, graphs and the runtimes take it as any numpy array) with
    the host methods of a Taichi ndarray, so a ported program's host code runs unchanged."""

    def to_numpy(self) -> np.ndarray:
        """A copy, as a plain numpy array."""
        return np.array(self, copy=True).view(np.ndarray)

    def from_numpy(self, a: object) -> None:
        """Copy `a` (the same shape) into the array, converting its dtype."""
        arr = np.asarray(a)
        if arr.shape != self.shape:
            raise ValueError(f"from_numpy: the ndarray has shape {self.shape}, got an array of shape {arr.shape}")
        self[...] = arr


def host_ndarray(shape: tuple[int, ...], dtype: ScalarType) -> HostNdarray:
    """Zeros of `shape` (element dimensions included) and `dtype`, as a HostNdarray."""
    return np.zeros(shape, dtype.np_dtype).view(HostNdarray)


@overload
def ndarray(dtype: ScalarType | MatrixType | None = None, ndim: int | None = None) -> NdArrayType: ...
@overload
def ndarray(dtype: ScalarType | MatrixType, ndim: None = None, *, shape: int | tuple[int, ...]) -> HostNdarray: ...


def ndarray(dtype: ScalarType | MatrixType | None = None, ndim: int | None = None, *,
            shape: int | tuple[int, ...] | None = None) -> NdArrayType | HostNdarray:
    """`kl.ndarray(kl.f32, ndim=2)`; `kl.ndarray(kl.vec2, ndim=1)` is a numpy (n, 2) array.

    With `shape=` (Taichi's `ti.ndarray(ti.f32, shape=n)`, host side) it makes the storage
    instead: a zeroed numpy array of shape `shape` + the element shape."""
    element_shape: tuple[int, ...] = ()
    if isinstance(dtype, MatrixType):
        element_shape, dtype = dtype.shape, dtype.dtype
    if dtype is not None and not isinstance(dtype, ScalarType):
        raise TypeError(f"kl.ndarray: dtype must be a kiln scalar, vector or matrix type such as kl.f32 "
                        f"or kl.vec2, got {dtype!r}")
    if shape is not None:
        outer = (shape,) if isinstance(shape, int) else tuple(shape)
        if dtype is None or ndim is not None or not all(isinstance(d, int) and d >= 0 for d in outer):
            raise ValueError(f"kl.ndarray(dtype, shape=...) makes an array: it takes a dtype and a shape of "
                             f"ints >= 0, without ndim; got dtype={dtype!r}, ndim={ndim!r}, shape={shape!r}")
        return host_ndarray(outer + element_shape, dtype)
    if ndim is not None and (not isinstance(ndim, int) or not 1 <= ndim + len(element_shape) <= MAX_NDIM
                             or ndim < 1):
        raise ValueError(f"kl.ndarray: ndim must be an int in 1..{MAX_NDIM - len(element_shape)}, got {ndim!r}")
    return NdArrayType(dtype, None if ndim is None else ndim + len(element_shape), element_shape)


KilnType = ScalarType | NdArrayType | MatrixType

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


vec2, vec3, vec4 = (vector(n, f32) for n in (2, 3, 4))
ivec2, ivec3, ivec4 = (vector(n, i32) for n in (2, 3, 4))
uvec2, uvec3, uvec4 = (vector(n, u32) for n in (2, 3, 4))
mat2, mat3, mat4 = (matrix(n, n, f32) for n in (2, 3, 4))
