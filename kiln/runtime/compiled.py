"""Loaded, runnable code: CompiledModule, CompiledGraph, CompiledKernel, and `load`.

This is the runtime layer. It imports numpy, the artifact reader and the native loader only:
never the front end (kiln.lang), the code generators (kiln.codegen) or llvmlite (except inside
the MCJIT fallback loader on platforms kiln's own ELF loader does not cover).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kiln.artifact.container import Container, read_bytes, unpack, write_bytes
from kiln.artifact.manifest import GraphInfo, KernelInfo, Manifest, ParamInfo, TargetInfo
from kiln.errors import ArtifactError, KilnError
from kiln.runtime import threads
from kiln.runtime.abi_digest import check_abi
from kiln.runtime.binding import DATA_OFFSET, ArgBinder, bind_call_arguments
from kiln.runtime.debug_record import STATUS_CHECK_FAILED, DebugRecord
from kiln.runtime.runnable import ArgSpec, Runnable, arg_specs

if TYPE_CHECKING:
    from kiln.runtime.cuda import CudaModule

_OBJ_ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)


class KernelRuntimeError(KilnError, RuntimeError):
    """Native code reported a failure (a non-zero status from an entry point)."""


class _Runnable:
    """Shared by graphs and kernels (both satisfy the `Runnable` protocol): one argument check,
    one foreign call."""

    def __init__(self, module: CompiledModule, owner: str, params: tuple[ParamInfo, ...], symbol: str) -> None:
        from kiln.runtime.native import ENTRY_TYPE
        self._module = module          # keeps the native code mapped while this object lives
        self._owner = owner
        self._binder = ArgBinder(params, owner)
        self.params = params
        self.args: list[ArgSpec] = arg_specs(params)
        native = module._native
        fast = symbol + "_pyobj"
        self._pack = self._binder._pack
        if DATA_OFFSET and fast in native.symbols:
            # Array slots carry the objects' addresses; native code reads their data pointers.
            self._entry = _OBJ_ENTRY_TYPE(native.code_address(fast))
            self._objects = True
        else:
            self._entry = ENTRY_TYPE(native.code_address(symbol))
            self._objects = False

    def run(self, args: Mapping[str, Any]) -> None:
        """Check all arguments, then run the native code once. Arrays are updated in place.

        The packed block holds raw addresses, so the call works on a private copy of `args`:
        its references keep every array alive until the native code returns, whatever other
        threads do to the caller's mapping meanwhile."""
        held = args.copy() if type(args) is dict else dict(args) if isinstance(args, Mapping) else args
        if self._module._debug is not None:
            self._pack(held, False)                  # every argument checked first, then:
            self._binder.check_overlaps(held)
        if self._objects:
            status = self._entry(self._pack(held, True), DATA_OFFSET)
        else:
            status = self._entry(self._pack(held, False))
        if status:
            self._raise_status(status)

    def _raise_status(self, status: int) -> None:
        """A failed check of debug mode as its IndexError/ZeroDivisionError, else a runtime error."""
        record = self._module._debug
        error = record.take_error() if record is not None and status == STATUS_CHECK_FAILED else None
        if error is not None:
            raise error
        raise KernelRuntimeError(f"{self._owner}: native code returned status {status}")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the .kiln file this object came from (the whole module it belongs to)."""
        self._module.save(path)


class CompiledGraph(_Runnable):
    """A compiled graph: `run({"name": value, ...})` runs its whole dispatch list natively."""

    def __init__(self, module: CompiledModule, info: GraphInfo, symbol: str) -> None:
        super().__init__(module, f"graph {info.name!r}", info.params, symbol)
        self.name = info.name
        self.info = info

    def __repr__(self) -> str:
        return f"<CompiledGraph {self.name!r} args={self.args} dispatches={len(self.info.dispatches)}>"


class CompiledKernel(_Runnable):
    """A standalone compiled kernel: call it positionally or with `run({...})`."""

    def __init__(self, module: CompiledModule, info: KernelInfo, symbol: str, name: str) -> None:
        super().__init__(module, f"kernel {name!r}", info.params, symbol)
        self.name = name
        self.info = info
        self._names = tuple(p.layout.name for p in info.params)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        names = self._names
        if len(args) == len(names) and not kwargs:
            self.run(dict(zip(names, args)))
            return
        self.run(bind_call_arguments(self._owner, names, args, kwargs))

    def __repr__(self) -> str:
        return f"<CompiledKernel {self.name!r} args={self.args}>"


class CompiledModule:
    """Everything one .kiln file holds, linked into this process."""

    def __init__(self, data: bytes, manifest: Manifest, target: TargetInfo, native: Any) -> None:
        self._data = data
        self._native = native
        #: debug mode's error record (None for a release module; kiln.runtime.debug_record)
        self._debug = DebugRecord.attach(native)
        self.manifest = manifest
        self.target = target
        self.graphs: dict[str, CompiledGraph] = {
            name: CompiledGraph(self, g, g.entries[target.name])
            for name, g in manifest.graphs.items()}
        self.kernels: dict[str, CompiledKernel] = {
            name: CompiledKernel(self, manifest.kernels[kname],
                                 manifest.kernels[kname].entries[target.name], name)
            for name, kname in manifest.exported_kernels.items()}

    def save(self, path: str | os.PathLike[str]) -> None:
        write_bytes(path, self._data)

    def to_bytes(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return (f"<CompiledModule target={self.target.name}:{self.target.cpu} graphs={sorted(self.graphs)} "
                f"kernels={sorted(self.kernels)}>")


def _pick_cpu_target(manifest: Manifest, source: str) -> TargetInfo:
    from kiln.runtime.hostcpu import host_arch, missing_features
    cpus = [t for t in manifest.targets if t.kind == "cpu"]
    if not cpus:
        kinds = ", ".join(sorted({t.kind for t in manifest.targets}))
        raise ArtifactError(f"{source}: the file has no CPU code (targets: {kinds})")
    arch = host_arch()
    same_arch = [t for t in cpus if t.arch == arch]
    if not same_arch:
        raise ArtifactError(f"{source}: compiled for {', '.join(t.arch for t in cpus)}, this machine is {arch}")
    problems = []
    for t in same_arch:
        missing = missing_features(t.features)
        if not missing:
            return t
        problems.append(f"{t.name} ({t.cpu}) needs CPU features this machine lacks: {', '.join(missing)}")
    raise ArtifactError(f"{source}: cannot run here: {'; '.join(problems)}. Recompile with a portable "
                        "target, e.g. compile(target='x86-64-v2')")


def load_bytes(data: bytes, source: str = "<bytes>") -> CompiledModule:
    """Verify, link and wrap a .kiln file held in memory."""
    container = unpack(data, source=source)
    return _link(data, container, source)


def _link(data: bytes, container: Container, source: str) -> CompiledModule:
    from kiln.runtime.native import load_object
    try:
        manifest = Manifest.from_json(container.manifest, set(container.blobs))
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from None
    target = _pick_cpu_target(manifest, source)
    if len(target.blobs) != 1:
        raise ArtifactError(f"{source}: CPU target {target.name!r} must have exactly one object blob")
    for what, entries in [(f"graph {g.name!r}", g.entries) for g in manifest.graphs.values()] + [
            (f"kernel {k.name!r}", k.entries) for k in manifest.kernels.values()]:
        if target.name not in entries:
            raise ArtifactError(f"{source}: {what} has no entry point for target {target.name!r}")
    try:
        native = load_object(bytes(container.blobs[target.blobs[0]]))
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from None
    _check_abi(native, manifest, target, source)
    threads.attach(native)
    try:
        return CompiledModule(data, manifest, target, native)
    except ArtifactError as e:  # an entry symbol missing from the object
        raise ArtifactError(f"{source}: {e}") from None


def _check_abi(native: Any, manifest: Manifest, target: TargetInfo, source: str) -> None:
    """The object's ABI descriptors must agree with the manifest (kiln.runtime.abi_digest)."""
    try:
        for g in manifest.graphs.values():
            check_abi(native, "graph", g.name, g.entries[target.name], g.params)
        for k in manifest.kernels.values():
            check_abi(native, "kernel", k.name, k.entries[target.name], k.params)
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from None


def load_module(path: str | os.PathLike[str], device: str = "cpu") -> CompiledModule | CudaModule:
    """Load every graph and kernel of a .kiln file, for the CPU (a CompiledModule) or, with
    device="cuda", for the current GPU (a kiln.runtime.cuda.CudaModule; docs/cuda.md)."""
    if device != "cpu":
        return _cuda_runtime(device).load_module(path)  # type: ignore[no-any-return]
    source = os.fspath(path)
    return load_bytes(read_bytes(source), source)


def _cuda_runtime(device: str) -> ModuleType:
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    from kiln.runtime import cuda  # imports cuda-bindings lazily, only for GPU files
    return cuda


def load(path: str | os.PathLike[str], device: str = "cpu") -> Runnable:
    """Load a .kiln file holding one graph and return that graph (a CompiledGraph, or with
    device="cuda" a kiln.runtime.cuda.CudaGraph)."""
    if device != "cpu":
        return _cuda_runtime(device).load(path)  # type: ignore[no-any-return]
    source = os.fspath(path)
    module = load_bytes(read_bytes(source), source)
    if len(module.graphs) != 1:
        raise ArtifactError(f"{source}: holds {len(module.graphs)} graphs "
                            f"({', '.join(sorted(module.graphs)) or 'none'}); use kiln.load_module() and pick one")
    return next(iter(module.graphs.values()))
