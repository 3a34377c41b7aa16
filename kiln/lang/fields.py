"""Module-level state and Taichi's compile-time parameters: `kl.field`, `kl.template()`,
`@kl.data_oriented`, `kl.grouped` (`kl.init` is kiln.dispatch's).

A `Field` owns a numpy array (element dimensions last, 0-d fields stored with shape (1,)). A kernel
or func that names a field gets a HIDDEN array parameter `@name` in its IR (kiln.lang.function):
direct calls bind it to the field's own array (kiln.dispatch); a compiled graph or module records
the field in its file and owns a copy of it (kiln.driver.fields, kiln.runtime.compiled).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from kiln.types import MAX_NDIM, NdArrayType, ScalarType, f32, from_numpy, i32

_PY_DTYPES: dict[int, ScalarType] = {id(float): f32, id(int): i32}


def _scalar_dtype(dtype: Any, what: str) -> ScalarType:
    if isinstance(dtype, ScalarType):
        return dtype
    if id(dtype) in _PY_DTYPES:
        return _PY_DTYPES[id(dtype)]
    try:
        t = from_numpy(np.dtype(dtype))
    except TypeError:
        t = None
    if t is None:
        raise TypeError(f"{what}: dtype must be a kiln scalar type such as kl.f32, got {dtype!r}")
    return t


def _shape(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, tuple | list) or not all(
            isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"{what}: shape must be an int, a tuple of ints >= 1, or () for a 0-d field; got {shape!r}")
    return tuple(int(d) for d in shape)


#: names given to fields automatically so far (a new automatic name avoids them)
_TAKEN: set[str] = set()


class Field:
    """A module-level array that kernels and funcs use without passing it (Taichi's `ti.field`).

    Python scope: `x[i]`, `x[i, j] = v`, `x[None]` (0-d), `to_numpy()`, `from_numpy()`, `fill()`,
    `shape`, `dtype`, `element_shape`. `name` is the name kernels reach it by (the Python name of
    its first use unless given) and its key in `compiled.fields` after loading a compiled module.
    """

    def __init__(self, dtype: Any, shape: Any = (), element_shape: tuple[int, ...] = (),
                 name: str | None = None) -> None:
        self.dtype = _scalar_dtype(dtype, "kl.field")
        self.shape = _shape(shape, "kl.field")
        self.element_shape = _shape(element_shape, "kl.field element shape") if element_shape else ()
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise ValueError(f"kl.field: name must be an identifier, got {name!r}")
        self.name = name
        if name is not None:
            _TAKEN.add(name)
        storage = (self.shape or (1,)) + self.element_shape
        if len(storage) > MAX_NDIM:
            raise ValueError(f"kl.field: {len(storage)} dimensions (element dimensions included) is more "
                             f"than kiln's {MAX_NDIM}")
        #: the field's storage: what kernels read and write (numpy, element dimensions last)
        self.array = np.zeros(storage, self.dtype.np_dtype)

    # -- what kernels see ------------------------------------------------------------------
    @property
    def array_type(self) -> NdArrayType:
        """The type of the hidden IR parameter (0-d fields are 1-D arrays of one element); a
        vector or matrix field's elements are vector/matrix values, as in an ndarray of vec3."""
        return NdArrayType(self.dtype, self.array.ndim, self.element_shape)

    @property
    def index_ndim(self) -> int:
        """How many indices address one element (0 for a 0-d field, which is indexed `x[None]`)."""
        return len(self.shape)

    def name_for(self, capture_name: str) -> str:
        """The field's name, fixed at its first use by a kernel (`capture_name`, the global,
        attribute or template parameter name it was reached by) unless given; a name another
        field already took gets a suffix (`h`, `h_2`, ...), so fields reached by one parameter
        name (templates) or one attribute name (two instances of a class) stay distinct."""
        if self.name is None:
            name, k = capture_name, 1
            while name in _TAKEN:
                k += 1
                name = f"{capture_name}_{k}"
            self.name = name
            _TAKEN.add(name)
        return self.name

    # -- Python scope ----------------------------------------------------------------------
    def _key(self, key: Any) -> Any:
        if key is None:
            if self.shape:
                raise IndexError(f"field {self.name or ''!s} has shape {self.shape}; x[None] is for 0-d fields")
            return 0
        if not self.shape:
            raise IndexError("a 0-d field is indexed with x[None]")
        return key

    def __getitem__(self, key: Any) -> Any:
        v = self.array[self._key(key)]
        return v.copy() if isinstance(v, np.ndarray) else v.item()

    def __setitem__(self, key: Any, value: Any) -> None:
        self.array[self._key(key)] = value

    def __iter__(self) -> Iterator[Any]:
        """The indices of the field's elements (ints for a 1-D field, else tuples), as `for i in
        x` means in a kernel."""
        if len(self.shape) == 1:
            return iter(range(self.shape[0]))
        return itertools.product(*(range(d) for d in self.shape))

    def to_numpy(self) -> np.ndarray:
        """A copy of the content, shaped `shape + element_shape`."""
        return self.array.reshape(self.shape + self.element_shape).copy()

    def from_numpy(self, a: Any) -> None:
        """Copy `a` (shaped `shape + element_shape`) into the field, converting its dtype."""
        arr = np.asarray(a)
        want = self.shape + self.element_shape
        if arr.shape != want:
            raise ValueError(f"from_numpy: field {self.name or ''!s} has shape {want}, got an array of shape "
                             f"{arr.shape}")
        self.array[...] = arr.reshape(self.array.shape).astype(self.dtype.np_dtype, copy=False)

    def fill(self, value: Any) -> None:
        self.array.fill(value)

    def __repr__(self) -> str:
        es = f", element_shape={self.element_shape}" if self.element_shape else ""
        return f"<kl.field {self.name or '?'} {self.dtype.name}{es} shape={self.shape}>"


def field(dtype: Any, shape: Any = (), name: str | None = None) -> Field:
    """A module-level field of scalars: `kl.field(kl.f32, shape=(n, m))`, `kl.field(kl.i32, shape=())`."""
    return Field(dtype, shape, (), name)


def vector_field(n: int, dtype: Any, shape: Any = (), name: str | None = None) -> Field:
    """`kl.Vector.field(n, dtype, shape)`: a field whose elements are n-vectors (last array dim n)."""
    return Field(dtype, shape, (n,), name)


def matrix_field(n: int, m: int, dtype: Any, shape: Any = (), name: str | None = None) -> Field:
    """`kl.Matrix.field(n, m, dtype, shape)`: a field whose elements are n x m matrices."""
    return Field(dtype, shape, (n, m), name)


# -- compile-time parameters -------------------------------------------------------------------
class Template:
    """The annotation `kl.template()`: the argument is a compile-time value (a field, a Python
    constant, an object with fields as attributes, or in graphs a fixed array Arg); one variant is
    compiled per distinct value (fields and objects by identity, constants by value)."""

    def __repr__(self) -> str:
        return "kl.template()"


_TEMPLATE = Template()


def template() -> Template:
    """The annotation `kl.template()` (Taichi's `ti.template()`): the argument is a compile-time
    value (a field, a Python constant, a data-oriented object); one variant per distinct value."""
    return _TEMPLATE


class TemplateArg:
    """A template parameter's value in a specialisation key: equal by identity for fields and
    objects, by type and value for Python constants."""

    __slots__ = ("key", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        if isinstance(value, bool | int | float | str) and not isinstance(value, np.generic):
            self.key: tuple[Any, ...] = ("const", type(value).__name__, value)
        elif isinstance(value, np.generic):
            self.key = ("const", str(value.dtype), value.item())
        elif isinstance(value, tuple) and all(isinstance(v, bool | int | float) for v in value):
            self.key = ("const", "tuple", value)
        else:
            self.key = ("obj", id(value))

    def __eq__(self, other: object) -> bool:
        return type(other) is TemplateArg and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def tag(self) -> str:
        """A short, name-safe tag for mangled names."""
        if isinstance(self.value, Field):
            return f"F{self.value.name or 'field'}"
        if self.key[0] == "const":
            return "T" + "".join(c if c.isalnum() else "_" for c in repr(self.key[2]))[:24]
        return f"O{type(self.value).__name__}"

    def __repr__(self) -> str:
        return f"template({self.value!r})"


def data_oriented(cls: type) -> type:
    """`@kl.data_oriented`: a class whose kernels are methods (`self.x` fields and Python constants
    as attributes). Calling `obj.step()` compiles one variant per instance, as in Taichi."""
    if not isinstance(cls, type):
        raise TypeError(f"@kl.data_oriented decorates a class, got {cls!r}")
    cls._kiln_data_oriented = True  # type: ignore[attr-defined]
    return cls


class Grouped:
    """`kl.grouped(x)` outside a kernel: iterates index tuples of a field (or an ndrange)."""

    def __init__(self, over: Any) -> None:
        self.over = over

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        if isinstance(self.over, Field):
            return itertools.product(*(range(d) for d in self.over.shape))
        if isinstance(self.over, np.ndarray):
            return itertools.product(*(range(d) for d in self.over.shape))
        return iter(self.over)


def grouped(over: Any) -> Grouped:
    """`for I in kl.grouped(x)`: one loop variable holding the whole index (an integer vector in
    kernels; outside them, the index tuples)."""
    return Grouped(over)


