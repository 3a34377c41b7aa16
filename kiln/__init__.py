"""kiln: bake compute graphs ahead of time.

    GraphBuilder --compile()--> CompiledGraph <--save()/load()--> file.kiln --> run({...})

This is the whole public API. Importing kiln is cheap: the front end, the code generator and
llvmlite are imported only when something is compiled, so a process that only loads and runs
.kiln files never imports them (tests/test_boundaries.py proves it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kiln.errors import (
    ArgumentError,
    ArgumentValueError,
    ArtifactError,
    CudaError,
    KernelError,
    KernelTypeError,
    KilnError,
    MissingExtraError,
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

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    # kernel language (front end)
    "kernel": "kiln.lang", "func": "kiln.lang", "Kernel": "kiln.lang", "Func": "kiln.lang",
    # graphs and modules
    "Arg": "kiln.graph.builder", "GraphBuilder": "kiln.graph.builder", "Sequential": "kiln.graph.builder",
    "Module": "kiln.graph.module",
    # runtime
    "load": "kiln.runtime.compiled", "load_module": "kiln.runtime.compiled", "load_bytes": "kiln.runtime.compiled",
    "CompiledGraph": "kiln.runtime.compiled", "CompiledKernel": "kiln.runtime.compiled",
    "CompiledModule": "kiln.runtime.compiled", "KernelRuntimeError": "kiln.runtime.compiled",
    "set_num_threads": "kiln.runtime.threads", "get_num_threads": "kiln.runtime.threads",
    "set_device": "kiln.compiler",
}
_BUILTINS = (
    "abs", "min", "max", "sqrt", "rsqrt", "exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
    "tanh", "floor", "ceil", "round", "pow", "isnan", "isinf", "select", "cast", "static", "ndrange",
    "atomic_add", "atomic_sub", "atomic_min", "atomic_max", "atomic_and", "atomic_or", "atomic_xor",
)
_LAZY.update({name: "kiln.lang.builtins_py" for name in _BUILTINS})


if TYPE_CHECKING:
    # What editors and type checkers see: the lazy names above, imported explicitly (`as` marks
    # them re-exported). Never executed, so `import kiln` stays cheap; tests/test_packaging.py
    # checks that this list and _LAZY name the same things.
    from kiln.compiler import set_device as set_device
    from kiln.graph.builder import Arg as Arg
    from kiln.graph.builder import GraphBuilder as GraphBuilder
    from kiln.graph.builder import Sequential as Sequential
    from kiln.graph.module import Module as Module
    from kiln.lang.builtins_py import abs as abs  # the kernel builtins shadow Python's on purpose
    from kiln.lang.builtins_py import acos as acos
    from kiln.lang.builtins_py import asin as asin
    from kiln.lang.builtins_py import atan as atan
    from kiln.lang.builtins_py import atan2 as atan2
    from kiln.lang.builtins_py import atomic_add as atomic_add
    from kiln.lang.builtins_py import atomic_and as atomic_and
    from kiln.lang.builtins_py import atomic_max as atomic_max
    from kiln.lang.builtins_py import atomic_min as atomic_min
    from kiln.lang.builtins_py import atomic_or as atomic_or
    from kiln.lang.builtins_py import atomic_sub as atomic_sub
    from kiln.lang.builtins_py import atomic_xor as atomic_xor
    from kiln.lang.builtins_py import cast as cast
    from kiln.lang.builtins_py import ceil as ceil
    from kiln.lang.builtins_py import cos as cos
    from kiln.lang.builtins_py import exp as exp
    from kiln.lang.builtins_py import floor as floor
    from kiln.lang.builtins_py import isinf as isinf
    from kiln.lang.builtins_py import isnan as isnan
    from kiln.lang.builtins_py import log as log
    from kiln.lang.builtins_py import max as max
    from kiln.lang.builtins_py import min as min
    from kiln.lang.builtins_py import ndrange as ndrange
    from kiln.lang.builtins_py import pow as pow
    from kiln.lang.builtins_py import round as round
    from kiln.lang.builtins_py import rsqrt as rsqrt
    from kiln.lang.builtins_py import select as select
    from kiln.lang.builtins_py import sin as sin
    from kiln.lang.builtins_py import sqrt as sqrt
    from kiln.lang.builtins_py import static as static
    from kiln.lang.builtins_py import tan as tan
    from kiln.lang.builtins_py import tanh as tanh
    from kiln.lang.kernel import Func as Func
    from kiln.lang.kernel import Kernel as Kernel
    from kiln.lang.kernel import func as func
    from kiln.lang.kernel import kernel as kernel
    from kiln.runtime.compiled import CompiledGraph as CompiledGraph
    from kiln.runtime.compiled import CompiledKernel as CompiledKernel
    from kiln.runtime.compiled import CompiledModule as CompiledModule
    from kiln.runtime.compiled import KernelRuntimeError as KernelRuntimeError
    from kiln.runtime.compiled import load as load
    from kiln.runtime.compiled import load_bytes as load_bytes
    from kiln.runtime.compiled import load_module as load_module
    from kiln.runtime.threads import get_num_threads as get_num_threads
    from kiln.runtime.threads import set_num_threads as set_num_threads


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
    "MissingExtraError", "TargetError", "bool_", "f16", "f32", "f64", "i8", "i16", "i32", "i64", "ndarray", "u8", "u16", "u32",
    "u64",
]
__all__ += list(_LAZY)
