"""Running the cuda target of a .kiln file through the CUDA driver API (cuda-bindings).

    m = kiln.runtime.cuda.load_module("model.kiln")      # or load_bytes(data), from_compiled(obj)
    m.graphs["main"].run({"x": x, "y": y, "a": 2.0}, stream=None, use_graph=True)
    m.kernels["saxpy"](2.0, x, y)

No PyTorch/CuPy dependency: only `cuda.bindings.driver` (pip install "kiln-aot[cuda]") and numpy.
Nothing touches the driver until the first run, so CPU-only machines can open, inspect and
save files with CUDA targets.

Arrays (docs/cuda.md):
- device arrays from any library, zero-copy: objects with `__cuda_array_interface__` (PyTorch,
  CuPy, Numba, ...) or `__dlpack__` on a CUDA device. They must be C-contiguous and of the
  exact dtype; kiln runs on the caller's stream and does not synchronize.
- numpy arrays: copied to the device before the run, and the ones the code writes (access
  "write"/"readwrite") copied back after it; the call then synchronizes the stream, so the numpy
  arrays hold the results when run() returns (like the CPU target).

Streams: `run(args, stream=s)` launches on `s`: an int handle, a `CUstream`, or any object with
`cuda_stream` (torch.cuda.Stream), `ptr` (cupy Stream) or `__cuda_stream__`. Default: the legacy
default stream (0), which orders with PyTorch's and CuPy's default streams.

Graphs run as CUDA graphs (kernel nodes in dispatch order) replayed with one cuGraphLaunch; the
nodes read their arguments from a device buffer that one copy refreshes when they change
(`cuda_graph`), so only a change of grid sizes builds another graph. Files written before that
(no `block_ptr` in their launches) update changed nodes with cuGraphExecKernelNodeSetParams.
`use_graph=False` launches each kernel with cuLaunchKernel instead.

Devices: a module runs on its GPU (`load_module(path, device="cuda:1")`) unless a run names
another (`run(args, device=1)`); it is loaded into each GPU's primary context at its first run
there, and device arrays on another GPU than the run's are refused.

The driver (`cuda_driver`), array interop (`cuda_arrays`), launch machinery (`cuda_launch`) and
graphs with device-resident arguments (`cuda_graph`) live in their own modules; argument checks
are the CPU runtime's `ArgBinder` plus the device-array checks here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.abi import HIDDEN_PREFIX, SCALAR_FORMAT, contiguous_strides, is_field_param
from kiln.artifact.container import Container, read_bytes, unpack, write_bytes
from kiln.artifact.manifest import Binding, CudaSection, Manifest, ParamInfo, TargetInfo
from kiln.errors import (
    ArgumentError,
    ArgumentValueError,
    ArtifactError,
    CudaError,
    KernelIndexError,
    KernelZeroDivisionError,
)
from kiln.runtime.abi_digest import DIGEST_SIZE, SUFFIX, check_descriptor, ptx_descriptor
from kiln.runtime.binding import ArgBinder, ArgPlan, bind_call_arguments, may_overlap_itself, visible
from kiln.runtime.cuda_arrays import device_array, stream_handle
from kiln.runtime.cuda_driver import (
    Device,
    check,
    cuda_available,
    device_count,
    device_ordinal,
    driver,
    pick_image,
    pointer_device,
)
from kiln.runtime.cuda_fields import DeviceField, DeviceFields
from kiln.runtime.cuda_graph import BlockGraphExec, BlockImage, grid_dependencies
from kiln.runtime.cuda_launch import GraphExec, LoadedImage, Node, decode_block, eval_host_expr, node_params
from kiln.runtime.rng import draws, new_rng_state, with_rng
from kiln.runtime.runnable import ArgSpec, arg_specs, unpickled_member
from kiln.types import SCALARS_BY_NAME

#: override of the grid cap of every grid-stride launch, in full waves of resident blocks
#: (None: the manifest's per-launch `waves`, default 1)
GRID_WAVES: int | None = None
_Device = Device   # the name bench/gpu_bench.py warms the driver with

#: a run's argument block values, objects to keep alive until it ends, numpy arrays to upload
CheckedArgs = tuple[list[Any], list[Any], list[tuple[np.ndarray, str]]]


class CudaModule:
    """The cuda target of a .kiln file. Loading into the GPU happens at the first run, once per
    device (primary context). `device` is the GPU its graphs and kernels run on unless a run
    names another (`run(args, device="cuda:1")`)."""

    def __init__(self, data: bytes, container: Container, manifest: Manifest, source: str,
                 device: int | str = 0) -> None:
        #: the ordinal of the GPU runs use by default
        self.device = device_ordinal(device)
        cudas = [t for t in manifest.targets if t.kind == "cuda"]
        if not cudas:
            kinds = ", ".join(sorted({t.kind for t in manifest.targets}))
            raise CudaError(f"{source}: the file has no cuda target (targets: {kinds}); compile with "
                            "targets=['cpu', 'cuda']")
        section: CudaSection | None = manifest.cuda   # validated by the manifest reader when present
        if section is None:
            raise ArtifactError(f"{source}: manifest: cuda: the launch table is missing")
        self.target: TargetInfo = cudas[0]
        self.source = source
        self.manifest = manifest
        self._data = data
        self._container = container
        self.block = section.block_size
        self.ptx_blob = section.ptx
        self.cubins = dict(section.cubins)
        self.cubins_missing = section.cubins_missing
        self.launches = section.launches
        #: the random-number state of kernels that draw (kl.random): this module's own
        self.rng_state = new_rng_state(manifest.random_seed)
        self._check_ptx_abi()
        self._loaded: dict[int, LoadedImage] = {}
        #: module-level fields: device arrays owned by this load, filled from the init blobs
        self._fields = DeviceFields(manifest.fields, container.blobs)
        self.graphs = {name: CudaGraph(self, f"graph {name!r}", g.params,
                                       [(d.kernel, tuple(d.bindings)) for d in g.dispatches])
                       for name, g in manifest.graphs.items()}
        self.kernels = {name: CudaKernel(self, f"kernel {name!r}", manifest.kernels[kname].params, kname)
                        for name, kname in manifest.exported_kernels.items()}

    def _check_ptx_abi(self) -> None:
        """The PTX's ABI descriptors must agree with the manifest (kiln.runtime.abi_digest); the
        image actually loaded (a cubin, maybe) is checked again on the device by `loaded`."""
        ptx = bytes(self._container.blobs[self.ptx_blob]) if self.ptx_blob in self._container.blobs else b""
        try:
            for k in self.manifest.kernels.values():
                symbol = self._entry_of(k.name)
                check_descriptor(ptx_descriptor(ptx, symbol), "kernel", k.name, symbol, k.params, "PTX")
        except ArtifactError as e:
            raise ArtifactError(f"{self.source}: {e}") from None

    def _entry_of(self, kname: str) -> str:
        entry = self.manifest.kernels[kname].entries.get(self.target.name)
        if entry is None:
            raise ArtifactError(f"kernel {kname!r} has no entry point for target {self.target.name!r}")
        return entry

    def _check_device_abi(self, lm: LoadedImage) -> None:
        for k in self.manifest.kernels.values():
            symbol = self._entry_of(k.name)
            try:
                check_descriptor(lm.global_bytes(symbol + SUFFIX, DIGEST_SIZE), "kernel", k.name, symbol, k.params,
                                 lm.image_kind)
            except ArtifactError as e:
                raise ArtifactError(f"{self.source}: {e}") from None

    def loaded(self, device: int = 0) -> LoadedImage:
        lm = self._loaded.get(device)
        if lm is None:
            dev = Device.get(device)
            dev.make_current()
            kind, blob = pick_image(dev.cc, self.cubins, self.ptx_blob, self.target.cpu, self.source)
            image = bytes(self._container.blobs[blob])
            if blob == self.ptx_blob:
                image += b"\0"
            entries = [ln.entry for launches in self.launches.values() for ln in launches]
            lm = LoadedImage(dev, image, kind, entries, self.block, self.source)
            if blob != self.ptx_blob:           # the PTX text was checked when the file was read
                self._check_device_abi(lm)
            self._loaded[device] = lm
        return lm

    def device_fields(self, device: int | str | None = None) -> dict[str, DeviceField]:
        """The fields' device arrays on `device` (default: the module's GPU; allocated and
        initialised at first use)."""
        ordinal = self.device if device is None else device_ordinal(device)
        self.loaded(ordinal).dev.make_current()
        return self._fields.on(ordinal)

    @property
    def fields(self) -> dict[str, DeviceField]:
        """The module's fields on its GPU (device arrays; `to_numpy()` / `from_numpy()`)."""
        return self.device_fields()

    def seed(self, seed: int) -> None:
        """Restart this module's random numbers from `seed` (the file's seed is its default)."""
        self.rng_state[:] = new_rng_state(seed)

    def image_kind(self, device: int | str | None = None) -> str:
        """Which code the GPU runs: 'cubin sm_90' or 'ptx sm_80 (driver JIT)' (loads the module)."""
        return self.loaded(self.device if device is None else device_ordinal(device)).image_kind

    def save(self, path: str | os.PathLike[str], sign_key: Any = None) -> None:
        """Write the .kiln file (atomically), signed with `sign_key` if given (kiln.signing), as
        the CPU module's `save` does."""
        if sign_key is None:
            write_bytes(path, self._data)
            return
        from kiln.signing import sign_bytes  # cryptography is an optional extra
        write_bytes(path, sign_bytes(self._data, sign_key))

    def to_bytes(self) -> bytes:
        return self._data

    def __reduce__(self) -> tuple[Any, tuple[bytes, str, str, int]]:
        """Pickle as the file's bytes and the GPU (`_unpickle` loads them again in the receiving
        process, for the same device), like the CPU's CompiledModule: no code objects travel."""
        return _unpickle, (bytes(self._data), "module", "", self.device)

    def __repr__(self) -> str:
        return (f"<CudaModule ptx={self.target.cpu} cubins={sorted(self.cubins)} graphs={sorted(self.graphs)} "
                f"kernels={sorted(self.kernels)}>")


def _launch_nodes(module: CudaModule, offsets: dict[str, Any],
                  dispatches: list[tuple[str, tuple[Binding, ...]]]) -> list[Node]:
    """The launches of a dispatch list in order, each with where its argument block comes from."""
    nodes: list[Node] = []
    for kname, bindings in dispatches:
        kinfo = module.manifest.kernels[kname]
        gather: list[Any] = []
        for kp, b in zip(kinfo.params, bindings):
            if b.kind in ("arg", "field"):     # a field travels in the graph parameter `@name`
                name = b.arg if b.kind == "arg" else HIDDEN_PREFIX + b.arg
                gl = offsets[name]
                gather.append((gl.offset, gl.size, name))
            else:
                gather.append(struct.pack("<" + SCALAR_FORMAT[kp.layout.dtype], b.value))
        nodes.extend(Node(ln, gather, kinfo.params, kinfo.display_name) for ln in module.launches[kname])
    return nodes


class CudaRunnable:
    """Shared by CUDA graphs and kernels: argument checks (the CPU runtime's `ArgBinder` plus
    device arrays), staging of numpy arrays, and plain or CUDA-graph launches."""

    def __init__(self, module: CudaModule, owner: str, params: tuple[ParamInfo, ...],
                 dispatches: list[tuple[str, tuple[Binding, ...]]]) -> None:
        self._module = module
        self.owner = owner
        self._binder = ArgBinder(params, owner)
        self.params = params
        self.block_size = module.block
        self.nodes = _launch_nodes(module, {p.layout.name: p.layout for p in params}, dispatches)
        self._graphs: dict[Any, GraphExec | BlockGraphExec] = {}
        #: every entry reads its block from device memory when asked: graphs replay after one copy
        self._block_graphs = all(n.block_ptr for n in self.nodes)
        self._image = BlockImage(self.nodes) if self._block_graphs else None
        self._grid_deps = grid_dependencies(self.nodes)
        self._plain: dict[int, list[Any]] = {}
        #: (GPU, numpy param) -> (device ptr, bytes)
        self._staging: dict[tuple[int, str], tuple[int, int]] = {}
        self.args: list[ArgSpec] = arg_specs(visible(params))
        self._hidden = tuple(p.layout.name for p in params if is_field_param(p.layout.name))
        self._rng = draws(params)      # takes the module's random-number state (copied in and back)

    @property
    def name(self) -> str:
        return self.owner.split("'")[1]

    def save(self, path: str | os.PathLike[str], sign_key: Any = None) -> None:
        """Write the .kiln file this object came from (the whole module it belongs to), signed
        with `sign_key` if given."""
        self._module.save(path, sign_key=sign_key)

    def __reduce__(self) -> tuple[Any, tuple[bytes, str, str, int]]:
        """Pickle as the file's bytes, this graph's or kernel's name and the GPU (as CudaModule)."""
        kind = "graph" if isinstance(self, CudaGraph) else "kernel"
        return _unpickle, (bytes(self._module.to_bytes()), kind, self.name, self._module.device)

    def seed(self, seed: int) -> None:
        """Restart the random numbers of the module this belongs to (kl.random) from `seed`."""
        self._module.seed(seed)

    # -- argument handling -----------------------------------------------------------------
    def _check_args(self, args: Mapping[str, Any], device: int | None = None) -> CheckedArgs:
        """Every argument check, before anything touches the GPU: (block values with numpy arrays'
        pointers still to be filled, keepalive, numpy arrays to upload). `device`: the GPU of the
        run (default: the module's), which device arrays must be on."""
        b = self._binder
        ordinal = self._module.device if device is None else device
        b.check_mapping(args)
        values: list[Any] = []
        symbols: dict[str, int] = {}
        keep: list[Any] = []
        uploads: list[tuple[np.ndarray, str]] = []
        for plan in b.plans:
            a = args[plan.name]
            if plan.array_type is None:
                if plan.parts:          # a vector/matrix argument: one scalar slot per element
                    values += b.vector(plan, a)
                else:
                    values.append(b.scalar(plan, a))
                continue
            if isinstance(a, np.ndarray):
                b.check_ndarray(plan, a, host_copy=True)
                shape = a.shape
                strides = contiguous_strides(shape)   # the staging copy is C-ordered
                uploads.append((a, plan.name))
                values.append(0)                 # the staging buffer's pointer, filled by _upload
            else:
                ptr, shape, strides, keepalive = self._device_array(plan, a, ordinal)
                keep.append(keepalive)
                values.append(ptr)
            if plan.shape is not None:
                b.check_shape(plan, shape, symbols)
            values.extend(shape)
            values.extend(strides)
        return values, keep, uploads

    def _device_array(self, plan: ArgPlan, a: Any, device: int) -> tuple[int, tuple[int, ...], tuple[int, ...], Any]:
        """(pointer, shape, element strides, keepalive) of a device array argument, after the
        checks only device arrays need (the dtype/ndim rule is NdArrayType.mismatch, as for numpy
        arrays; the GPU, where the process sees several). Any strides run in place (kiln.abi); C
        order when the array gives none."""
        where = self._binder.where(plan)
        dv = device_array(a)
        if dv is None:
            raise ArgumentError(f"{where}: expected a numpy.ndarray or a CUDA device array (__cuda_array_interface__ "
                                f"or DLPack) of {plan.type_name} with ndim={plan.ndim}, got {type(a).__name__}")
        ptr, shape, dt, byte_strides, keepalive = dv
        assert plan.array_type is not None
        problem = plan.array_type.mismatch(SCALARS_BY_NAME.get(dt), len(shape), dt, shape)
        if problem is not None:
            raise ArgumentError(f"{where}: {problem}")
        owner = _array_gpu(ptr)
        if owner is not None and owner != device:
            raise ArgumentError(f"{where}: the array is on GPU cuda:{owner}, this run is on cuda:{device} "
                                f"(move it, e.g. x.to('cuda:{device}'), or run with device='cuda:{owner}')")
        if byte_strides is None:
            return ptr, shape, contiguous_strides(shape), keepalive
        size = SCALARS_BY_NAME[dt].itemsize
        if any(s % size for s, n in zip(byte_strides, shape) if n > 1):
            raise ArgumentValueError(f"{where}: device array strides {byte_strides} are not whole elements")
        strides = tuple(s // size if n > 1 else 0 for s, n in zip(byte_strides, shape))
        if plan.needs_write and may_overlap_itself(shape, byte_strides, size):
            raise ArgumentValueError(f"{where}: the compiled code writes to this device array, but its strides "
                                     f"{byte_strides} make elements share memory (pass an array with distinct elements)")
        return ptr, shape, strides, keepalive

    def _upload(self, values: list[Any], keep: list[Any], uploads: list[tuple[np.ndarray, str]],
                stream: int, device: int) -> tuple[bytes, list[Any]]:
        """Copy numpy arguments to staging buffers; (run block, copy-backs [(array, dptr, nbytes)])."""
        b = self._binder
        copy_back: list[Any] = []
        if uploads:
            drv = driver()
            idx = {p.name: i for i, p in enumerate(b.plans)}
            pos = []
            k = 0
            for plan in b.plans:
                pos.append(k)
                k += 1 + 2 * plan.ndim if plan.array_type is not None else max(1, len(plan.parts))
            for a, name in uploads:
                nbytes = max(1, a.nbytes)
                dptr = self._staging_buffer((device, name), nbytes)
                if a.nbytes:
                    check(drv.cuMemcpyHtoDAsync(dptr, a.ctypes.data, a.nbytes, stream), "cuMemcpyHtoDAsync")
                values[pos[idx[name]]] = dptr
                plan = b.plans[idx[name]]
                if plan.needs_write and a.nbytes:
                    copy_back.append((a, dptr, a.nbytes))
            keep.append(uploads)
        return b.struct.pack(*values), copy_back

    def _staging_buffer(self, name: tuple[int, str], nbytes: int) -> int:
        have = self._staging.get(name)
        if have is not None and have[1] >= nbytes:
            return have[0]
        drv = driver()
        if have is not None:
            drv.cuMemFree(have[0])
        dptr = int(check(drv.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes})"))
        self._staging[name] = (dptr, nbytes)
        return dptr

    def node_block(self, node: Node, block: bytes) -> bytes:
        parts = []
        for g in node.gather:
            if isinstance(g, bytes):
                parts.append(g)
            else:
                parts.append(block[g[0]:g[0] + g[1]])
        return b"".join(parts)

    def grid(self, node: Node, kblock: bytes, lm: LoadedImage) -> int:
        if node.mode == "single":
            return 1
        max_grid = lm.max_grid[node.entry] * (node.waves if GRID_WAVES is None else GRID_WAVES)
        if node.count is None:
            return max_grid
        try:
            scalars, shapes = decode_block(node.kparams, kblock)
            total = 1
            for start, stop, step in node.count:
                s0, s1, st = (eval_host_expr(x, scalars, shapes) for x in (start, stop, step))
                total *= len(range(s0, s1, st)) if st else 0
        except Exception:  # noqa: BLE001 - a bound we cannot evaluate: the grid-stride loop covers it
            return max_grid
        return max(1, min(max_grid, -(-total // self.block_size)))

    # -- running ----------------------------------------------------------------------------
    def run(self, args: Mapping[str, Any], stream: Any = None, use_graph: bool = True,
            device: int | str | None = None) -> None:
        """Check all arguments, then launch on `stream` (default: the legacy default stream 0):
        an int handle, a CUstream, a torch.cuda.Stream, a CuPy stream or any object with
        `__cuda_stream__`, of the run's GPU (`device`: "cuda:N" or N; default: the module's).

        Device arrays are used in place and the call returns without synchronizing; numpy arrays
        are copied in, and those the code writes are copied back before run() returns (the
        stream alone is synchronised, never the device)."""
        device = self._module.device if device is None else device_ordinal(device)
        missing = [h for h in self._hidden if h not in args]
        if missing:   # the module's device fields (direct calls pass the Python field's own array)
            fields = self._module.device_fields(device)
            args = {**{h: fields[h[len(HIDDEN_PREFIX):]] for h in missing}, **args}
        if self._rng:
            args = with_rng(args, self._module.rng_state)
        values, keep, uploads = self._check_args(args, device)   # argument errors first, GPU or not
        lm = self._module.loaded(device)
        lm.dev.make_current()
        s = stream_handle(stream)
        block, copy_back = self._upload(values, keep, uploads, s, device)
        try:
            if lm.debug is not None:        # debug mode: launch by launch, the record read after each
                self._binder.check_overlaps(args)
                self._run_plain(lm, block, s, checked=True)
            elif use_graph and len(self.nodes) > 0:
                self._run_graph(lm, block, s)
            else:
                self._run_plain(lm, block, s)
        except (KernelIndexError, KernelZeroDivisionError):
            if lm.prints is not None:       # what ran before the failed check printed
                lm.prints.flush(s)
            raise
        if lm.prints is not None:
            lm.prints.flush(s)
        if copy_back:
            drv = driver()
            for a, dptr, nbytes in copy_back:
                check(drv.cuMemcpyDtoHAsync(a.ctypes.data, dptr, nbytes, s), "cuMemcpyDtoHAsync")
        if copy_back or any(isinstance(k, list) for k in keep):
            check(driver().cuStreamSynchronize(s), f"{self.owner}: cuStreamSynchronize")
        del keep

    def _run_plain(self, lm: LoadedImage, block: bytes, s: int, checked: bool = False) -> None:
        drv = driver()
        cache = self._plain.get(id(lm))
        if cache is None:
            cache = self._plain[id(lm)] = [None] * len(self.nodes)
        for i, node in enumerate(self.nodes):
            kb = self.node_block(node, block)
            c = cache[i]
            if c is None or c[0] != kb:       # same arguments as last time: reuse grid and params
                buf, ptrs, addr = node_params(node, kb)
                c = cache[i] = (kb, self.grid(node, kb, lm), buf, ptrs, addr,
                                1 if node.mode == "single" else self.block_size, lm.functions[node.entry])
            err = drv.cuLaunchKernel(c[6], c[1], 1, 1, c[5], 1, 1, 0, s, c[4], 0)
            if err[0] != drv.CUresult.CUDA_SUCCESS:
                check(err, f"{self.owner}: cuLaunchKernel({node.entry})")
            if checked and lm.debug is not None:
                failure = lm.debug.take_error(node.kernel, s)
                if failure is not None:         # nothing after the failing launch runs
                    raise failure

    def _run_graph(self, lm: LoadedImage, block: bytes, s: int) -> None:
        if self._image is not None:
            self._replay(lm, block, s)
            return
        key = (id(lm), self._array_key(block))
        ge = self._graphs.get(key)
        if ge is None:
            ge = self._cache_graph(key, lambda: GraphExec(self, lm, block))
        elif ge.block != block:
            assert isinstance(ge, GraphExec)
            ge.update(block)
        check(driver().cuGraphLaunch(ge.exec, s), f"{self.owner}: cuGraphLaunch")

    def _replay(self, lm: LoadedImage, block: bytes, s: int) -> None:
        """Replay the graph of this device, stream and grid sizes; the arguments travel in one
        copy to its device buffer, made only when they changed (kiln.runtime.cuda_graph)."""
        key = (id(lm), s, b"".join(block[o:o + n] for o, n in self._grid_deps))
        ge = self._graphs.get(key)
        if ge is None:
            assert self._image is not None
            image = self._image
            ge = self._cache_graph(key, lambda: BlockGraphExec(self, lm, image, block, s))
        assert isinstance(ge, BlockGraphExec)
        ge.launch(block, s)

    def _cache_graph(self, key: Any, build: Any) -> Any:
        if len(self._graphs) >= 64:            # bound the cache: drop the oldest
            old = next(iter(self._graphs))
            self._graphs.pop(old).destroy()
        ge = self._graphs[key] = build()
        return ge

    def _array_key(self, block: bytes) -> bytes:
        parts = []
        for p in self.params:
            lay = p.layout
            if lay.kind == "ndarray":
                parts.append(block[lay.offset:lay.offset + lay.size])
        return b"".join(parts)


class CudaGraph(CudaRunnable):
    """A compiled graph on the GPU: `run(args, stream=None, use_graph=True)` (see module doc)."""

    def __repr__(self) -> str:
        return f"<CudaGraph {self.name!r} launches={len(self.nodes)}>"


class CudaKernel(CudaRunnable):
    """A standalone kernel on the GPU: `k(*args, stream=None)` or `k.run({...})`. Plain launches
    (use_graph=False) by default: a single kernel gains nothing from a CUDA graph."""

    def __init__(self, module: CudaModule, owner: str, params: tuple[ParamInfo, ...], kname: str) -> None:
        super().__init__(module, owner, params, [(kname, tuple(Binding("arg", arg=p.layout.name) for p in params))])
        # the binder's names: a vector or matrix argument is one name, not one per element
        self._names = tuple(n for n in self._binder.names if not n.startswith(HIDDEN_PREFIX))

    def run(self, args: Mapping[str, Any], stream: Any = None, use_graph: bool = False,
            device: int | str | None = None) -> None:
        super().run(args, stream=stream, use_graph=use_graph, device=device)

    def __call__(self, *args: Any, stream: Any = None, **kwargs: Any) -> None:
        self.run(bind_call_arguments(self.owner, self._names, args, kwargs), stream=stream)

    def __repr__(self) -> str:
        return f"<CudaKernel {self.name!r} launches={len(self.nodes)}>"


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_bytes(data: bytes, source: str = "<bytes>", device: int | str = 0,
               container: Container | None = None) -> CudaModule:
    """Verify a .kiln file held in memory and wrap its cuda target for GPU `device` ("cuda:N"
    or N; no driver call yet). `container`: the file already unpacked (checksums verified)."""
    if container is None:
        container = unpack(data, source=source)
    try:
        manifest = Manifest.from_json(container.manifest, set(container.blobs))
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from None
    return CudaModule(data, container, manifest, source, device)


def load_module(path: str | os.PathLike[str] | Any, device: int | str = 0) -> CudaModule:
    """Open a .kiln file (a path, bytes, or an object with `to_bytes()` such as a CompiledModule)
    for GPU `device` ("cuda:N" or N)."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return load_bytes(bytes(path), device=device)
    if hasattr(path, "to_bytes"):
        return load_bytes(path.to_bytes(), source="<compiled module>", device=device)
    if hasattr(path, "_module") and hasattr(path._module, "to_bytes"):
        return load_bytes(path._module.to_bytes(), source="<compiled module>", device=device)
    source = os.fspath(path)
    return load_bytes(read_bytes(source), source, device)


def load(path: str | os.PathLike[str] | Any, device: int | str = 0) -> CudaGraph:
    """Open a .kiln file holding one graph for GPU `device` and return that graph."""
    return only_graph(load_module(path, device))


def only_graph(m: CudaModule) -> CudaGraph:
    """The one graph of a module (ArtifactError when it holds another number)."""
    if len(m.graphs) != 1:
        raise ArtifactError(f"{m.source}: holds {len(m.graphs)} graphs; use load_module() and pick one")
    return next(iter(m.graphs.values()))


def _unpickle(data: bytes, kind: str, name: str, device: int) -> Any:
    """Rebuild a pickled CudaModule ("module"), CudaGraph ("graph") or CudaKernel ("kernel")."""
    return unpickled_member(load_bytes(data, source="<unpickled>", device=device), kind, name)


def _array_gpu(ptr: int) -> int | None:
    """The GPU a device array's memory is on, asked of the driver only where the process sees
    several GPUs (with one, every device array is on it); None when unknown or no driver."""
    try:
        if device_count() < 2:
            return None
    except CudaError:
        return None
    return pointer_device(ptr)


__all__ = ["GRID_WAVES", "CudaGraph", "CudaKernel", "CudaModule", "cuda_available", "device_array", "driver",
           "eval_host_expr", "load", "load_bytes", "load_module", "pick_image"]
