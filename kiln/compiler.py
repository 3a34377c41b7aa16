"""The compiler driver: recorded graphs and kernels in, a .kiln file's bytes out.

`compile_module` reads as the list of stages every compilation goes through; each stage is a
plain function from one representation to the next, tested on its own. The result is always the
serialized file, and the runtime links it from those bytes, so a graph run right after
`compile()` executes exactly what a later `kiln.load()` of the saved file executes.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kiln import passes
from kiln.abi import layout_params
from kiln.artifact import container
from kiln.artifact.manifest import (
    Binding,
    DispatchInfo,
    GraphInfo,
    KernelInfo,
    Manifest,
    ParamInfo,
    TargetInfo,
)
from kiln.ir.analysis import array_access
from kiln.ir.graph import ArgBinding, ConstBinding, Dispatch, GraphIR
from kiln.ir.nodes import KernelIR
from kiln.ir.verify import verify
from kiln.types import NdArrayType, ScalarType

if TYPE_CHECKING:
    from kiln.graph.module import Module

KILN_VERSION = "0.1.0"

ParamTypes = tuple[ScalarType | NdArrayType, ...]


def lower_kernel(kernel: Any, param_types: ParamTypes) -> KernelIR:
    """Front end and IR passes for one kernel specialisation."""
    kir = kernel.specialize(param_types)    # Python ast -> typed IR (kiln.lang)
    kir = passes.lower_aug_stores(kir)      # `x[i] += v`: atomic inside parallel loops, plain elsewhere
    kir = passes.fold_constants(kir)        # fold literal arithmetic with kiln's own semantics
    verify(kir, lowered=True)               # cheap structural check before code generation
    return kir


def compile_module(module: Module) -> bytes:
    """Compile every graph and kernel of `module` for its targets (its CPU target unless
    `module.targets` says otherwise, e.g. ["cpu", "cuda"]); return the file's bytes."""
    from kiln._extras import require
    require("llvmlite", extra="compile", purpose="compiling kernels and graphs")  # before codegen imports it
    from kiln.codegen import build_object
    from kiln.codegen.target import named_target

    # 1. Specialise each distinct (kernel, parameter types) once, whatever uses it; kernels and
    #    funcs that share a name but differ (closures of one factory) get distinct names.
    lowered: dict[tuple[int, ParamTypes], KernelIR] = {}

    def kernel_ir(kernel: Any, types: ParamTypes) -> KernelIR:
        key = (id(kernel), types)
        if key not in lowered:
            kir = lower_kernel(kernel, types)
            lowered[key] = passes.make_names_unique([*lowered.values(), kir])[-1]
        return lowered[key]

    # 2. Graph IR: every dispatch bound to graph params or baked-in constants.
    graphs: list[GraphIR] = []
    graph_params: dict[str, list[ParamInfo]] = {}
    for gname, builder in module.graphs.items():
        args = builder.args()
        dispatches = []
        for d in builder.dispatches:
            kir = kernel_ir(d.kernel, d.param_types)
            bindings = tuple(ArgBinding(a.name) if hasattr(a, "name") else ConstBinding(_const(a, t), t)  # type: ignore[arg-type]
                             for a, t in zip(d.args, d.param_types))
            dispatches.append(Dispatch(kir.kernel.name, bindings))
        graphs.append(GraphIR(gname, tuple((a.name, a.type) for a in args), tuple(dispatches)))
        graph_params[gname] = _graph_param_infos(args, graphs[-1], lowered)
    exported = {name: kernel_ir(k, types).kernel.name for name, (k, types) in module.kernels.items()}

    # 3. Native code: one object for all kernels and graph entry points (CPU), PTX + cubins (CUDA).
    kernels = _unique_kernels(list(lowered.values()))
    cpu_target, want_cuda = _split_targets(module)
    tinfos: list[TargetInfo] = []
    blobs: dict[str, bytes] = {}
    kentries: dict[str, dict[str, str]] = {k.kernel.name: {} for k in kernels}
    gentries: dict[str, dict[str, str]] = {g.name: {} for g in graphs}
    if cpu_target is not None:
        target = named_target(cpu_target)
        obj = build_object(kernels, graphs, target)
        tinfos.append(TargetInfo("cpu", "cpu", target.arch, target.triple, target.cpu, target.features, ("cpu.o",)))
        blobs["cpu.o"] = obj.blob
        for k in kernels:
            kentries[k.kernel.name]["cpu"] = obj.kernel_symbols[k.kernel.name]
        for g in graphs:
            gentries[g.name]["cpu"] = obj.graph_symbols[g.name]
    cuda_doc = None
    if want_cuda:
        cuda_doc = _build_cuda(kernels, getattr(module, "cuda_archs", None), tinfos, blobs, kentries)

    # 4. Manifest + container.
    manifest = Manifest(
        format_version=(container.FORMAT_MAJOR, container.FORMAT_MINOR),
        kiln_version=KILN_VERSION,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        targets=tuple(tinfos),
        kernels={k.kernel.name: _kernel_info(k, kentries[k.kernel.name]) for k in kernels},
        graphs={g.name: GraphInfo(g.name, tuple(graph_params[g.name]), tuple(
            DispatchInfo(d.kernel, tuple(Binding("arg", arg=b.name) if isinstance(b, ArgBinding)
                                         else Binding("const", value=b.value, dtype=b.type.name)
                                         for b in d.bindings)) for d in g.dispatches),
                                  gentries[g.name]) for g in graphs},
        exported_kernels=exported,
    )
    doc = manifest.to_json()
    if cuda_doc is not None:
        doc["cuda"] = cuda_doc      # optional launch data (docs/format.md, "CUDA targets")
    return container.pack(doc, blobs)


def _split_targets(module: Module) -> tuple[str | None, bool]:
    """(CPU target name or None, whether to build CUDA) from `module.targets` (None: CPU only)."""
    from kiln.errors import TargetError

    targets = getattr(module, "targets", None)
    if targets is None:
        return module.target, False
    cpu: str | None = None
    cuda = False
    for t in targets:
        if t == "cuda":
            cuda = True
        elif t == "cpu":
            cpu = module.target
        elif isinstance(t, str) and cpu is None:
            cpu = t                       # a CPU target name ("host", "x86-64-v2", ...)
        else:
            raise TargetError(f"unknown or repeated target {t!r} in targets={list(targets)!r}; "
                              "use 'cpu' (or a CPU target name) and/or 'cuda'")
    if cpu is None and not cuda:
        raise TargetError("targets=[] names no target")
    return cpu, cuda


def _build_cuda(kernels: Sequence[KernelIR], archs: Sequence[str] | None, tinfos: list[TargetInfo],
                blobs: dict[str, bytes], kentries: dict[str, dict[str, str]]) -> dict[str, Any]:
    """PTX for every kernel, cubins for `archs` when nvJitLink is importable (kiln.codegen.nvptx)."""
    from kiln.codegen.cuda_link import link_cubin, nvjitlink_available, nvjitlink_version
    from kiln.codegen.nvptx import BLOCK_SIZE, DEFAULT_CUBIN_ARCHS, DEFAULT_PTX_FEATURES, build_ptx

    ptx = build_ptx(kernels)
    archs = tuple(DEFAULT_CUBIN_ARCHS if archs is None else archs)
    names = ["cuda.ptx"]
    blobs["cuda.ptx"] = ptx.ptx.encode()
    why = nvjitlink_available() if archs else "no cubin architectures were asked for"
    built: list[str] = []
    if why is None:
        for arch in archs:
            blobs[f"cuda.{arch}.cubin"] = link_cubin(ptx.ptx, arch)
            names.append(f"cuda.{arch}.cubin")
            built.append(arch)
    tinfos.append(TargetInfo("cuda", "cuda", "nvptx64", "nvptx64-nvidia-cuda", ptx.arch, DEFAULT_PTX_FEATURES,
                             tuple(names)))
    for k in kernels:
        kentries[k.kernel.name]["cuda"] = ptx.launches[k.kernel.name][0].entry
    doc: dict[str, Any] = {
        "block_size": BLOCK_SIZE,
        "ptx": "cuda.ptx",
        "cubins": {arch: f"cuda.{arch}.cubin" for arch in built},
        "launches": {name: [ln.to_json() for ln in ls] for name, ls in ptx.launches.items()},
    }
    if why is not None:
        doc["cubins_missing"] = why
        if archs:
            import warnings

            from kiln._extras import install_command
            warnings.warn(f"kiln: the cuda target holds PTX only (no cubins for {', '.join(archs)}): {why}. "
                          f"Loading it costs a driver JIT (~0.1 s); {install_command('cuda')} to link cubins "
                          "ahead of time.", stacklevel=4)
    else:
        doc["nvjitlink"] = nvjitlink_version()
    return doc




def _const(value: Any, t: ScalarType) -> bool | int | float:
    if t.is_bool:
        return bool(value)
    if t.is_int:
        return int(value)
    return float(value)


def _unique_kernels(kirs: Sequence[KernelIR]) -> list[KernelIR]:
    """Each compiled kernel once (several (kernel, types) keys may lower to the same IR)."""
    return list({k.kernel.name: k for k in kirs}.values())


def _kernel_info(kir: KernelIR, entries: dict[str, str]) -> KernelInfo:
    access = array_access(kir)
    layout = layout_params([(p.name, p.type) for p in kir.kernel.params])
    params = tuple(ParamInfo(lay, access.get(lay.name, "none")) for lay in layout)
    return KernelInfo(kir.kernel.name, kir.display_name or kir.kernel.name, params, entries)


def _graph_param_infos(args: list[Any], g: GraphIR, lowered: dict[Any, KernelIR]) -> list[ParamInfo]:
    by_ir = {k.kernel.name: k for k in lowered.values()}
    modes: dict[str, set[str]] = {a.name: set() for a in args}
    for d in g.dispatches:
        kir = by_ir[d.kernel]
        access = array_access(kir)
        for p, b in zip(kir.kernel.params, d.bindings):
            if isinstance(b, ArgBinding) and p.name in access:
                modes[b.name].update({"readwrite": ("read", "write")}.get(access[p.name], (access[p.name],)))
    layout = layout_params([(a.name, a.type) for a in args])
    out = []
    for a, lay in zip(args, layout):
        m = modes[a.name] - {"none"}
        acc = "readwrite" if m == {"read", "write"} else next(iter(m)) if m else "none"
        out.append(ParamInfo(lay, acc if lay.kind == "ndarray" else "read", a.shape))
    return out


# ---------------------------------------------------------------------------------------------
# Direct kernel calls: `saxpy(2.0, x, y)` compiles once per argument types, then reuses the code
# ---------------------------------------------------------------------------------------------

def set_device(device: str) -> None:
    """Run direct kernel calls (`saxpy(2.0, x, y)`) on "cpu" (default) or "cuda", like Taichi's
    `ti.init(arch=...)`. Graphs choose their targets at compile time and are not affected. On
    "cuda", numpy arguments are copied to the GPU and back (docs/cuda.md) and device arrays
    (PyTorch, CuPy) are used in place."""
    from kiln.lang.kernel import DIRECT_CALL_DEVICE
    if device not in ("cpu", "cuda"):
        raise ValueError(f"set_device: expected 'cpu' or 'cuda', got {device!r}")
    DIRECT_CALL_DEVICE[0] = device


def call_kernel(kernel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    from kiln.lang.kernel import DIRECT_CALL_DEVICE

    device = DIRECT_CALL_DEVICE[0]
    if device not in ("cpu", "cuda"):
        raise ValueError(f"KILN_DEVICE must be 'cpu' or 'cuda', got {device!r}")
    # The caches live on the kernel object, so they die with it.
    state = kernel.__dict__
    fixed = state.get("_kiln_fixed")
    if fixed is not None and fixed[0] == device:
        # Fully annotated kernels have one specialisation: go straight to the runtime binder,
        # which checks every argument (dtype, ndim, contiguity, ranges) before running.
        fixed[1](*args, **kwargs)
        return
    bound = _bind(kernel, args, kwargs)
    names = kernel.param_names
    types = tuple(_type_of(kernel, n, ann, bound[n]) for n, ann in zip(names, kernel.annotations))
    cache: dict[tuple[str, ParamTypes], Any] = state.setdefault("_kiln_call_cache", {})
    compiled = cache.get((device, types))
    if compiled is None:
        from kiln.graph.module import Module
        module = Module(target="host", targets=["cuda"] if device == "cuda" else None)
        # __name__ is an identifier except for lambdas and the like, which cannot be kernels
        module.add_kernel(kernel, *types, name=kernel.name)
        compiled = module.compile().kernels[kernel.name]
        cache[(device, types)] = compiled
        if all(isinstance(a, ScalarType) or a.is_concrete for a in kernel.annotations):
            state["_kiln_fixed"] = (device, compiled)
    compiled.run(bound)


def _bind(kernel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    from kiln.errors import ArgumentError

    names = kernel.param_names
    if len(args) > len(names):
        raise ArgumentError(f"kernel {kernel.name!r} takes {len(names)} arguments, got {len(args)}")
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names:
            raise ArgumentError(f"kernel {kernel.name!r} has no parameter {k!r}; parameters: {', '.join(names)}")
        if k in bound:
            raise ArgumentError(f"kernel {kernel.name!r}: argument {k!r} given twice")
        bound[k] = v
    missing = [n for n in names if n not in bound]
    if missing:
        raise ArgumentError(f"kernel {kernel.name!r}: missing argument{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))}")
    return bound


def _type_of(kernel: Any, name: str, ann: ScalarType | NdArrayType, value: Any) -> ScalarType | NdArrayType:
    """The concrete parameter type for a direct call; arrays must match the annotation exactly
    (no conversion), detailed value checks happen in the runtime binder."""
    import numpy as np

    from kiln.errors import ArgumentError
    from kiln.types import from_numpy

    if isinstance(ann, ScalarType):
        return ann
    where = f"kernel {kernel.name!r}: argument {name!r}"
    if not isinstance(value, np.ndarray):
        if hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack__"):
            return _device_array_type(where, ann, value)
        raise ArgumentError(f"{where}: expected a numpy.ndarray ({ann!r}), got {type(value).__name__}")
    dt = from_numpy(value.dtype)
    if dt is None:
        raise ArgumentError(f"{where}: dtype {value.dtype} is not supported by kiln")
    if ann.dtype is not None and ann.dtype != dt:
        raise ArgumentError(f"{where}: expected dtype {ann.dtype.name}, got {value.dtype} (kiln never converts arrays)")
    if ann.ndim is not None and ann.ndim != value.ndim:
        raise ArgumentError(f"{where}: expected a {ann.ndim}-D array, got {value.ndim}-D with shape {value.shape}")
    if not 1 <= value.ndim <= 8:
        raise ArgumentError(f"{where}: arrays of {value.ndim} dimensions are not supported (1..8)")
    return NdArrayType(dt, value.ndim)


def _device_array_type(where: str, ann: NdArrayType, value: Any) -> NdArrayType:
    """The parameter type of a GPU array argument (its dtype and ndim, from CAI or DLPack)."""
    from kiln.errors import ArgumentError
    from kiln.runtime.cuda import device_array
    from kiln.types import SCALARS_BY_NAME

    info = device_array(value)
    if info is None:
        raise ArgumentError(f"{where}: expected a numpy array or a CUDA device array, got {type(value).__name__}")
    _, shape, dtype_name, _, _ = info
    dt = SCALARS_BY_NAME.get(dtype_name)
    if dt is None:
        raise ArgumentError(f"{where}: dtype {dtype_name} is not supported by kiln")
    if ann.dtype is not None and ann.dtype != dt:
        raise ArgumentError(f"{where}: expected dtype {ann.dtype.name}, got {dtype_name} (kiln never converts arrays)")
    if ann.ndim is not None and ann.ndim != len(shape):
        raise ArgumentError(f"{where}: expected a {ann.ndim}-D array, got {len(shape)}-D with shape {shape}")
    return NdArrayType(dt, len(shape))
