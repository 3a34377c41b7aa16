"""`@kl.kernel` and `@kl.func` for the compiler: `Kernel` specialises to typed IR per parameter
types (direct calls on arrays are added above, by kiln.dispatch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiln.ir import nodes as ir
from kiln.lang.callables import Compilable, Func
from kiln.lang.fields import Field
from kiln.lang.function import CompileContext, FunctionCompiler, mangle
from kiln.types import NdArrayType, ScalarType, default_fp

__all__ = ["BoundKernel", "Func", "Kernel", "func", "kernel"]


class Kernel(Compilable):
    """A `@kl.kernel`: the unit the compiler builds and the runtime launches."""

    kind = "kernel"

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__(fn)
        # keyed by (parameter types, default float type): kl.set_default_fp changes the IR
        self._cache: dict[tuple[Any, ...], ir.KernelIR] = {}
        self._hidden: dict[tuple[Any, ...], dict[str, Field]] = {}
        self._result: Field | None = None

    def specialize(self, param_types: tuple[ScalarType | NdArrayType, ...]) -> ir.KernelIR:
        """The typed IR of this kernel for concrete parameter types (cached per type tuple)."""
        types = self._concrete(tuple(param_types))
        key = (types, default_fp())
        kir = self._cache.get(key)
        if kir is None:
            ctx = CompileContext()
            name = ctx.unique_name(mangle(self.qualname, types))
            self._source_info()
            compiler = FunctionCompiler(self, ctx, types, is_kernel=True)
            fir = compiler.compile(name)
            kir = ir.KernelIR(fir, tuple(ctx.order), display_name=self.qualname)
            self._cache[key] = kir
            self._hidden[key] = compiler.field_params
        return kir

    @property
    def result_field(self) -> Field | None:
        """Where a kernel declared `-> type` stores its `return` value: a 0-d field of that type
        (made at first use), which direct calls read and return; in a compiled graph or module
        it is one of its fields (`<kernel>_result`). None for a kernel without a return type."""
        rt = self.return_type
        if rt is None:
            return None
        if self._result is None:
            self._result = Field(rt, ())
        return self._result

    def hidden_fields(self, param_types: tuple[Any, ...]) -> dict[str, Field]:
        """The fields the specialisation for `param_types` uses: hidden IR parameter name ("@x")
        -> Field, in parameter order (after the kernel's own parameters)."""
        self.specialize(param_types)
        return self._hidden[(self._concrete(tuple(param_types)), default_fp())]

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        # a kernel as a method of a @kl.data_oriented class: `sim.step(...)` passes `sim` as the
        # template parameter `self`
        if obj is None:
            return self
        return BoundKernel(self, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Direct calls belong to the dispatcher above the compiler (kiln.dispatch.DirectKernel,
        # what `kl.kernel` makes); the front end's own kernels only specialise to IR.
        raise TypeError(f"kernel '{self.name}' was made by kiln.lang.kernel, which only compiles; "
                        "decorate it with @kl.kernel to call it directly")


class BoundKernel:
    """`obj.kernel_method`: the kernel with `obj` as its first (template) argument."""

    def __init__(self, kernel: Kernel, obj: Any) -> None:
        self.kernel = kernel
        self.obj = obj
        self.name = kernel.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.kernel(self.obj, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<bound kiln kernel {self.kernel.qualname} of {self.obj!r}>"


def kernel(fn: Callable[..., Any]) -> Kernel:
    """Decorator: a kiln kernel for the compiler only (`kl.kernel`, kiln.dispatch, also makes it
    callable on arrays)."""
    return Kernel(fn)


def func(fn: Callable[..., Any]) -> Func:
    """Decorator: a helper function callable from kernels and other funcs."""
    return Func(fn)
