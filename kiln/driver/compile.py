"""The compile driver: a `CompileRequest` (plain data) in, a .kiln file's bytes out.

`compile_program` reads as the list of stages every compilation goes through. The result is
always the serialized file, and the runtime links it from those bytes, so a graph run right after
`compile()` executes exactly what a later `kiln.load()` of the saved file executes.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from kiln import config, passes
from kiln._extras import install_command, require
from kiln._version import KILN_VERSION
from kiln.abi import HIDDEN_PREFIX, RNG_PARAM, element_params, is_field_param, layout_params
from kiln.artifact import container
from kiln.artifact.manifest import (
    Binding,
    CudaSection,
    DispatchInfo,
    GraphInfo,
    KernelInfo,
    Manifest,
    ParamInfo,
    TargetInfo,
)
from kiln.driver import cache, fields
from kiln.driver.pipeline import CompileOptions, Pipeline, Progress
from kiln.driver.request import CompileRequest, GraphArgSpec, GraphSpec, ParamTypes
from kiln.errors import ArgumentValueError, TargetError
from kiln.ir.analysis import array_access
from kiln.ir.graph import ArgBinding, Dispatch, GraphIR
from kiln.ir.nodes import KernelIR
from kiln.ir.printer import format_graph
from kiln.lang.fields import TemplateArg
from kiln.types import MatrixType, NdArrayType, ScalarType, u32, value_range


def compile_program(request: CompileRequest, options: CompileOptions | None = None) -> bytes:
    """Compile every graph and kernel of `request` for its targets; return the file's bytes."""
    pipe = Pipeline(_with_debug(options or CompileOptions.from_config(config.current()), request))
    key = None
    if cache.enabled_for(request, dumping=bool(pipe.options.dump)):
        with pipe.stage("disk cache lookup"):
            key = cache.request_key(request)
            hit = None if key is None else cache.load(key)
        if hit is not None:
            pipe.report()
            return hit
    pipe.kernels_total = len({(id(k.kernel), k.param_types) for k in request.kernels} |
                             {(id(d.kernel), d.param_types) for g in request.graphs for d in g.dispatches})
    with Progress(pipe, _unit_name(request)):
        data = _compile(pipe, request)
    if key is not None:
        with pipe.stage("disk cache store"):
            cache.store(key, data)
    pipe.report()
    return data


def _compile(pipe: Pipeline, request: CompileRequest) -> bytes:
    """Every stage of a compile (the cache aside)."""
    # a runtime-only install gets a MissingExtraError naming the pip command, before any work (a
    # disk-cache hit above needs no compiler)
    require("llvmlite", extra="compile", purpose="compiling kernels and graphs")
    request = fields.expand_request(request)   # hidden graph arguments for the fields used
    unit = _unit_name(request)
    # 1. Front end and IR passes, once per distinct (kernel, parameter types), whatever uses it.
    lowering = _Lowering(pipe)
    # 2. Graph IR: every dispatch bound to graph params or baked-in constants.
    graphs = [_graph_ir(g, lowering) for g in request.graphs]
    for g in graphs:
        pipe.dump("ir", g.name, "graph", functools.partial(format_graph, g))
    exported = {k.name: lowering.kernel_ir(k.kernel, k.param_types).kernel.name for k in request.kernels}
    kernels = lowering.unique_kernels()
    # 3. Native code: one object for all kernels and graph entry points (CPU), PTX + cubins (CUDA).
    out = _NativeOutputs(kernels, graphs)
    abi = _abi_params(request, graphs, kernels, lowering)
    for cpu_target in _cpu_targets(request.cpu_targets):
        _build_cpu(pipe, unit, cpu_target, kernels, graphs, out, abi)
    cuda_doc = (_build_cuda(pipe, unit, kernels, request.cuda_archs, out, fast_math=request.fast_math, abi=abi)
                if request.cuda else None)
    # 4. Manifest + container.
    with pipe.stage("pack"):
        doc = _manifest(request, graphs, kernels, lowering, exported, out, abi).to_json()
        doc["provenance"] = _provenance(request, pipe.options.debug, out, lowering)
        if cuda_doc is not None:
            doc["cuda"] = cuda_doc      # optional launch data (docs/format.md, "CUDA targets")
        return container.pack(doc, out.blobs)


def lower_kernel(kernel: Any, param_types: ParamTypes, options: CompileOptions | None = None) -> KernelIR:
    """Front end and IR passes for one kernel specialisation (kiln.driver.pipeline.IR_PASSES)."""
    pipe = Pipeline(options or CompileOptions.from_config(config.current()))
    return pipe.lower(kernel.qualname, lambda: kernel.specialize(param_types))


def _with_debug(options: CompileOptions, request: CompileRequest) -> CompileOptions:
    """`options`, in debug mode when the request asks for it (compile(debug=True))."""
    return dataclasses.replace(options, debug=True) if request.debug and not options.debug else options


def _kernel_debug(kernel: Any) -> bool:
    """Whether a kernel was declared `@kl.kernel(debug=True)`."""
    return bool(getattr(kernel, "debug", False))


class _Lowering:
    """The lowered IR of each (kernel, types) compiled so far; kernels and funcs that share a name
    but differ (closures of one factory) get distinct names."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.lowered: dict[tuple[int, ParamTypes], KernelIR] = {}
        self._access: dict[str, dict[str, str]] = {}
        #: kernel IR name -> SHA-256 hex of the kernel's Python source (the manifest's provenance)
        self.sources: dict[str, str] = {}

    def access(self, kir: KernelIR) -> dict[str, str]:
        """`array_access` of a lowered kernel, computed once per kernel (a graph used to pay a
        walk of the kernel's IR per dispatch: a quarter of a 2000-dispatch compile)."""
        acc = self._access.get(kir.kernel.name)
        if acc is None:
            acc = self._access[kir.kernel.name] = array_access(kir)
        return acc

    def kernel_ir(self, kernel: Any, types: ParamTypes) -> KernelIR:
        key = (id(kernel), types)
        if key not in self.lowered:
            kir = self.pipe.lower(kernel.qualname, lambda: kernel.specialize(types), _kernel_debug(kernel))
            self.lowered[key] = passes.make_names_unique([*self.lowered.values(), kir])[-1]
            self.sources[self.lowered[key].kernel.name] = hashlib.sha256(kernel.source.encode()).hexdigest()
        return self.lowered[key]

    def by_name(self) -> dict[str, KernelIR]:
        return {k.kernel.name: k for k in self.lowered.values()}

    def unique_kernels(self) -> list[KernelIR]:
        """Each compiled kernel once (several (kernel, types) keys may lower to the same IR)."""
        return list(self.by_name().values())


def _graph_ir(g: GraphSpec, lowering: _Lowering) -> GraphIR:
    dispatches = []
    for d in g.dispatches:
        kir = lowering.kernel_ir(d.kernel, d.param_types)
        bindings = fields.dispatch_bindings(d, _const)
        dispatches.append(Dispatch(kir.kernel.name, bindings + _rng_binding(kir, len(bindings))))
    return GraphIR(g.name, tuple((name, t) for name, t, _ in _flat_args(_graph_args(g.args, dispatches))),
                   tuple(dispatches))


#: the graph parameter that carries the module's random-number state to kernels that draw
_RNG_ARG = GraphArgSpec(RNG_PARAM, NdArrayType(u32, 1), (4,))


def _rng_binding(kir: KernelIR, n_user: int) -> tuple[ArgBinding, ...]:
    """A kernel that draws random numbers has one hidden last parameter (kiln.lang.random):
    bound to the graph's own hidden parameter of the same name."""
    params = kir.kernel.params
    return (ArgBinding(RNG_PARAM),) if len(params) == n_user + 1 and params[-1].name == RNG_PARAM else ()


def _graph_args(args: Sequence[GraphArgSpec], dispatches: Sequence[Dispatch]) -> tuple[GraphArgSpec, ...]:
    """The graph's parameters: the recorded args, plus the random-number state (passed by the
    runtime) when some dispatch draws."""
    draws = any(isinstance(b, ArgBinding) and b.name == RNG_PARAM for d in dispatches for b in d.bindings)
    return (*args, _RNG_ARG) if draws else tuple(args)


class _NativeOutputs:
    """What code generation produces for the manifest: targets, blobs and entry symbols."""

    def __init__(self, kernels: Sequence[KernelIR], graphs: Sequence[GraphIR]) -> None:
        self.targets: list[TargetInfo] = []
        self.blobs: dict[str, bytes] = {}
        self.kernel_entries: dict[str, dict[str, str]] = {k.kernel.name: {} for k in kernels}
        self.graph_entries: dict[str, dict[str, str]] = {g.name: {} for g in graphs}


def _cpu_targets(names: Sequence[str]) -> list[Any]:
    """The TargetSpec of each CPU target name; a file holds at most one per architecture."""
    if not names:
        return []
    from kiln import codegen  # lazy, as in _build_cpu

    specs: list[Any] = []
    seen: dict[str, str] = {}
    for name in names:
        spec = codegen.named_target(name)       # TargetError for an unknown name
        if spec.arch in seen:
            raise TargetError(f"targets {seen[spec.arch]!r} and {name!r} are both {spec.arch} targets; "
                              "a file holds one CPU target per architecture")
        seen[spec.arch] = name
        specs.append(spec)
    return specs


def cpu_target_names(arch: str) -> tuple[str, str]:
    """(manifest target name, object blob name) of the CPU target for `arch`: x86-64 keeps the
    names of files written before aarch64 existed ("cpu", "cpu.o"); others are "cpu.<arch>"."""
    if arch == "x86_64":
        return "cpu", "cpu.o"
    return f"cpu.{arch}", f"cpu.{arch}.o"


def _abi_params(request: CompileRequest, graphs: Sequence[GraphIR], kernels: Sequence[KernelIR],
                lowering: _Lowering) -> dict[tuple[str, str], tuple[ParamInfo, ...]]:
    """What the manifest will say about each entry's parameters, for the object's ABI
    descriptors (kiln.runtime.abi_digest): the same functions build both."""
    by_name = lowering.by_name()
    user_types = {kir.kernel.name: types for (_, types), kir in lowering.lowered.items()}
    abi = {("kernel", k.kernel.name): _kernel_info(k, lowering.access(k), {}, user_types.get(k.kernel.name, ())).params
           for k in kernels}
    abi.update({("graph", g.name): _graph_param_infos(_graph_args(spec.args, g.dispatches), g, by_name,
                                                      lowering.access)
                for spec, g in zip(request.graphs, graphs)})
    return abi


def _build_cpu(pipe: Pipeline, unit: str, target: Any, kernels: Sequence[KernelIR],
               graphs: Sequence[GraphIR], out: _NativeOutputs,
               abi: dict[tuple[str, str], tuple[ParamInfo, ...]] | None = None) -> None:
    """One x86-64/aarch64 ELF object for every kernel and graph entry point."""
    # lazy: LLVM (llvmlite) is imported by the first compile, not when kernels or graphs are defined
    from kiln import codegen

    obj = codegen.build_object(kernels, graphs, target, stage=pipe.stage, want_asm="asm" in pipe.options.dump,
                               abi=abi, want_ir="llvm" in pipe.options.dump)
    tname, blob_name = cpu_target_names(target.arch)
    prefix = "" if tname == "cpu" else f"{tname}."     # dump names stay short for the usual x86-64 file
    pipe.dump("llvm", unit, f"{prefix}llvm_emit", lambda: obj.llvm_ir_unoptimised)
    pipe.dump("llvm", unit, f"{prefix}llvm_optimise", lambda: obj.llvm_ir)
    pipe.dump("asm", unit, f"{prefix}object_emit", lambda: obj.asm)
    out.targets.append(TargetInfo(tname, "cpu", target.arch, target.triple, target.cpu, target.features, (blob_name,)))
    out.blobs[blob_name] = obj.blob
    for k in kernels:
        out.kernel_entries[k.kernel.name][tname] = obj.kernel_symbols[k.kernel.name]
    for g in graphs:
        out.graph_entries[g.name][tname] = obj.graph_symbols[g.name]


def _build_cuda(pipe: Pipeline, unit: str, kernels: Sequence[KernelIR], archs: Sequence[str] | None,
                out: _NativeOutputs, *, fast_math: bool = False,
                abi: dict[tuple[str, str], tuple[ParamInfo, ...]] | None = None) -> dict[str, Any]:
    """PTX for every kernel, cubins for `archs` when nvJitLink is importable (kiln.codegen.nvptx);
    returns the manifest's CUDA launch section."""
    # lazy, as above; modules rather than names because tests replace their functions
    from kiln.codegen import cuda_link, nvptx

    with pipe.stage("ptx"):
        ptx = nvptx.build_ptx(kernels, fast_math=fast_math, abi=abi)
    pipe.dump("ptx", unit, "ptx", lambda: ptx.ptx)
    archs = tuple(nvptx.DEFAULT_CUBIN_ARCHS if archs is None else archs)
    names = ["cuda.ptx"]
    out.blobs["cuda.ptx"] = ptx.ptx.encode()
    why = cuda_link.nvjitlink_available() if archs else "no cubin architectures were asked for"
    built: list[str] = []
    if why is None:
        for arch in archs:
            with pipe.stage("cubin link"):
                out.blobs[f"cuda.{arch}.cubin"] = cuda_link.link_cubin(ptx.ptx, arch)
            names.append(f"cuda.{arch}.cubin")
            built.append(arch)
    out.targets.append(TargetInfo("cuda", "cuda", "nvptx64", "nvptx64-nvidia-cuda", ptx.arch, nvptx.DEFAULT_PTX_FEATURES,
                                  tuple(names)))
    for k in kernels:
        out.kernel_entries[k.kernel.name]["cuda"] = ptx.launches[k.kernel.name][0].entry
    if why is not None and archs:
        warnings.warn(f"kiln: the cuda target holds PTX only (no cubins for {', '.join(archs)}): {why}. "
                      f"Loading it costs a driver JIT (~0.1 s); {install_command('cuda')} to link cubins "
                      "ahead of time.", stacklevel=5)  # the caller of GraphBuilder/Module.compile
    section = CudaSection(
        block_size=nvptx.BLOCK_SIZE, ptx="cuda.ptx", cubins={arch: f"cuda.{arch}.cubin" for arch in built},
        launches={name: tuple(ls) for name, ls in ptx.launches.items()},
        cubins_missing=why, nvjitlink=cuda_link.nvjitlink_version() if why is None else None, math=ptx.math)
    return section.to_json()    # the manifest's typed `cuda` section (kiln.artifact.manifest)


def _manifest(request: CompileRequest, graphs: Sequence[GraphIR], kernels: Sequence[KernelIR],
              lowering: _Lowering, exported: dict[str, str], out: _NativeOutputs,
              abi: dict[tuple[str, str], tuple[ParamInfo, ...]]) -> Manifest:
    """The manifest; its parameters are exactly the ones the object's ABI descriptors hash."""
    return Manifest(
        format_version=(container.FORMAT_MAJOR, container.FORMAT_MINOR),
        kiln_version=KILN_VERSION,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        targets=tuple(out.targets),
        kernels={k.kernel.name: KernelInfo(k.kernel.name, k.display_name or k.kernel.name,
                                           abi["kernel", k.kernel.name], out.kernel_entries[k.kernel.name])
                 for k in kernels},
        graphs={g.name: GraphInfo(g.name, abi["graph", g.name], _dispatch_infos(g.dispatches),
                                  out.graph_entries[g.name]) for g in graphs},
        exported_kernels=exported,
        fields=fields.field_infos(request, out.blobs),
        random_seed=request.random_seed,
    )


def _provenance(request: CompileRequest, debug: bool, out: _NativeOutputs, lowering: _Lowering) -> dict[str, Any]:
    """What built the file (docs/format.md "Provenance"; `kiln inspect` shows it): kiln's
    version, the targets, the flags that change the code, and a hash of each kernel's source."""
    flags: dict[str, Any] = {"debug": debug, "fast_math": request.fast_math}
    if request.cuda:
        flags["cuda_archs"] = ",".join(request.cuda_archs or ())
    return {"kiln_version": KILN_VERSION, "target": ",".join(t.name for t in out.targets), "flags": flags,
            "sources": {k.kernel.name: lowering.sources[k.kernel.name] for k in lowering.unique_kernels()}}


def _dispatch_infos(dispatches: Sequence[Dispatch]) -> tuple[DispatchInfo, ...]:
    """The manifest entry of each dispatch, built once per distinct dispatch."""
    made: dict[Dispatch, DispatchInfo] = {}
    out = []
    for d in dispatches:
        info = made.get(d)
        if info is None:
            info = made[d] = _dispatch_info(d)
        out.append(info)
    return tuple(out)


def _dispatch_info(d: Dispatch) -> DispatchInfo:
    return DispatchInfo(d.kernel, tuple(
        (Binding("field", arg=b.name.removeprefix(HIDDEN_PREFIX))
         if is_field_param(b.name)
         else Binding("arg", arg=b.name)) if isinstance(b, ArgBinding)
        else Binding("const", value=b.value, dtype=b.type.name) for b in d.bindings))


def _unit_name(request: CompileRequest) -> str:
    """The name of the dump files of module-wide stages (LLVM IR, assembly, PTX)."""
    names = [g.name for g in request.graphs] + [k.name for k in request.kernels]
    return "+".join(names) or "module"


def _const(value: Any, t: ScalarType) -> bool | int | float:
    if t.is_bool:
        return bool(value)
    if t.is_int:
        return int(value)
    f = float(value)
    lo, hi = value_range(t)
    if not lo <= f <= hi:     # the binder's rule for the same value given at run time; also inf/nan
        raise ArgumentValueError(f"constant {value!r} is out of range for {t.name} (a .kiln manifest holds "
                                 "finite constants: pass it as a graph argument instead)")
    return f


def _kernel_info(kir: KernelIR, access: dict[str, str], entries: dict[str, str], user_types: ParamTypes) -> KernelInfo:
    layout = layout_params([(p.name, p.type) for p in kir.kernel.params])
    # the front end lays a vector argument out as one scalar param per element
    shapes = [_element_shape(t) for t in user_types if not isinstance(t, TemplateArg)   # no IR param
              for _ in range(t.size if isinstance(t, MatrixType) else 1)]
    shapes += [()] * (len(layout) - len(shapes))
    params = tuple(ParamInfo(lay, access.get(lay.name, "none"), None, es) for lay, es in zip(layout, shapes))
    return KernelInfo(kir.kernel.name, kir.display_name or kir.kernel.name, params, entries)


def _graph_param_infos(args: Sequence[GraphArgSpec], g: GraphIR, by_ir: dict[str, KernelIR],
                       access_of: Callable[[KernelIR], dict[str, str]]) -> tuple[ParamInfo, ...]:
    modes: dict[str, set[str]] = {a.name: set() for a in args}
    seen: set[Dispatch] = set()
    for d in g.dispatches:
        if d in seen:           # a repeated dispatch adds nothing (graphs repeat substeps)
            continue
        seen.add(d)
        kir = by_ir[d.kernel]
        access = access_of(kir)
        for p, b in zip(kir.kernel.params, d.bindings):
            if isinstance(b, ArgBinding) and p.name in access:
                modes[b.name].update({"readwrite": ("read", "write")}.get(access[p.name], (access[p.name],)))
    flat = _flat_args(args)
    layout = layout_params([(name, t) for name, t, _ in flat])
    shapes = {a.name: a.shape for a in args}
    out = []
    for (name, _, es), lay in zip(flat, layout):
        if lay.kind != "ndarray":
            out.append(ParamInfo(lay, "read", None, es))
            continue
        m = modes[name] - {"none"}
        acc = "readwrite" if m == {"read", "write"} else next(iter(m)) if m else "none"
        out.append(ParamInfo(lay, acc, shapes[name], es))
    return tuple(out)


def _element_shape(t: object) -> tuple[int, ...]:
    if isinstance(t, MatrixType):
        return t.shape
    return t.element_shape if isinstance(t, NdArrayType) else ()


def _flat_args(args: Sequence[GraphArgSpec]) -> list[tuple[str, ScalarType | NdArrayType, tuple[int, ...]]]:
    """Graph arguments as the native block sees them: a vector argument is one scalar parameter
    per element (kiln.abi.element_params)."""
    out: list[tuple[str, ScalarType | NdArrayType, tuple[int, ...]]] = []
    for a in args:
        if isinstance(a.type, MatrixType):
            out += [(n, a.type.dtype, a.type.shape) for n in element_params(a.name, a.type.size)]
        else:
            out.append((a.name, a.type, _element_shape(a.type)))
    return out
