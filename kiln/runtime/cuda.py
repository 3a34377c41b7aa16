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

Graphs run as CUDA graphs: built once per distinct set of array pointers and shapes (kernel nodes
in dispatch order), instantiated and replayed with one cuGraphLaunch; when only scalars change,
the affected nodes are updated in place with cuGraphExecKernelNodeSetParams. `use_graph=False`
launches each kernel with cuLaunchKernel instead.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from kiln.abi import SCALAR_FORMAT, SLOT, block_size
from kiln.artifact.container import Container, read_bytes, unpack, write_bytes
from kiln.artifact.manifest import Manifest, ParamInfo, TargetInfo
from kiln.errors import ArgumentError, ArgumentValueError, ArtifactError, CudaError

_ARRAY = 0
#: override of the grid cap of every grid-stride launch, in full waves of resident blocks
#: (None: the manifest's per-launch `waves`, default 1)
GRID_WAVES: int | None = None

# ---------------------------------------------------------------------------------------------
# Driver access
# ---------------------------------------------------------------------------------------------

_drv: Any = None


def driver() -> Any:
    """`cuda.bindings.driver`, initialised (cuInit); CudaError if it cannot be."""
    global _drv
    if _drv is not None:
        return _drv
    from kiln._extras import require
    try:
        drv = require("cuda.bindings.driver", extra="cuda", purpose="the cuda target")
    except CudaError:   # MissingCudaExtraError: already names the install command
        raise
    except Exception as e:  # noqa: BLE001 - e.g. libcuda missing at import time
        raise CudaError(f"cannot load the CUDA driver bindings: {e}") from None
    try:
        (err,) = drv.cuInit(0)
    except Exception as e:  # noqa: BLE001 - libcuda.so not found
        raise CudaError(f"no CUDA driver on this machine (libcuda.so could not be loaded: {e})") from None
    if err != drv.CUresult.CUDA_SUCCESS:
        if err == drv.CUresult.CUDA_ERROR_NO_DEVICE:
            raise CudaError("no CUDA GPU is visible on this machine (cuInit: CUDA_ERROR_NO_DEVICE)")
        raise CudaError(f"cannot initialise the CUDA driver: cuInit returned {_err_name(drv, err)} "
                        "(no GPU, or no/old NVIDIA driver)")
    _drv = drv
    return drv


def _err_name(drv: Any, err: Any) -> str:
    try:
        e2, name = drv.cuGetErrorName(err)
        return name.decode() if e2 == drv.CUresult.CUDA_SUCCESS else str(err)
    except Exception:  # noqa: BLE001
        return str(err)


def _check(res: Any, what: str) -> Any:
    """Unpack a cuda-bindings result tuple, raising CudaError on failure."""
    drv = _drv
    err = res[0] if isinstance(res, tuple) else res
    if err != drv.CUresult.CUDA_SUCCESS:
        raise CudaError(f"{what} failed: {_err_name(drv, err)}")
    if isinstance(res, tuple):
        return res[1] if len(res) == 2 else res[1:]
    return None


def cuda_available() -> str | None:
    """None when a CUDA GPU can run kiln code here, else why not."""
    try:
        drv = driver()
        n = _check(drv.cuDeviceGetCount(), "cuDeviceGetCount")
        if n < 1:
            return "no CUDA GPU is visible"
    except CudaError as e:
        return str(e)
    return None


class _Device:
    """The primary context of one GPU and what kiln needs to know about it."""

    _all: ClassVar[dict[int, _Device]] = {}

    def __init__(self, ordinal: int) -> None:
        drv = driver()
        n = _check(drv.cuDeviceGetCount(), "cuDeviceGetCount")
        if not 0 <= ordinal < n:
            raise CudaError(f"CUDA device {ordinal} does not exist ({n} visible)")
        self.dev = _check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
        self.ctx = _check(drv.cuDevicePrimaryCtxRetain(self.dev), "cuDevicePrimaryCtxRetain")
        attr = drv.CUdevice_attribute
        self.cc = (_check(drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.dev), "attr"),
                   _check(drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.dev), "attr"))
        self.sm_count = _check(drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, self.dev),
                               "attr")
        self.ordinal = ordinal

    @classmethod
    def get(cls, ordinal: int) -> _Device:
        d = cls._all.get(ordinal)
        if d is None:
            d = cls._all[ordinal] = _Device(ordinal)
        return d

    def make_current(self) -> None:
        drv = _drv
        cur = _check(drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if int(cur) != int(self.ctx):
            _check(drv.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    @property
    def arch(self) -> str:
        return f"sm_{self.cc[0]}{self.cc[1]}"


def pick_image(cc: tuple[int, int], cubins: dict[str, str], ptx: str | None, ptx_arch: str,
               source: str = "") -> tuple[str, str]:
    """(kind, blob name): the best code for a GPU of compute capability `cc`: an exact cubin, else
    a cubin of the same major and a lower minor (the highest), else the PTX (driver JIT) when the
    GPU is at least the PTX's target. CudaError when nothing fits."""
    want = f"sm_{cc[0]}{cc[1]}"
    if want in cubins:
        return f"cubin {want}", cubins[want]
    same_major = []
    for arch in cubins:
        try:
            maj, mnr = _parse_arch(arch)
        except ValueError:
            continue
        if maj == cc[0] and mnr <= cc[1]:
            same_major.append((mnr, arch))
    if same_major:
        arch = max(same_major)[1]
        return f"cubin {arch}", cubins[arch]
    if ptx is not None and _parse_arch(ptx_arch) <= cc:
        return f"ptx {ptx_arch} (driver JIT)", ptx
    have = sorted(cubins) + ([f"PTX for {ptx_arch}+"] if ptx is not None else [])
    raise CudaError(f"{source}: no code in this file runs on this GPU ({want}); the file holds "
                    f"{', '.join(have) or 'nothing for CUDA'}. Recompile with cuda_archs=[{want!r}, ...]")


def _parse_arch(arch: str) -> tuple[int, int]:
    digits = arch.removeprefix("sm_").rstrip("af")
    if not digits.isdigit() or len(digits) < 2:
        raise ValueError(arch)
    return int(digits[:-1]), int(digits[-1])


# ---------------------------------------------------------------------------------------------
# Array interop
# ---------------------------------------------------------------------------------------------

_DL_TYPES = {(0, 8): "i8", (0, 16): "i16", (0, 32): "i32", (0, 64): "i64", (1, 8): "u8", (1, 16): "u16",
             (1, 32): "u32", (1, 64): "u64", (2, 16): "f16", (2, 32): "f32", (2, 64): "f64", (6, 8): "bool"}
_NP_TO_KILN = {"b1": "bool", "i1": "i8", "i2": "i16", "i4": "i32", "i8": "i64", "u1": "u8", "u2": "u16",
               "u4": "u32", "u8": "u64", "f2": "f16", "f4": "f32", "f8": "f64"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_PyCapsule_GetPointer = ctypes.pythonapi.PyCapsule_GetPointer
_PyCapsule_GetPointer.restype = ctypes.c_void_p
_PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def device_array(a: Any) -> tuple[int, tuple[int, ...], str, bool, Any] | None:
    """(pointer, shape, kiln dtype, c_contiguous, keepalive) of a CUDA device array, or None when
    `a` is not one. Reads `__cuda_array_interface__` first, then DLPack."""
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        shape = tuple(int(s) for s in cai["shape"])
        typestr = cai["typestr"]
        dt = _NP_TO_KILN.get(np.dtype(typestr).str[1:], np.dtype(typestr).name)
        strides = cai.get("strides")
        contig = strides is None or _is_c_contig(shape, strides, np.dtype(typestr).itemsize)
        return int(cai["data"][0] or 0), shape, dt, contig, a
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__") and not isinstance(a, np.ndarray):
        dev_type, _ = a.__dlpack_device__()
        if int(dev_type) not in (2, 13):   # kDLCUDA, kDLCUDAManaged
            return None
        cap = a.__dlpack__(stream=None) if _accepts_stream(a) else a.__dlpack__()
        ptr = _PyCapsule_GetPointer(cap, b"dltensor")
        t = _DLTensor.from_address(ptr)        # DLManagedTensor starts with its DLTensor
        shape = tuple(t.shape[i] for i in range(t.ndim))
        dt = _DL_TYPES.get((t.dtype.code, t.dtype.bits), f"dlpack({t.dtype.code},{t.dtype.bits})")
        itemsize = max(1, t.dtype.bits // 8)
        strides = None if not t.strides else tuple(t.strides[i] * itemsize for i in range(t.ndim))
        contig = strides is None or _is_c_contig(shape, strides, itemsize)
        return int((t.data or 0) + t.byte_offset), shape, dt, contig, cap
    return None


def _accepts_stream(a: Any) -> bool:
    return type(a).__module__.split(".")[0] in ("torch", "cupy", "jax", "jaxlib")


def _is_c_contig(shape: tuple[int, ...], strides: Any, itemsize: int) -> bool:
    expect = itemsize
    for n, s in zip(reversed(shape), reversed(tuple(strides))):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def _stream_handle(stream: Any) -> int:
    if stream is None:
        return 0
    if isinstance(stream, int):
        return stream
    if hasattr(stream, "__cuda_stream__"):
        return int(stream.__cuda_stream__()[1])
    for attr in ("cuda_stream", "ptr", "handle"):
        v = getattr(stream, attr, None)
        if isinstance(v, int):
            return v
    try:
        return int(stream)          # CUstream supports int()
    except (TypeError, ValueError):
        raise ArgumentError(f"stream: expected an int handle, a CUstream or a stream object, got "
                            f"{type(stream).__name__}") from None


# ---------------------------------------------------------------------------------------------
# Modules, graphs, kernels
# ---------------------------------------------------------------------------------------------

class _Loaded:
    """A module loaded into one context: functions by PTX entry name."""

    def __init__(self, module: CudaModule, dev: _Device) -> None:
        drv = driver()
        self.dev = dev
        dev.make_current()
        kind, blob = pick_image(dev.cc, module.cubins, module.ptx_blob, module.target.cpu, module.source)
        image = bytes(module._container.blobs[blob])
        if blob == module.ptx_blob:
            image += b"\0"
        self.image_kind = kind
        self.mod = _check(drv.cuModuleLoadData(image), f"{module.source}: loading {kind} (cuModuleLoadData)")
        self.functions: dict[str, Any] = {}
        #: per entry: the largest useful grid, i.e. one full wave of resident blocks (a grid-stride
        #: loop gains nothing from more, and a partial second wave would be a long tail)
        self.max_grid: dict[str, int] = {}
        for launches in module.launches.values():
            for ln in launches:
                e = ln["entry"]
                if e not in self.functions:
                    f = _check(drv.cuModuleGetFunction(self.mod, e.encode()),
                               f"{module.source}: cuModuleGetFunction({e})")
                    self.functions[e] = f
                    try:
                        occ = _check(drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(f, module.block, 0),
                                     "cuOccupancyMaxActiveBlocksPerMultiprocessor")
                    except CudaError:
                        occ = 2048 // module.block
                    self.max_grid[e] = max(1, dev.sm_count * max(1, int(occ)))


class CudaModule:
    """The cuda target of a .kiln file. Loading into the GPU happens at the first run, once per
    device (primary context)."""

    def __init__(self, data: bytes, container: Container, manifest: Manifest, source: str) -> None:
        cudas = [t for t in manifest.targets if t.kind == "cuda"]
        if not cudas:
            kinds = ", ".join(sorted({t.kind for t in manifest.targets}))
            raise CudaError(f"{source}: the file has no cuda target (targets: {kinds}); compile with "
                            "targets=['cpu', 'cuda']")
        self.target: TargetInfo = cudas[0]
        self.source = source
        self.manifest = manifest
        self._data = data
        self._container = container
        doc = container.manifest.get("cuda")
        if not isinstance(doc, dict) or not isinstance(doc.get("launches"), dict):
            raise ArtifactError(f"{source}: manifest: cuda: the launch table is missing")
        self.block = int(doc.get("block_size", 256))
        if not 1 <= self.block <= 1024:
            raise ArtifactError(f"{source}: manifest: cuda.block_size: {self.block} is out of range")
        blobs = set(self.target.blobs)
        self.ptx_blob = doc.get("ptx") if doc.get("ptx") in blobs else None
        self.cubins = {a: b for a, b in dict(doc.get("cubins", {})).items() if b in blobs}
        self.cubins_missing = doc.get("cubins_missing")
        self.launches: dict[str, list[dict[str, Any]]] = {}
        for kname in manifest.kernels:
            ls = doc["launches"].get(kname)
            if not isinstance(ls, list) or not ls or not all(
                    isinstance(x, dict) and isinstance(x.get("entry"), str) and x.get("mode") in ("loop", "single")
                    for x in ls):
                raise ArtifactError(f"{source}: manifest: cuda.launches.{kname}: missing or malformed")
            self.launches[kname] = ls
        self._loaded: dict[int, _Loaded] = {}
        self.graphs = {name: CudaGraph(self, f"graph {name!r}", g.params,
                                       [(d.kernel, tuple(d.bindings)) for d in g.dispatches])
                       for name, g in manifest.graphs.items()}
        self.kernels = {}
        for name, kname in manifest.exported_kernels.items():
            k = manifest.kernels[kname]
            self.kernels[name] = CudaKernel(self, f"kernel {name!r}", k.params, kname)

    def loaded(self, device: int = 0) -> _Loaded:
        lm = self._loaded.get(device)
        if lm is None:
            lm = self._loaded[device] = _Loaded(self, _Device.get(device))
        return lm

    def image_kind(self, device: int = 0) -> str:
        """Which code the GPU runs: 'cubin sm_90' or 'ptx sm_80 (driver JIT)' (loads the module)."""
        return self.loaded(device).image_kind

    def save(self, path: str | os.PathLike[str]) -> None:
        write_bytes(path, self._data)

    def to_bytes(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return (f"<CudaModule ptx={self.target.cpu} cubins={sorted(self.cubins)} graphs={sorted(self.graphs)} "
                f"kernels={sorted(self.kernels)}>")


class _Node:
    """One kernel launch of a run: function, grid, and its argument block gathered from the run's
    block (graph args) and constants."""

    __slots__ = ("entry", "mode", "count", "waves", "gather", "kparams", "nslots")

    def __init__(self, entry: str, mode: str, count: Any, gather: list[Any], kparams: tuple[ParamInfo, ...],
                 waves: int = 1) -> None:
        self.entry = entry
        self.mode = mode
        self.count = count
        self.waves = waves
        self.gather = gather          # per kernel param: (src_offset, size) or bytes
        self.kparams = kparams
        self.nslots = block_size([p.layout for p in kparams]) // SLOT


class _Runnable:
    def __init__(self, module: CudaModule, owner: str, params: tuple[ParamInfo, ...],
                 dispatches: list[tuple[str, tuple[Any, ...]]]) -> None:
        from kiln.runtime.binding import ArgBinder

        self._module = module
        self._owner = owner
        self._binder = ArgBinder(params, owner)
        self.params = params
        self._offsets = {p.layout.name: p.layout for p in params}
        self._nodes: list[_Node] = []
        for kname, bindings in dispatches:
            kinfo = module.manifest.kernels[kname]
            gather: list[Any] = []
            for kp, b in zip(kinfo.params, bindings):
                if b.kind == "arg":
                    gl = self._offsets[b.arg]
                    gather.append((gl.offset, gl.size, b.arg))
                else:
                    raw = struct.pack("<" + SCALAR_FORMAT[kp.layout.dtype], b.value)
                    gather.append(raw)
            for ln in module.launches[kname]:
                waves = ln.get("waves", 1)
                waves = waves if isinstance(waves, int) and 1 <= waves <= 1024 else 1
                self._nodes.append(_Node(ln["entry"], ln["mode"], ln.get("count"), gather, kinfo.params, waves))
        self._graphs: dict[Any, _GraphExec] = {}
        self._plain: dict[int, list[Any]] = {}
        self._staging: dict[str, tuple[int, int]] = {}     # numpy param -> (device ptr, bytes)
        self.args = params

    # -- argument handling -----------------------------------------------------------------
    def _check_args(self, args: Mapping[str, Any]) -> tuple[list[Any], list[Any], list[tuple[np.ndarray, str]]]:
        """Every argument check, before anything touches the GPU: (block values with numpy arrays'
        pointers still to be filled, keepalive, numpy arrays to upload)."""
        b = self._binder
        if not isinstance(args, Mapping):
            raise ArgumentError(f"{self._owner}: run() takes a dict of named arguments, got {type(args).__name__}")
        if len(args) != len(b.names) or not b.name_set.issuperset(args):
            b._check_names(args)
        values: list[Any] = []
        symbols: dict[str, int] = {}
        keep: list[Any] = []
        uploads: list[tuple[np.ndarray, str]] = []
        for plan in b.plans:
            a = args[plan.name]
            if plan.kind != _ARRAY:
                values.append(b._scalar(plan, a))
                continue
            if isinstance(a, np.ndarray):
                if a.dtype != plan.dtype:
                    raise ArgumentError(f"{self._owner}: argument {plan.name!r}: expected dtype {plan.type_name}, "
                                        f"got {a.dtype} (kiln never converts arrays)")
                if a.ndim != plan.ndim:
                    raise ArgumentError(f"{self._owner}: argument {plan.name!r}: expected a {plan.ndim}-D array, "
                                        f"got {a.ndim}-D with shape {a.shape}")
                if not a.flags.c_contiguous:
                    raise ArgumentValueError(f"{self._owner}: argument {plan.name!r}: array is not C-contiguous")
                if plan.needs_write and not a.flags.writeable:
                    raise ArgumentValueError(f"{self._owner}: argument {plan.name!r}: array is read-only but the "
                                             "compiled code writes to it")
                if plan.shape is not None:
                    b._check_shape(plan, a.shape, symbols)
                uploads.append((a, plan.name))
                values.append(0)                 # patched below
                values.extend(a.shape)
                continue
            dv = device_array(a)
            if dv is None:
                raise ArgumentError(f"{self._owner}: argument {plan.name!r}: expected a numpy.ndarray or a CUDA "
                                    f"device array (__cuda_array_interface__ or DLPack) of {plan.type_name} with "
                                    f"ndim={plan.ndim}, got {type(a).__name__}")
            ptr, shape, dt, contig, ka = dv
            if dt != plan.type_name:
                raise ArgumentError(f"{self._owner}: argument {plan.name!r}: expected dtype {plan.type_name}, got "
                                    f"{dt} (kiln never converts arrays)")
            if len(shape) != plan.ndim:
                raise ArgumentError(f"{self._owner}: argument {plan.name!r}: expected a {plan.ndim}-D array, got "
                                    f"{len(shape)}-D with shape {shape}")
            if not contig:
                raise ArgumentValueError(f"{self._owner}: argument {plan.name!r}: device array is not C-contiguous "
                                         "(pass x.contiguous() / cupy.ascontiguousarray(x))")
            if plan.shape is not None:
                b._check_shape(plan, shape, symbols)
            keep.append(ka)
            values.append(ptr)
            values.extend(shape)
        return values, keep, uploads

    def _upload(self, values: list[Any], keep: list[Any], uploads: list[tuple[np.ndarray, str]],
                stream: int) -> tuple[bytes, list[Any]]:
        """Copy numpy arguments to staging buffers; (run block, copy-backs [(array, dptr, nbytes)])."""
        b = self._binder
        copy_back: list[Any] = []
        if uploads:
            drv = _drv
            idx = {p.name: i for i, p in enumerate(b.plans)}
            pos = []
            k = 0
            for plan in b.plans:
                pos.append(k)
                k += 1 + plan.ndim if plan.kind == _ARRAY else 1
            for a, name in uploads:
                nbytes = max(1, a.nbytes)
                dptr = self._staging_buffer(name, nbytes)
                if a.nbytes:
                    _check(drv.cuMemcpyHtoDAsync(dptr, a.ctypes.data, a.nbytes, stream), "cuMemcpyHtoDAsync")
                values[pos[idx[name]]] = dptr
                plan = b.plans[idx[name]]
                if plan.needs_write and a.nbytes:
                    copy_back.append((a, dptr, a.nbytes))
            keep.append(uploads)
        return b.struct.pack(*values), copy_back

    def _staging_buffer(self, name: str, nbytes: int) -> int:
        have = self._staging.get(name)
        if have is not None and have[1] >= nbytes:
            return have[0]
        drv = _drv
        if have is not None:
            drv.cuMemFree(have[0])
        dptr = int(_check(drv.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes})"))
        self._staging[name] = (dptr, nbytes)
        return dptr

    def _node_block(self, node: _Node, block: bytes) -> bytes:
        parts = []
        for g in node.gather:
            if isinstance(g, bytes):
                parts.append(g)
            else:
                parts.append(block[g[0]:g[0] + g[1]])
        return b"".join(parts)

    def _grid(self, node: _Node, kblock: bytes, lm: _Loaded) -> int:
        if node.mode == "single":
            return 1
        max_grid = lm.max_grid[node.entry] * (node.waves if GRID_WAVES is None else GRID_WAVES)
        if node.count is None:
            return max_grid
        try:
            scalars, shapes = _decode_block(node.kparams, kblock)
            total = 1
            for start, stop, step in node.count:
                s0, s1, st = (eval_host_expr(x, scalars, shapes) for x in (start, stop, step))
                total *= len(range(s0, s1, st)) if st else 0
        except Exception:  # noqa: BLE001 - a bound we cannot evaluate: the grid-stride loop covers it
            return max_grid
        return max(1, min(max_grid, -(-total // self._module.block)))

    # -- running ----------------------------------------------------------------------------
    def run(self, args: Mapping[str, Any], stream: Any = None, use_graph: bool = True, device: int = 0) -> None:
        """Check all arguments, then launch on `stream` (default: the legacy default stream 0).

        Device arrays are used in place and the call returns without synchronizing; numpy arrays
        are copied in, and those the code writes are copied back before run() returns."""
        values, keep, uploads = self._check_args(args)   # argument errors first, GPU or not
        lm = self._module.loaded(device)
        lm.dev.make_current()
        s = _stream_handle(stream)
        block, copy_back = self._upload(values, keep, uploads, s)
        if use_graph and len(self._nodes) > 0:
            self._run_graph(lm, block, s)
        else:
            self._run_plain(lm, block, s)
        if copy_back:
            drv = _drv
            for a, dptr, nbytes in copy_back:
                _check(drv.cuMemcpyDtoHAsync(a.ctypes.data, dptr, nbytes, s), "cuMemcpyDtoHAsync")
        if copy_back or any(isinstance(k, list) for k in keep):
            _check(_drv.cuStreamSynchronize(s), f"{self._owner}: cuStreamSynchronize")
        del keep

    def _run_plain(self, lm: _Loaded, block: bytes, s: int) -> None:
        drv = _drv
        cache = self._plain.get(id(lm))
        if cache is None:
            cache = self._plain[id(lm)] = [None] * len(self._nodes)
        for i, node in enumerate(self._nodes):
            kb = self._node_block(node, block)
            c = cache[i]
            if c is None or c[0] != kb:       # same arguments as last time: reuse grid and params
                buf, ptrs = _param_array(kb, node.nslots)
                c = cache[i] = (kb, self._grid(node, kb, lm), buf, ptrs,
                                ctypes.addressof(ptrs) if node.nslots else 0,
                                1 if node.mode == "single" else self._module.block, lm.functions[node.entry])
            err = drv.cuLaunchKernel(c[6], c[1], 1, 1, c[5], 1, 1, 0, s, c[4], 0)
            if err[0] != drv.CUresult.CUDA_SUCCESS:
                _check(err, f"{self._owner}: cuLaunchKernel({node.entry})")

    def _run_graph(self, lm: _Loaded, block: bytes, s: int) -> None:
        key = (id(lm), self._array_key(block))
        ge = self._graphs.get(key)
        if ge is None:
            if len(self._graphs) >= 64:            # bound the cache: drop the oldest
                old = next(iter(self._graphs))
                self._graphs.pop(old).destroy()
            ge = self._graphs[key] = _GraphExec(self, lm, block)
        elif ge.block != block:
            ge.update(block)
        _check(_drv.cuGraphLaunch(ge.exec, s), f"{self._owner}: cuGraphLaunch")

    def _array_key(self, block: bytes) -> bytes:
        parts = []
        for p in self.params:
            lay = p.layout
            if lay.kind == "ndarray":
                parts.append(block[lay.offset:lay.offset + lay.size])
        return b"".join(parts)


def eval_host_expr(x: Any, scalars: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> int:
    """Evaluate a launch-count expression tree written by kiln.codegen.nvptx (manifest cuda.launches)."""
    op = x[0]
    if op == "const":
        return int(x[1])
    if op == "shape":
        return int(shapes[x[1]][x[2]])
    if op == "arg":
        return int(scalars[x[1]])
    if op == "int":
        return int(eval_host_expr(x[1], scalars, shapes))
    vals = [eval_host_expr(a, scalars, shapes) for a in x[1:]]
    if op == "+":
        return vals[0] + vals[1]
    if op == "-":
        return vals[0] - vals[1]
    if op == "*":
        return vals[0] * vals[1]
    if op == "//":
        return vals[0] // vals[1] if vals[1] else 0
    if op == "%":
        return vals[0] % vals[1] if vals[1] else 0
    if op == "min":
        return min(vals)
    if op == "max":
        return max(vals)
    raise ValueError(f"unknown host expression {op!r}")



def _param_array(kb: bytes, nslots: int) -> tuple[Any, Any]:
    buf = ctypes.create_string_buffer(kb, max(8, len(kb)))
    base = ctypes.addressof(buf)
    ptrs = (ctypes.c_void_p * max(1, nslots))(*[base + SLOT * k for k in range(nslots)])
    return buf, ptrs


def _decode_block(kparams: tuple[ParamInfo, ...], kb: bytes) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    scalars: dict[str, Any] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for p in kparams:
        lay = p.layout
        if lay.kind == "ndarray":
            shapes[lay.name] = struct.unpack_from(f"<{lay.ndim}q", kb, lay.offset + SLOT)
        else:
            scalars[lay.name] = struct.unpack_from("<" + SCALAR_FORMAT[lay.dtype], kb, lay.offset)[0]
    return scalars, shapes


class _GraphExec:
    """A CUDA graph of one run's kernel nodes (one per launch, chained), instantiated."""

    def __init__(self, r: _Runnable, lm: _Loaded, block: bytes) -> None:
        drv = _drv
        self.r = r
        self.lm = lm
        self.block = block
        self.graph = _check(drv.cuGraphCreate(0), "cuGraphCreate")
        self.nodes: list[Any] = []
        self.node_blocks: list[bytes] = []
        self.node_params: list[tuple[Any, Any, Any]] = []   # (CUDA_KERNEL_NODE_PARAMS, buffer, pointers)
        prev = None
        for node in r._nodes:
            kb = r._node_block(node, block)
            grid = r._grid(node, kb, lm)
            params = self._params(node, kb, grid)
            deps = [prev] if prev is not None else None
            gnode = _check(drv.cuGraphAddKernelNode(self.graph, deps, 1 if deps else 0, params[0]),
                           f"{r._owner}: cuGraphAddKernelNode({node.entry})")
            self.nodes.append(gnode)
            self.node_blocks.append(kb)
            self.node_params.append(params)
            prev = gnode
        self.exec = _check(drv.cuGraphInstantiate(self.graph, 0), f"{r._owner}: cuGraphInstantiate")

    def _params(self, node: _Node, kb: bytes, grid: int) -> tuple[Any, Any, Any]:
        drv = _drv
        p = drv.CUDA_KERNEL_NODE_PARAMS()
        p.func = self.lm.functions[node.entry]
        p.gridDimX, p.gridDimY, p.gridDimZ = grid, 1, 1
        p.blockDimX = 1 if node.mode == "single" else self.r._module.block
        p.blockDimY = p.blockDimZ = 1
        p.sharedMemBytes = 0
        buf, ptrs = _param_array(kb, node.nslots)
        p.kernelParams = ctypes.addressof(ptrs) if node.nslots else 0
        p.extra = 0
        return p, buf, ptrs           # the driver copies the values on each call that takes p

    def update(self, block: bytes) -> None:
        """Only scalars changed (array pointers and shapes are the cache key): update the nodes
        whose argument blocks differ, in place (the node's parameter buffer is rewritten and handed
        to cuGraphExecKernelNodeSetParams again)."""
        drv = _drv
        r = self.r
        for i, node in enumerate(r._nodes):
            kb = r._node_block(node, block)
            if kb == self.node_blocks[i]:
                continue
            p, buf, _ptrs = self.node_params[i]
            ctypes.memmove(buf, kb, len(kb))
            if node.count is not None:
                grid = r._grid(node, kb, self.lm)
                if grid != p.gridDimX:
                    p.gridDimX = grid
            err = drv.cuGraphExecKernelNodeSetParams(self.exec, self.nodes[i], p)
            if err[0] != drv.CUresult.CUDA_SUCCESS:
                _check(err, f"{r._owner}: cuGraphExecKernelNodeSetParams")
            self.node_blocks[i] = kb
        self.block = block

    def destroy(self) -> None:
        drv = _drv
        try:
            drv.cuGraphExecDestroy(self.exec)
            drv.cuGraphDestroy(self.graph)
        except Exception:  # noqa: BLE001, S110 - best effort at teardown
            pass


class CudaGraph(_Runnable):
    """A compiled graph on the GPU: `run(args, stream=None, use_graph=True)` (see module doc)."""

    def __init__(self, module: CudaModule, owner: str, params: tuple[ParamInfo, ...],
                 dispatches: list[tuple[str, tuple[Any, ...]]]) -> None:
        super().__init__(module, owner, params, dispatches)
        self.name = owner.split("'")[1]

    def save(self, path: str | os.PathLike[str]) -> None:
        self._module.save(path)

    def __repr__(self) -> str:
        return f"<CudaGraph {self.name!r} launches={len(self._nodes)}>"


class CudaKernel(_Runnable):
    """A standalone kernel on the GPU: `k(*args, stream=None)` or `k.run({...})`. Plain launches
    (use_graph=False) by default: a single kernel gains nothing from a CUDA graph."""

    def __init__(self, module: CudaModule, owner: str, params: tuple[ParamInfo, ...], kname: str) -> None:
        from kiln.artifact.manifest import Binding
        super().__init__(module, owner, params, [(kname, tuple(Binding("arg", arg=p.layout.name) for p in params))])
        self._names = tuple(p.layout.name for p in params)

    def run(self, args: Mapping[str, Any], stream: Any = None, use_graph: bool = False, device: int = 0) -> None:
        super().run(args, stream=stream, use_graph=use_graph, device=device)

    def __call__(self, *args: Any, stream: Any = None, **kwargs: Any) -> None:
        from kiln.runtime.binding import named_arguments
        self.run(named_arguments(self._owner, self._names, args, kwargs), stream=stream)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_bytes(data: bytes, source: str = "<bytes>") -> CudaModule:
    """Verify a .kiln file held in memory and wrap its cuda target (no driver call yet)."""
    container = unpack(data, source=source)
    try:
        manifest = Manifest.from_json(container.manifest, set(container.blobs))
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from None
    return CudaModule(data, container, manifest, source)


def load_module(path: str | os.PathLike[str] | Any) -> CudaModule:
    """Open a .kiln file (a path, bytes, or an object with `to_bytes()` such as a CompiledModule)
    for the GPU."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return load_bytes(bytes(path))
    if hasattr(path, "to_bytes"):
        return load_bytes(path.to_bytes(), source="<compiled module>")
    if hasattr(path, "_module") and hasattr(path._module, "to_bytes"):
        return load_bytes(path._module.to_bytes(), source="<compiled module>")
    source = os.fspath(path)
    return load_bytes(read_bytes(source), source)


def load(path: str | os.PathLike[str] | Any) -> CudaGraph:
    """Open a .kiln file holding one graph for the GPU and return that graph."""
    m = load_module(path)
    if len(m.graphs) != 1:
        raise ArtifactError(f"{m.source}: holds {len(m.graphs)} graphs; use load_module() and pick one")
    return next(iter(m.graphs.values()))


__all__ = ["CudaGraph", "CudaKernel", "CudaModule", "cuda_available", "device_array", "load", "load_bytes",
           "load_module", "pick_image"]

