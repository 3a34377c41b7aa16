"""`kl.math`: vector and matrix types and functions named as in Taichi's `ti.math`, plus
`kl.Vector` / `kl.Matrix`.

Inside kernels the front end recognises these objects by identity (`VECTOR_FUNCS`, the
`Vector`/`Matrix` classes) and expands them into scalar IR (kiln.lang.matrices). Outside kernels
they compute on numpy arrays, which is handy for reference code and for module-level constants
that kernels capture. `kl.math` and `kl.Vector` import it on first use (kiln/__init__.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from kiln.lang import builtins_py
from kiln.lang.fields import matrix_field, vector_field
from kiln.types import (
    HostNdarray,
    MatrixType,
    ScalarType,
    f32,
    host_ndarray,
    i32,
    ivec2,
    ivec3,
    ivec4,
    mat2,
    mat3,
    mat4,
    matrix,
    uvec2,
    uvec3,
    uvec4,
    vec2,
    vec3,
    vec4,
    vector,
)

#: id(function) -> the name the front end knows it by (kiln.lang.matrices.FUNCTIONS)
VECTOR_FUNCS: dict[int, str] = {}


def _kernel_fn(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        VECTOR_FUNCS[id(fn)] = name
        return fn
    return register


@_kernel_fn("dot")
def dot(a: Any, b: Any) -> Any:
    return np.dot(a, b)


@_kernel_fn("cross")
def cross(a: Any, b: Any) -> Any:
    return np.cross(a, b)


@_kernel_fn("norm")
def length(v: Any) -> Any:
    return np.linalg.norm(v)


@_kernel_fn("normalized")
def normalize(v: Any) -> Any:
    return np.asarray(v) / np.linalg.norm(v)


@_kernel_fn("distance")
def distance(a: Any, b: Any) -> Any:
    return np.linalg.norm(np.asarray(a) - np.asarray(b))


@_kernel_fn("clamp")
def clamp(x: Any, lo: Any, hi: Any) -> Any:
    return np.minimum(np.maximum(x, lo), hi)


@_kernel_fn("mix")
def mix(x: Any, y: Any, a: Any) -> Any:
    return x * (1 - a) + y * a


@_kernel_fn("sign")
def sign(x: Any) -> Any:
    return np.sign(x)


@_kernel_fn("fract")
def fract(x: Any) -> Any:
    return x - np.floor(x)


@_kernel_fn("step")
def step(edge: Any, x: Any) -> Any:
    return np.where(np.asarray(x) < edge, 0.0, 1.0)


@_kernel_fn("smoothstep")
def smoothstep(edge0: Any, edge1: Any, x: Any) -> Any:
    t = clamp((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@_kernel_fn("reflect")
def reflect(x: Any, n: Any) -> Any:
    return x - 2.0 * np.dot(n, x) * np.asarray(n)


@_kernel_fn("transpose")
def transpose(m: Any) -> Any:
    return np.transpose(m)


@_kernel_fn("determinant")
def determinant(m: Any) -> Any:
    return np.linalg.det(m)


@_kernel_fn("inverse")
def inverse(m: Any) -> Any:
    return np.linalg.inv(m)


@_kernel_fn("outer_product")
def outer_product(a: Any, b: Any) -> Any:
    return np.outer(a, b)


@_kernel_fn("svd")
def svd(m: Any, dt: Any = None) -> Any:
    """(U, S, V) with m = U @ S @ V.T, S diagonal (Taichi's `ti.svd`)."""
    u, s, vt = np.linalg.svd(np.asarray(m))
    return u, np.diag(s), vt.T


@_kernel_fn("polar_decompose")
def polar_decompose(m: Any, dt: Any = None) -> Any:
    """(R, S) with m = R @ S, R a rotation (Taichi's `ti.polar_decompose`)."""
    u, s, vt = np.linalg.svd(np.asarray(m))
    return u @ vt, vt.T @ np.diag(s) @ vt


class Vector:
    """`kl.Vector([a, b, c])` builds a vector (as Taichi's `ti.Vector`); `kl.Vector.zero(dt, n)`.

    Inside kernels the front end expands these calls; outside they return numpy arrays.
    `kl.Vector.field(n, dtype, shape)` is kiln.lang.fields' (fields are module-level state;
    Taichi spells them on this class).
    """

    field = staticmethod(vector_field)

    def __new__(cls, values: Any, dt: ScalarType | None = None) -> Any:  # type: ignore[misc]
        arr = np.asarray(values)
        return arr.astype(dt.np_dtype) if dt is not None else arr

    @staticmethod
    def ndarray(n: int, dt: ScalarType, shape: int | tuple[int, ...]) -> HostNdarray:
        """Host-side storage for `kl.ndarray(kl.types.vector(n, dt), ...)`: zeros of shape
        shape + (n,) (Taichi's `ti.Vector.ndarray`; kiln's ndarrays are numpy arrays)."""
        outer = (shape,) if isinstance(shape, int) else tuple(shape)
        return host_ndarray(outer + (vector(n, dt).shape[0],), dt)

    @staticmethod
    @_kernel_fn("Vector.zero")
    def zero(dt: ScalarType, n: int) -> Any:
        return np.zeros(n, dt.np_dtype)

    @staticmethod
    @_kernel_fn("Vector.one")
    def one(dt: ScalarType, n: int) -> Any:
        return np.ones(n, dt.np_dtype)


class Matrix:
    """`kl.Matrix([[a, b], [c, d]])` builds a matrix (rows first, as Taichi's `ti.Matrix`);
    `kl.Matrix.zero(dt, n, m)`, `kl.Matrix.identity(dt, n)`; `kl.Matrix.field(n, m, dt, shape)`."""

    field = staticmethod(matrix_field)

    def __new__(cls, rows: Any, dt: ScalarType | None = None) -> Any:  # type: ignore[misc]
        arr = np.asarray(rows)
        return arr.astype(dt.np_dtype) if dt is not None else arr

    @staticmethod
    def ndarray(n: int, m: int, dt: ScalarType, shape: int | tuple[int, ...]) -> HostNdarray:
        """Host-side storage for an ndarray of n x m matrices: zeros of shape shape + (n, m)."""
        outer = (shape,) if isinstance(shape, int) else tuple(shape)
        return host_ndarray(outer + matrix(n, m, dt).shape, dt)

    @staticmethod
    @_kernel_fn("Matrix.zero")
    def zero(dt: ScalarType, n: int, m: int) -> Any:
        return np.zeros((n, m), dt.np_dtype)

    @staticmethod
    @_kernel_fn("Matrix.one")
    def one(dt: ScalarType, n: int, m: int) -> Any:
        return np.ones((n, m), dt.np_dtype)

    @staticmethod
    @_kernel_fn("Matrix.identity")
    def identity(dt: ScalarType, n: int) -> Any:
        return np.eye(n, dtype=dt.np_dtype)


def __getattr__(name: str) -> Any:
    # ti.math also re-exports the scalar math functions (sqrt, sin, ...): the kernel builtins
    try:
        return builtins_py.STUBS[name]
    except KeyError:
        raise AttributeError(f"module 'kiln.math' has no attribute {name!r}") from None


# `kl.math` is reached through kiln's lazy attribute table, which reads a name off a module
math = sys.modules[__name__]

__all__ = [
    "Matrix", "MatrixType", "Vector", "clamp", "cross", "determinant", "distance", "dot", "f32", "fract",
    "i32", "inverse", "ivec2", "ivec3", "ivec4", "length", "mat2", "mat3", "mat4", "matrix", "mix",
    "normalize", "outer_product", "polar_decompose", "reflect", "sign", "smoothstep", "step", "svd",
    "transpose", "uvec2", "uvec3", "uvec4", "vec2", "vec3", "vec4", "vector",
]

