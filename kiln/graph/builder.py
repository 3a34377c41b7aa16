"""Recording graphs: symbolic `Arg`s, `GraphBuilder`, named sequential sub-sequences.

Nothing is compiled while recording; `GraphBuilder.compile()` hands the recorded dispatches to
the compile driver (kiln.driver) as plain data. Type errors (an Arg of the wrong dtype for a kernel parameter, a constant out of
range) are raised at `dispatch` time, pointing at the user's call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.driver import CompileRequest, DispatchSpec, GraphArgSpec, GraphSpec, resolve_targets
from kiln.errors import ArgumentError, ArgumentValueError
from kiln.graph.linking import compile_and_link
from kiln.lang.fields import Template, TemplateArg
from kiln.lang.kernel import BoundKernel, Kernel
from kiln.runtime.cuda_driver import device_ordinal
from kiln.types import MatrixType, NdArrayType, ScalarType

if TYPE_CHECKING:
    from kiln.runtime.compiled import CompiledGraph

ShapeDim = int | str | None


class Arg:
    """A named, typed, symbolic graph argument.

    `shape` (ndarrays only) constrains the extents checked at run time: an int is a fixed size, a
    string a symbol shared by every argument that names it (x and y both of length "n"), None any.
    """

    def __init__(self, name: str, type: ScalarType | NdArrayType, shape: tuple[ShapeDim, ...] | None = None) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"kl.Arg: name must be an identifier, got {name!r}")
        if isinstance(type, NdArrayType):
            if not type.is_concrete:
                raise ValueError(f"kl.Arg {name!r}: graph arrays need a dtype and ndim, got {type!r}")
            if shape is not None:
                shape = tuple(shape)
                if type.element_shape and len(shape) == type.outer_ndim:
                    shape += type.element_shape  # shapes of vector arrays may leave out the element dims
                if len(shape) != type.ndim:
                    raise ValueError(f"kl.Arg {name!r}: shape {shape} has {len(shape)} dimensions, "
                                     f"the array has ndim={type.ndim}")
                for d in shape:
                    ok = d is None or (isinstance(d, str) and d.isidentifier()) or (
                        isinstance(d, int) and not isinstance(d, bool) and d >= 0)
                    if not ok:
                        raise ValueError(f"kl.Arg {name!r}: shape entries must be ints >= 0, symbol names or "
                                         f"None, got {d!r}")
        elif isinstance(type, ScalarType | MatrixType):
            if shape is not None:
                raise ValueError(f"kl.Arg {name!r}: a scalar or vector argument has no shape")
        else:
            raise TypeError(f"kl.Arg {name!r}: type must be a kiln scalar type, a vector/matrix type such as "
                            f"kl.vec2 or kl.ndarray(...), got {type!r}")
        self.name = name
        self.type = type
        self.shape = shape

    def __repr__(self) -> str:
        extra = f", shape={self.shape}" if self.shape is not None else ""
        return f"kl.Arg({self.name!r}, {self.type!r}{extra})"


@dataclass(frozen=True)
class RecordedDispatch:
    kernel: Any                              # kiln.lang.Kernel
    args: tuple[Arg | bool | int | float, ...]
    param_types: tuple[ScalarType | NdArrayType, ...]


class Sequential:
    """An ordered list of dispatches, recorded separately and appended to a graph as a unit."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.dispatches: list[RecordedDispatch] = []

    def dispatch(self, kernel: Any, *args: Arg | bool | float) -> None:
        """Record `kernel(*args)`; args are symbolic `Arg`s or Python scalar constants."""
        self.dispatches.append(_record(kernel, args))

    def append(self, seq: Sequential) -> None:
        if not isinstance(seq, Sequential):
            raise TypeError(f"append() takes a sequence made by create_sequential(), got {type(seq).__name__}")
        if seq is self:
            raise ValueError("cannot append a sequence to itself")
        self.dispatches.extend(seq.dispatches)


class GraphBuilder(Sequential):
    """Records kernel dispatches over symbolic Args; `compile()` bakes them into native code."""

    def create_sequential(self, name: str = "") -> Sequential:
        return Sequential(name)

    def args(self) -> list[Arg]:
        """The graph's arguments in order of first use."""
        seen: dict[str, Arg] = {}
        for d in self.dispatches:
            for a in d.args:
                if isinstance(a, Arg):
                    prev = seen.setdefault(a.name, a)
                    if prev is not a and (prev.type != a.type or prev.shape != a.shape):
                        raise ArgumentError(f"two different graph arguments are both named {a.name!r}: "
                                            f"{prev!r} and {a!r}")
        return list(seen.values())

    def check(self, name: str) -> None:
        """Raise now if this graph cannot be compiled under `name` (bad name, no dispatches,
        conflicting Arg definitions)."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"graph name must be an identifier, got {name!r}")
        if not self.dispatches:
            raise ValueError(f"graph {name!r} has no dispatches")
        self.args()

    def spec(self, name: str) -> GraphSpec:
        """The recorded graph as the driver's plain data."""
        args = {a.name: GraphArgSpec(a.name, a.type, a.shape) for a in self.args()}
        dispatches = tuple(DispatchSpec(d.kernel, d.param_types,
                                        tuple(args[a.name] if isinstance(a, Arg) else a for a in d.args))
                           for d in self.dispatches)
        return GraphSpec(name, tuple(args.values()), dispatches)

    def compile(self, target: str = "host", name: str = "main", targets: list[str] | None = None,
                cuda_archs: list[str] | None = None, dump: str | Sequence[str] | None = None,
                fast_math: bool = False, seed: int = 0, debug: bool = False,
                device: str | None = None) -> CompiledGraph:
        """Compile for the host CPU (or a portable baseline such as "x86-64-v2"); `targets`
        (e.g. ["cpu", "cuda"]), `cuda_archs` and `fast_math` as in `kl.Module` (docs/cuda.md);
        `dump` as in `kl.Module.compile`; `seed` starts the graph's random numbers (kl.random;
        `compiled.seed(n)` restarts them); `debug=True`: run-time checks (docs/debug.md);
        `device` ("cuda:N"): the GPU a CUDA-only graph (targets=["cuda"]) runs on."""
        self.check(name)
        gpu = 0 if device is None else device_ordinal(device)
        cpu_targets, cuda = resolve_targets(target, targets)
        request = CompileRequest((self.spec(name),), (), cpu_targets, cuda,
                                 None if cuda_archs is None else tuple(cuda_archs), fast_math=fast_math,
                                 random_seed=seed, debug=debug)
        return compile_and_link(request, dump, gpu).graphs[name]


def _record(kernel: Any, args: tuple[Any, ...]) -> RecordedDispatch:
    if isinstance(kernel, BoundKernel):   # a kernel method of a @kl.data_oriented object
        kernel, args = kernel.kernel, (kernel.obj, *args)
    if not isinstance(kernel, Kernel):
        raise TypeError(f"dispatch() expects a @kl.kernel, got {kernel!r}")
    annotations = kernel.annotations
    if len(args) != len(annotations):
        raise ArgumentError(f"dispatch of kernel {kernel.name!r}: it takes {len(annotations)} arguments "
                            f"({', '.join(kernel.param_names)}), got {len(args)}")
    types: list[ScalarType | NdArrayType] = []
    for pname, ann, a in zip(kernel.param_names, annotations, args):
        where = f"dispatch of kernel {kernel.name!r}, parameter {pname!r}"
        if isinstance(ann, Template):
            types.append(_template(where, a))
        elif isinstance(a, Arg):
            types.append(_match(where, ann, a))
        elif isinstance(ann, ScalarType):
            _check_const(where, ann, a)
            types.append(ann)
        elif isinstance(ann, MatrixType):  # a constant vector: a tuple, list or array of the shape
            if np.shape(a) != ann.shape:
                raise ArgumentError(f"{where}: expects {ann!r} (a kl.Arg or a constant of shape {ann.shape}), "
                                    f"got {a!r}")
            for x in np.ravel(np.asarray(a, dtype=object)).tolist():
                _check_const(where, ann.dtype, x)
            types.append(ann)
        else:
            raise ArgumentError(f"{where}: an ndarray parameter needs a kl.Arg, got {type(a).__name__} "
                                "(arrays are never baked into a graph)")
    return RecordedDispatch(kernel, tuple(args), tuple(types))


def _template(where: str, a: Any) -> ScalarType | NdArrayType | TemplateArg:
    """A template parameter in a graph: a compile-time value (compiled in), or an ndarray Arg
    (one variant per array type)."""
    if isinstance(a, Arg):
        if not isinstance(a.type, NdArrayType):
            raise ArgumentError(f"{where}: a kl.template() parameter needs a compile-time value (a field, a "
                                f"constant) or an ndarray Arg, got scalar {a!r}, known only at run time")
        return a.type
    return TemplateArg(a)


def _match(where: str, ann: ScalarType | NdArrayType, a: Arg) -> ScalarType | NdArrayType:
    t = a.type
    if isinstance(ann, ScalarType | MatrixType):
        if t != ann:
            raise ArgumentError(f"{where}: expects {ann!r}, got {a!r}")
        return ann
    if not isinstance(t, NdArrayType):
        raise ArgumentError(f"{where}: expects {ann!r}, got scalar {a!r}")
    if not ann.accepts(t):
        raise ArgumentError(f"{where}: expects {ann!r}, got {a!r}")
    return t


def _check_const(where: str, t: ScalarType, v: Any) -> None:
    if t.is_bool:
        ok = isinstance(v, (bool, np.bool_))
    elif t.is_int:
        ok = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
        if ok and not t.min <= int(v) <= t.max:
            raise ArgumentValueError(f"{where}: constant {v} is out of range for {t!r}")
    else:
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    if not ok:
        raise ArgumentError(f"{where}: expects {t!r}, got constant {v!r} of type {type(v).__name__}")
