"""`kl.Module`: several graphs and standalone kernels compiled into one .kiln file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kiln.driver import CompileRequest, KernelSpec, resolve_targets
from kiln.errors import ArgumentError
from kiln.graph.builder import GraphBuilder
from kiln.graph.linking import compile_and_link
from kiln.lang.fields import Template, TemplateArg
from kiln.lang.kernel import BoundKernel, Kernel
from kiln.runtime.cuda_driver import device_ordinal
from kiln.types import NdArrayType, ScalarType

if TYPE_CHECKING:
    from kiln.runtime.compiled import CompiledModule


def _template(name: str, pname: str, value: Any) -> NdArrayType | TemplateArg:
    """The value given for a template parameter of an exported kernel: compiled in (a field, a
    constant), or a concrete ndarray type (an array argument after loading)."""
    if isinstance(value, Template):
        raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} is a kl.template(); pass its value "
                            "(a field or a constant) or a concrete kl.ndarray type")
    if isinstance(value, NdArrayType):
        if not value.is_concrete:
            raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} needs a concrete ndarray type")
        return value
    return TemplateArg(value)


class Module:
    """A set of named graphs and kernels that compile and save together.

    `target` is "host" (this machine's exact CPU) or a portable baseline ("x86-64",
    "x86-64-v2", "x86-64-v3", "x86-64-v4") so that one file serves a fleet.

    `targets` (default: the CPU target alone) lists what the file holds: "cpu" (built for
    `target`) and/or "cuda" (PTX plus cubins for `cuda_archs`, default sm_80 and sm_90; see
    docs/cuda.md). `fast_math=True` lets CUDA f32 math use libdevice's fast variants (lower
    accuracy, see the ulp table in docs/cuda.md). `compile()` returns the CPU module when "cpu" is among them, else a
    `kiln.runtime.cuda.CudaModule`.
    """

    def __init__(self, target: str = "host", targets: list[str] | tuple[str, ...] | None = None,
                 cuda_archs: list[str] | tuple[str, ...] | None = None, fast_math: bool = False,
                 seed: int = 0) -> None:
        self.target = target
        self.seed = seed            # initial seed of kl.random in the compiled module
        self.fast_math = fast_math
        self.targets = None if targets is None else tuple(targets)
        self.cuda_archs = None if cuda_archs is None else tuple(cuda_archs)
        self.graphs: dict[str, GraphBuilder] = {}
        self.kernels: dict[str, tuple[Any, tuple[ScalarType | NdArrayType, ...]]] = {}
        self._compiled: CompiledModule | None = None
        self._gpu = 0           # the GPU a CUDA-only `_compiled` runs on

    def add_graph(self, name: str, graph: GraphBuilder) -> None:
        if not isinstance(graph, GraphBuilder):
            raise TypeError(f"add_graph expects a kl.GraphBuilder, got {type(graph).__name__}")
        if name in self.graphs:
            raise ValueError(f"the module already has a graph named {name!r}")
        graph.check(name)
        self.graphs[name] = graph
        self._compiled = None

    def add_kernel(self, kernel: Any, *param_types: ScalarType | NdArrayType, name: str | None = None) -> None:
        """Add a kernel callable on its own after loading. Generic parameters (kl.ndarray() without
        dtype or ndim) need concrete `param_types`, one per kernel parameter; a kl.template()
        parameter takes its value there (a field or a constant, compiled in) or a concrete ndarray
        type. A kernel method of a @kl.data_oriented object (`m.add_kernel(sim.step)`) passes the
        object as `self`."""
        if isinstance(kernel, BoundKernel):   # a kernel method of a @kl.data_oriented object
            obj, kernel = kernel.obj, kernel.kernel
            param_types = (obj, *(param_types or kernel.annotations[1:]))  # type: ignore[assignment]
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
        types = tuple(_template(name, pname, t) if isinstance(ann, Template) else t
                      for pname, ann, t in zip(kernel.param_names, kernel.annotations, types))
        for pname, ann, t in zip(kernel.param_names, kernel.annotations, types):
            if isinstance(ann, Template):
                continue
            if isinstance(t, NdArrayType) and not t.is_concrete:
                raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} is generic ({t!r}); pass concrete "
                                    "types: m.add_kernel(k, kl.ndarray(kl.f32, ndim=1), ...)")
            if isinstance(ann, ScalarType) and t != ann:
                raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} is {ann!r}, got {t!r}")
            if isinstance(ann, NdArrayType) and (not isinstance(t, NdArrayType) or not ann.accepts(t)):
                raise ArgumentError(f"add_kernel {name!r}: parameter {pname!r} is {ann!r}, got {t!r}")
        self.kernels[name] = (kernel, types)
        self._compiled = None

    def compile(self, dump: str | Sequence[str] | None = None, debug: bool = False,
                device: str | None = None) -> CompiledModule:
        """Compile everything to native code and link it into this process. `dump` ("ir,llvm",
        or a list of "ir", "llvm", "asm", "ptx") writes those stages to KILN_DUMP_DIR
        (docs/architecture.md); it replaces KILN_DUMP and always compiles afresh. `debug=True`
        compiles afresh with run-time checks (docs/debug.md). `device` ("cuda:N"): the GPU a
        CUDA-only module (targets=["cuda"]) runs on."""
        gpu = 0 if device is None else device_ordinal(device)
        if self._compiled is None or dump is not None or debug or gpu != self._gpu:
            self._compiled = compile_and_link(self.compile_request(debug), dump, gpu)
            self._gpu = gpu
        assert self._compiled is not None
        return self._compiled

    def compile_request(self, debug: bool = False) -> CompileRequest:
        """This module as the driver's plain-data input."""
        cpu_targets, cuda = resolve_targets(self.target, self.targets)
        graphs = tuple(builder.spec(name) for name, builder in self.graphs.items())
        kernels = tuple(KernelSpec(name, k, types) for name, (k, types) in self.kernels.items())
        return CompileRequest(graphs, kernels, cpu_targets, cuda, self.cuda_archs, fast_math=self.fast_math,
                              random_seed=self.seed, debug=debug)

    def save(self, path: str | os.PathLike[str], sign_key: Any = None) -> None:
        """Compile (once) and write the .kiln file, signed with `sign_key` if given (kiln.signing)."""
        compiled = self.compile()
        compiled.save(path, sign_key=sign_key)
