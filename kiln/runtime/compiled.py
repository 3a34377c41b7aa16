"""Loaded, runnable code: CompiledModule, CompiledGraph, CompiledKernel, and `load`.

This is the runtime layer. It imports numpy, the artifact reader and the native loader only:
never the front end (kiln.lang), the code generators (kiln.codegen) or llvmlite (except inside
the MCJIT fallback loader on platforms kiln's own ELF loader does not cover).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, overload

from kiln.abi import HIDDEN_PREFIX
from kiln.artifact.container import Container, read_bytes, unpack, write_bytes
from kiln.artifact.manifest import GraphInfo, KernelInfo, Manifest, ParamInfo, TargetInfo
from kiln.errors import ArtifactError, KilnError
from kiln.runtime import threads
from kiln.runtime.abi_digest import check_abi
from kiln.runtime.binding import (
    DATA_OFFSET,
    STRIDES_OFFSET,
    ArgBinder,
    allocate_fields,
    bind_call_arguments,
    field_arguments,
    visible,
)
from kiln.runtime.cuda_driver import cuda_available, device_ordinal
from kiln.runtime.debug_record import STATUS_CHECK_FAILED, DebugRecord
from kiln.runtime.print_buffer import PrintBuffer
from kiln.runtime.rng import draws, new_rng_state, with_rng
from kiln.runtime.runnable import ArgSpec, Runnable, arg_specs, unpickled_member

if TYPE_CHECKING:
    from kiln.runtime.cuda import CudaModule

_OBJ_ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)


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
        self.args: list[ArgSpec] = arg_specs(visible(params))
        #: hidden field parameters -> the module's storage, passed on every run (a caller's own
        #: `@name` argument wins: direct kernel calls bind a field's Python-side array)
        self._field_args = field_arguments(params, module._field_storage)
        #: draws random numbers: the module's state array is passed as the hidden RNG_PARAM
        self._rng = draws(params)
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
        self._run(args.copy() if type(args) is dict else dict(args) if isinstance(args, Mapping) else args)

    def _run(self, held: Any) -> None:
        """`run` on a mapping this call owns (direct calls build a fresh dict: no second copy)."""
        if (self._field_args or self._rng) and isinstance(held, dict):
            if self._field_args:
                held = {**self._field_args, **held}
            if self._rng:
                held = dict(with_rng(held, self._module.rng_state))
        self.run_bound(held)

    def run_bound(self, held: dict[str, Any]) -> None:
        """Run on a dict this call owns that already holds every parameter, hidden ones included
        (the direct-call dispatcher binds a kernel's fields and the random state itself)."""
        if self._module._debug is not None:
            self._pack(held, False)                  # every argument checked first, then:
            self._binder.check_overlaps(held)
        if self._objects:
            status = self._entry(self._pack(held, True), DATA_OFFSET, STRIDES_OFFSET)
        else:
            status = self._entry(self._pack(held, False))
        if self._module._prints is not None:
            self._module._prints.flush()
        if status:
            self._raise_status(status)

    def _raise_status(self, status: int) -> None:
        """A failed check of debug mode as its IndexError/ZeroDivisionError, else a runtime error."""
        record = self._module._debug
        error = record.take_error() if record is not None and status == STATUS_CHECK_FAILED else None
        if error is not None:
            raise error
        raise KernelRuntimeError(f"{self._owner}: native code returned status {status}")

    def save(self, path: str | os.PathLike[str], sign_key: Any = None) -> None:
        """Write the .kiln file this object came from (the whole module it belongs to), signed
        with `sign_key` if given (kiln.signing)."""
        self._module.save(path, sign_key=sign_key)

    def __reduce__(self) -> tuple[Any, tuple[bytes, str, str, str]]:
        """Pickle as the file's bytes plus this graph's or kernel's name: the receiving process
        links the file again (no code objects travel; the receiver needs only the runtime)."""
        kind = "graph" if isinstance(self, CompiledGraph) else "kernel"
        return _unpickle, (bytes(self._module._data), kind, self.name, "cpu")  # type: ignore[attr-defined]

    @property
    def fields(self) -> Mapping[str, Any]:
        """The module-level fields of the module this belongs to (`CompiledModule.fields`)."""
        return self._module.fields

    def seed(self, seed: int) -> None:
        """Restart the random numbers of the module this belongs to (kl.random) from `seed`."""
        self._module.seed(seed)


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
        self._names = tuple(n for n in self._binder.names if not n.startswith(HIDDEN_PREFIX))  # vectors: one name

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        names = self._names
        if len(args) == len(names) and not kwargs:
            self._run(dict(zip(names, args)))      # a fresh dict: run() need not copy it
            return
        self._run(bind_call_arguments(self._owner, names, args, kwargs))

    def __repr__(self) -> str:
        return f"<CompiledKernel {self.name!r} args={self.args}>"


class CompiledModule:
    """Everything one .kiln file holds, linked into this process."""

    def __init__(self, data: bytes, manifest: Manifest, target: TargetInfo, native: Any,
                 blobs: Mapping[str, Any] | None = None) -> None:
        self._data = data
        self._native = native
        #: debug mode's error record (None for a release module; kiln.runtime.debug_record)
        self._debug = DebugRecord.attach(native)
        #: what kernels print (None for a module without print; kiln.runtime.print_buffer)
        self._prints = PrintBuffer.attach(native)
        self.manifest = manifest
        self.target = target
        self._field_storage = allocate_fields(manifest.fields, blobs or {})
        #: the module's fields by name, as numpy arrays shaped `shape + element_shape` (views of
        #: the storage every run uses: write them between runs, read them after; state persists)
        self.fields: Mapping[str, Any] = MappingProxyType({
            name: arr.reshape(manifest.fields[name].shape + manifest.fields[name].element_shape)
            for name, arr in self._field_storage.items()})
        #: the random-number state of kernels that draw (kl.random): this module's own
        self.rng_state = new_rng_state(manifest.random_seed)
        self.graphs: dict[str, CompiledGraph] = {
            name: CompiledGraph(self, g, g.entries[target.name])
            for name, g in manifest.graphs.items()}
        self.kernels: dict[str, CompiledKernel] = {
            name: CompiledKernel(self, manifest.kernels[kname],
                                 manifest.kernels[kname].entries[target.name], name)
            for name, kname in manifest.exported_kernels.items()}

    def seed(self, seed: int) -> None:
        """Restart this module's random numbers from `seed` (the file's seed is its default)."""
        self.rng_state[:] = new_rng_state(seed)

    def save(self, path: str | os.PathLike[str], sign_key: Any = None) -> None:
        """Write the .kiln file (atomically), signed with `sign_key` if given (kiln.signing)."""
        write_bytes(path, self._data if sign_key is None else _sign(self._data, sign_key))

    def to_bytes(self) -> bytes:
        """The .kiln file's bytes (what `save` writes and `load_bytes` reads)."""
        return self._data

    def __reduce__(self) -> tuple[Any, tuple[bytes, str, str, str]]:
        """Pickle as the file's bytes (see `_Runnable.__reduce__`)."""
        return _unpickle, (bytes(self._data), "module", "", "cpu")

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
        missing = missing_features(t.features, cpu=t.cpu)
        if not missing:
            return t
        problems.append(f"{t.name} ({t.cpu}) needs CPU features this machine lacks: {', '.join(missing)}")
    raise ArtifactError(f"{source}: cannot run here: {'; '.join(problems)}. Recompile with a portable "
                        "target, e.g. compile(target='x86-64-v2')")


def _sign(data: bytes, sign_key: Any) -> bytes:
    from kiln.signing import sign_bytes
    return sign_bytes(data, sign_key)


def load_bytes(data: bytes, source: str = "<bytes>", trusted_keys: Any = None) -> CompiledModule:
    """Verify, link and wrap a .kiln file held in memory (signed by one of `trusted_keys`, when
    given: see kiln.signing)."""
    _verify(data, source, trusted_keys)
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
        return CompiledModule(data, manifest, target, native, container.blobs)
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


def load_module(path: str | os.PathLike[str], device: str | None = None,
                trusted_keys: Any = None) -> CompiledModule | CudaModule:
    """Load every graph and kernel of a .kiln file, for the CPU (a CompiledModule) or, with
    device="cuda" / "cuda:N", for a GPU (a kiln.runtime.cuda.CudaModule; docs/cuda.md).
    Default: the CPU, or the GPU when the file holds no CPU code and this machine has one.
    `trusted_keys`: refuse the file unless it is signed by one of these keys (kiln.signing)."""
    data, source = _read(path, trusted_keys)
    container = None if device is not None else unpack(data, source=source)
    if _wants_gpu(device, container, source):
        from kiln.runtime import cuda  # imports cuda-bindings lazily, only for GPU files
        return cuda.load_bytes(data, source, _gpu_ordinal(device), container)
    return _link(data, container or unpack(data, source=source), source)


def _read(path: str | os.PathLike[str], trusted_keys: Any) -> tuple[bytes, str]:
    """The file's bytes (checked against `trusted_keys` when given) and its name."""
    source = os.fspath(path)
    data = read_bytes(source)
    _verify(data, source, trusted_keys)
    return data, source


def _verify(data: bytes, source: str, trusted_keys: Any) -> None:
    """With `trusted_keys`, refuse a file not signed by one of them, before anything is parsed."""
    if trusted_keys is not None:
        from kiln.signing import verify_signature  # cryptography is an optional extra
        verify_signature(data, trusted_keys, source)


def _wants_gpu(device: str | None, container: Container | None, source: str) -> bool:
    """Whether a load runs on a GPU: `device` says so ("cuda", "cuda:N"), or, when it is None, the
    file holds no CPU code but a cuda target and this machine has a GPU. A file that needs a GPU
    this machine lacks is refused here, naming the GPU device."""
    if device == "cpu":
        return False
    if device is not None:
        _gpu_ordinal(device)          # ValueError for a name that is no device
        return True
    assert container is not None      # read when no device was named
    targets = container.manifest.get("targets")
    kinds = {t.get("kind") for t in targets if isinstance(t, dict)} if isinstance(targets, list) else {"cpu"}
    if "cpu" in kinds or "cuda" not in kinds:
        return False                  # the CPU loader reports anything else
    why = cuda_available()
    if why is not None:
        raise ArtifactError(f"{source}: the file holds no CPU code, only a cuda target, and this machine cannot "
                            f"run it ({why}); load it with device=\"cuda\" on a machine with a GPU, or "
                            "compile with targets=['cpu', 'cuda']")
    return True


def _gpu_ordinal(device: str | None) -> int:
    return 0 if device is None else device_ordinal(device)


@overload
def load(path: str | os.PathLike[str], device: Literal["cpu"] | None = None,
         trusted_keys: Any = None) -> CompiledGraph: ...
@overload
def load(path: str | os.PathLike[str], device: str, trusted_keys: Any = None) -> Runnable: ...


def load(path: str | os.PathLike[str], device: str | None = None, trusted_keys: Any = None) -> Runnable:
    """Load a .kiln file holding one graph and return that graph: a CompiledGraph, or with
    device="cuda" / "cuda:N" a kiln.runtime.cuda.CudaGraph on that GPU. Default (None): the CPU,
    or the GPU when the file holds no CPU code and this machine has one (then a CudaGraph,
    although typed as the CPU's graph). `trusted_keys`: refuse the file unless it is signed by
    one of these keys (kiln.signing)."""
    data, source = _read(path, trusted_keys)
    container = None if device is not None else unpack(data, source=source)
    if _wants_gpu(device, container, source):
        from kiln.runtime import cuda
        return cuda.only_graph(cuda.load_bytes(data, source, _gpu_ordinal(device), container))
    module = _link(data, container or unpack(data, source=source), source)
    if len(module.graphs) != 1:
        raise ArtifactError(f"{source}: holds {len(module.graphs)} graphs "
                            f"({', '.join(sorted(module.graphs)) or 'none'}); use kiln.load_module() and pick one")
    return next(iter(module.graphs.values()))


def _unpickle(data: bytes, kind: str, name: str, device: str) -> Any:
    """Rebuild a pickled CompiledModule ("module"), CompiledGraph ("graph") or CompiledKernel
    ("kernel") from its file bytes by linking them in this process."""
    if device == "cuda":
        from kiln.runtime import cuda
        module: Any = cuda.load_bytes(data, source="<unpickled>")
    else:
        module = load_bytes(data, source="<unpickled>")
    return unpickled_member(module, kind, name)
