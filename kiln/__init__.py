"""kiln: bake compute graphs ahead of time.

    GraphBuilder --compile()--> CompiledGraph <--save()/load()--> file.kiln --> run({...})

This is the whole public API. Importing kiln is cheap: the front end, the code generator and
llvmlite are imported only when something is compiled, so a process that only loads and runs
.kiln files never imports them (tests/test_boundaries.py proves it).
"""

from __future__ import annotations

import importlib
from typing import Any

from kiln._version import KILN_VERSION
from kiln.errors import (
    ArgumentError,
    ArgumentValueError,
    ArtifactError,
    CudaError,
    KernelError,
    KernelTypeError,
    KilnError,
    TargetError,
)
from kiln.types import (
    bool_,
    f16,
    f32,
    f64,
    i8,
    i16,
    i32,
    i64,
    ndarray,
    u8,
    u16,
    u32,
    u64,
)

__version__ = KILN_VERSION

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    # kernel language (front end)
    "kernel": "kiln.dispatch", "func": "kiln.lang", "Kernel": "kiln.lang", "Func": "kiln.lang",
    # graphs and modules
    "Arg": "kiln.graph.builder", "GraphBuilder": "kiln.graph.builder", "Sequential": "kiln.graph.builder",
    "Module": "kiln.graph.module",
    # runtime
    "load": "kiln.runtime.compiled", "load_module": "kiln.runtime.compiled", "load_bytes": "kiln.runtime.compiled",
    "CompiledGraph": "kiln.runtime.compiled", "CompiledKernel": "kiln.runtime.compiled",
    "CompiledModule": "kiln.runtime.compiled", "KernelRuntimeError": "kiln.runtime.compiled",
    "set_num_threads": "kiln.runtime.threads", "get_num_threads": "kiln.runtime.threads",
    "set_device": "kiln.dispatch",
}
_BUILTINS = (
    "abs", "min", "max", "sqrt", "rsqrt", "exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
    "tanh", "floor", "ceil", "round", "pow", "isnan", "isinf", "select", "cast", "static", "ndrange",
    "atomic_add", "atomic_sub", "atomic_min", "atomic_max", "atomic_and", "atomic_or", "atomic_xor",
)
_LAZY.update({name: "kiln.lang.builtins_py" for name in _BUILTINS})
# vectors and matrices (kiln.types names are cheap; kl.math is Taichi's ti.math namespace)
_VECTOR_TYPES = ("vec2", "vec3", "vec4", "ivec2", "ivec3", "ivec4", "uvec2", "uvec3", "uvec4", "mat2", "mat3",
                 "mat4", "MatrixType")
_LAZY.update({name: "kiln.types" for name in _VECTOR_TYPES})
_LAZY.update({name: "kiln.lang.kmath" for name in ("math", "Vector", "Matrix", "svd", "polar_decompose")})


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'kiln' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ArgumentError", "ArgumentValueError", "ArtifactError", "CudaError", "KernelError", "KernelTypeError", "KilnError",
    "TargetError", "bool_", "f16", "f32", "f64", "i8", "i16", "i32", "i64", "ndarray", "u8", "u16", "u32",
    "u64",
]
__all__ += list(_LAZY)
