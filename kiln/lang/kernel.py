"""`@kl.kernel` and `@kl.func` for the compiler: `Kernel` specialises to typed IR per parameter
types (direct calls on arrays are added above, by kiln.dispatch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiln.ir import nodes as ir
from kiln.lang.callables import Compilable, Func
from kiln.lang.function import CompileContext, FunctionCompiler, mangle
from kiln.types import NdArrayType, ScalarType

__all__ = ["Func", "Kernel", "func", "kernel"]


class Kernel(Compilable):
    """A `@kl.kernel`: the unit the compiler builds and the runtime launches."""

    kind = "kernel"

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__(fn)
        self._cache: dict[tuple[ScalarType | NdArrayType, ...], ir.KernelIR] = {}

    def specialize(self, param_types: tuple[ScalarType | NdArrayType, ...]) -> ir.KernelIR:
        """The typed IR of this kernel for concrete parameter types (cached per type tuple)."""
        types = self._concrete(tuple(param_types))
        kir = self._cache.get(types)
        if kir is None:
            ctx = CompileContext()
            name = ctx.unique_name(mangle(self.qualname, types))
            self._source_info()
            fir = FunctionCompiler(self, ctx, types, is_kernel=True).compile(name)
            kir = ir.KernelIR(fir, tuple(ctx.order), display_name=self.qualname)
            self._cache[types] = kir
        return kir

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Direct calls belong to the dispatcher above the compiler (kiln.dispatch.DirectKernel,
        # what `kl.kernel` makes); the front end's own kernels only specialise to IR.
        raise TypeError(f"kernel '{self.name}' was made by kiln.lang.kernel, which only compiles; "
                        "decorate it with @kl.kernel to call it directly")


def kernel(fn: Callable[..., Any]) -> Kernel:
    """Decorator: a kiln kernel for the compiler only (`kl.kernel`, kiln.dispatch, also makes it
    callable on arrays)."""
    return Kernel(fn)


def func(fn: Callable[..., Any]) -> Func:
    """Decorator: a helper function callable from kernels and other funcs."""
    return Func(fn)
