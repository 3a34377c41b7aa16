"""`kl.Module`: several graphs and standalone kernels compiled into one .kiln file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kiln.errors import ArgumentError
from kiln.graph.builder import GraphBuilder
from kiln.types import NdArrayType, ScalarType

if TYPE_CHECKING:
    from kiln.runtime.compiled import CompiledModule


class Module:
    """A set of named graphs and kernels that compile and save together.

    `target` is "host" (this machine's exact CPU) or a portable baseline ("x86-64",
    "x86-64-v2", "x86-64-v3", "x86-64-v4") so that one file serves a fleet.

    `targets` (default: the CPU target alone) lists what the file holds: "cpu" (built for
    `target`) and/or "cuda" (PTX plus cubins for `cuda_archs`, default sm_80 and sm_90; see
    docs/cuda.md). `compile()` returns the CPU module when "cpu" is among them, else a
    `kiln.runtime.cuda.CudaModule`.
    """

    def __init__(self, target: str = "host", targets: list[str] | tuple[str, ...] | None = None,
                 cuda_archs: list[str] | tuple[str, ...] | None = None) -> None:
        self.target = target
        self.targets = None if targets is None else tuple(targets)
        self.cuda_archs = None if cuda_archs is None else tuple(cuda_archs)
        self.graphs: dict[str, GraphBuilder] = {}
        self.kernels: dict[str, tuple[Any, tuple[ScalarType | NdArrayType, ...]]] = {}
        self._compiled: CompiledModule | None = None

    def add_graph(self, name: str, graph: GraphBuilder) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"graph name must be an identifier, got {name!r}")
        if not isinstance(graph, GraphBuilder):
            raise TypeError(f"add_graph expects a kl.GraphBuilder, got {type(graph).__name__}")
        if name in self.graphs:
            raise ValueError(f"the module already has a graph named {name!r}")
        if not graph.dispatches:
            raise ValueError(f"graph {name!r} has no dispatches")
        graph.args()  # raises now on conflicting Arg definitions
        self.graphs[name] = graph
        self._compiled = None

    def add_kernel(self, kernel: Any, *param_types: ScalarType | NdArrayType, name: str | None = None) -> None:
        """Add a kernel callable on its own after loading. Generic parameters (kl.ndarray() without
        dtype or ndim) need concrete `param_types`, one per kernel parameter."""
        from kiln.lang import Kernel
        if not isinstance(kernel, Kernel):
            raise TypeError(f"add_kernel expects a @kl.kernel, got {kernel!r}")
        name = name or kernel.name
        if not name.isidentifier():
            raise ValueError(f"kernel name must be an identifier, got {name!r}")
        if name in self.kernels:
            raise ValueError(f"the module already has a kernel named {name!r}")
        types = tuple(param_types) if param_types else tuple(kernel.annotations)
        if len(types) != len(kernel.annotations):
            raise ArgumentError(f"add_kernel {name!r}: expected {len(kernel.annotations)} parameter types, "
                                f"got {len(types)}")
        for pname, ann, t in zip(kernel.param_names, kernel.annotations, types):
            if isinstance(t, NdArrayType) and not t.is_concrete:
                raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} is generic ({t!r}); pass concrete "
                                    "types: m.add_kernel(k, kl.ndarray(kl.f32, ndim=1), ...)")
            if isinstance(ann, ScalarType) and t != ann:
                raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} is {ann!r}, got {t!r}")
            if isinstance(ann, NdArrayType) and (not isinstance(t, NdArrayType) or (
                    ann.dtype not in (None, t.dtype)) or ann.ndim not in (None, t.ndim)):
                raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} is {ann!r}, got {t!r}")
        self.kernels[name] = (kernel, types)
        self._compiled = None

    def compile(self) -> CompiledModule:
        """Compile everything to native code and link it into this process."""
        if self._compiled is None:
            from kiln.compiler import _split_targets, compile_module
            from kiln.runtime.compiled import load_bytes
            if _split_targets(self)[0] is None:      # CUDA only: nothing to link on the CPU
                from kiln.runtime.cuda import load_bytes as load_cuda_bytes
                self._compiled = load_cuda_bytes(compile_module(self), source="<compiled module>")  # type: ignore[assignment]
            else:
                self._compiled = load_bytes(compile_module(self), source="<compiled module>")
        return self._compiled

    def save(self, path: str | os.PathLike[str], sign_key: Any = None) -> None:
        """Compile (once) and write the .kiln file, signed with `sign_key` if given (kiln.signing)."""
        compiled = self.compile()
        if sign_key is None:
            compiled.save(path)
        else:
            from kiln.artifact.container import write_bytes
            from kiln.signing import sign_bytes
            write_bytes(path, sign_bytes(compiled.to_bytes(), sign_key))
