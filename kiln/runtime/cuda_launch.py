"""Launching kiln kernels on a GPU: a module image loaded into a context, the launch nodes of a
run, the launch-count expressions that size grids, and CUDA graphs replayed across runs."""

from __future__ import annotations

import ctypes
import struct
from typing import Any, Protocol

from kiln.abi import SCALAR_FORMAT, SLOT, block_size
from kiln.artifact.manifest import CudaLaunch, ParamInfo
from kiln.errors import CudaError, KilnError
from kiln.runtime import print_buffer
from kiln.runtime.cuda_driver import Device, check, driver
from kiln.runtime.debug_record import MAX_TABLE, RECORD, RECORD_SLOTS, TABLE, describe, parse_table


class LoadedImage:
    """A module image (cubin or PTX) loaded into one device's context: functions by PTX entry
    name, and per entry the largest useful grid, i.e. one full wave of resident blocks (a
    grid-stride loop gains nothing from more, and a partial second wave would be a long tail)."""

    def __init__(self, dev: Device, image: bytes, kind: str, entries: list[str], block: int, source: str) -> None:
        drv = driver()
        self.dev = dev
        dev.make_current()
        self.image_kind = kind
        self.mod = check(drv.cuModuleLoadData(image), f"{source}: loading {kind} (cuModuleLoadData)")
        self.functions: dict[str, Any] = {}
        self.max_grid: dict[str, int] = {}
        for e in entries:
            if e in self.functions:
                continue
            f = check(drv.cuModuleGetFunction(self.mod, e.encode()), f"{source}: cuModuleGetFunction({e})")
            self.functions[e] = f
            try:
                occ = check(drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(f, block, 0),
                            "cuOccupancyMaxActiveBlocksPerMultiprocessor")
            except CudaError:
                occ = 2048 // block
            self.max_grid[e] = max(1, dev.sm_count * max(1, int(occ)))
        #: debug mode's error record in device memory (None for a release image)
        self.image = image
        self.debug = DeviceDebugRecord(self.mod, source) if RECORD.encode() in image else None
        #: what kernels print, in device memory (None for an image without print)
        self.prints = DevicePrintBuffer(self.mod, source) if print_buffer.STATE.encode() in image else None

    def global_bytes(self, name: str, size: int) -> bytes | None:
        """The `size` bytes of the module global `name` (None when the image has no such global
        of that size)."""
        drv = driver()
        if name.encode() not in self.image:
            return None
        res = drv.cuModuleGetGlobal(self.mod, name.encode())
        if res[0] != drv.CUresult.CUDA_SUCCESS or int(res[2]) != size:
            return None
        return _device_bytes(res[1], size, 0)


def _device_bytes(dptr: Any, size: int, stream: int) -> bytes:
    """`size` bytes of device memory at `dptr`, copied on `stream` and waited for."""
    drv = driver()
    buf = ctypes.create_string_buffer(size)
    check(drv.cuMemcpyDtoHAsync(ctypes.addressof(buf), dptr, size, stream), "cuMemcpyDtoHAsync")
    check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize")
    return buf.raw


def _device_table(mod: Any, name: str, lookup: str, what: str) -> bytes:
    """A site table (debug checks, prints) the image holds as the global `name`, bounded by
    MAX_TABLE as on the CPU (CudaError beyond)."""
    dptr, size = check(driver().cuModuleGetGlobal(mod, name.encode()), lookup)
    if not 0 < int(size) <= MAX_TABLE:
        raise CudaError(f"{what} of {size} bytes")
    return _device_bytes(dptr, int(size), 0)


class DeviceDebugRecord:
    """Debug mode on the GPU: the image's error record and site table (kiln.runtime.debug_record)
    in device memory. A failed check in a GPU thread records itself and leaves that thread; the
    runtime reads the record after each launch (the run synchronizes in debug mode) and stops."""

    def __init__(self, mod: Any, source: str) -> None:
        drv = driver()
        self.dptr, size = check(drv.cuModuleGetGlobal(mod, RECORD.encode()), f"{source}: cuModuleGetGlobal({RECORD})")
        if int(size) != RECORD_SLOTS * 8:
            raise CudaError(f"{source}: {RECORD} has {size} bytes, expected {RECORD_SLOTS * 8}")
        raw = _device_table(mod, TABLE, f"{source}: cuModuleGetGlobal({TABLE})", f"{source}: debug table")
        self.sites: list[list[Any]] = list(parse_table(raw).get("sites", []))

    def take_error(self, kernel: str, stream: int) -> KilnError | None:
        """The failure recorded by the launches so far on `stream` (then cleared), or None."""
        drv = driver()
        rec = struct.unpack(f"<{RECORD_SLOTS}q", _device_bytes(self.dptr, RECORD_SLOTS * 8, stream))
        if rec[0] == 0:
            return None
        zero = (ctypes.c_int64 * RECORD_SLOTS)()
        check(drv.cuMemcpyHtoDAsync(self.dptr, ctypes.addressof(zero), RECORD_SLOTS * 8, stream), "cuMemcpyHtoDAsync")
        check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize")
        return describe(list(rec), kernel, self.sites)


class DevicePrintBuffer:
    """`print` on the GPU: the image's print buffer and site table (kiln.runtime.print_buffer) in
    device memory, read after each run (a synchronisation, only for images that print)."""

    def __init__(self, mod: Any, source: str) -> None:
        drv = driver()
        self.state, _ = check(drv.cuModuleGetGlobal(mod, print_buffer.STATE.encode()), f"{source}: print state")
        self.buffer, size = check(drv.cuModuleGetGlobal(mod, print_buffer.BUFFER.encode()), f"{source}: print buffer")
        if int(size) != print_buffer.CAPACITY * 8:
            raise CudaError(f"{source}: {print_buffer.BUFFER} has {size} bytes, expected {print_buffer.CAPACITY * 8}")
        raw = _device_table(mod, print_buffer.TABLE, f"{source}: print table", f"{source}: print table")
        self.sites = print_buffer.parse_table(raw)

    def flush(self, stream: int) -> None:
        """Write what the launches so far printed, and clear the buffer."""
        used, dropped = struct.unpack("<2q", _device_bytes(self.state, 16, stream))
        if used == 0 and dropped == 0:
            return
        n = min(max(used, 0), print_buffer.CAPACITY)
        slots = list(struct.unpack(f"<{n}q", _device_bytes(self.buffer, n * 8, stream))) if n else []
        drv = driver()
        zeros = ctypes.create_string_buffer(max(n * 8, 16))
        check(drv.cuMemcpyHtoDAsync(self.buffer, ctypes.addressof(zeros), n * 8, stream), "cuMemcpyHtoDAsync")
        check(drv.cuMemcpyHtoDAsync(self.state, ctypes.addressof(zeros), 16, stream), "cuMemcpyHtoDAsync")
        check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize")
        print_buffer.emit(*print_buffer.render(slots, n, dropped, self.sites))


class Node:
    """One kernel launch of a run: function, grid, and its argument block gathered from the run's
    block (graph args) and constants."""

    __slots__ = ("entry", "mode", "count", "waves", "gather", "kparams", "nslots", "kernel", "block_ptr")

    def __init__(self, launch: CudaLaunch, gather: list[Any], kparams: tuple[ParamInfo, ...],
                 kernel: str = "") -> None:
        self.kernel = kernel          # the user's name of the kernel (debug mode's messages)
        self.entry = launch.entry
        self.mode = launch.mode
        self.count = launch.count
        self.waves = launch.waves
        self.gather = gather          # per kernel param: (src_offset, size, name) or bytes
        self.kparams = kparams
        self.nslots = block_size([p.layout for p in kparams]) // SLOT
        #: the entry takes the block's device address after its slots (kiln.runtime.cuda_graph)
        self.block_ptr = launch.block_ptr


class LaunchPlan(Protocol):
    """What a CUDA graph needs from the graph or kernel it replays (kiln.runtime.cuda)."""

    nodes: list[Node]
    owner: str
    block_size: int

    def node_block(self, node: Node, block: bytes) -> bytes: ...

    def grid(self, node: Node, kblock: bytes, lm: LoadedImage) -> int: ...


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



def node_params(node: Node, kb: bytes, block_address: int = 0) -> tuple[Any, Any, int]:
    """(buffer, pointer array, `kernelParams` address) of one launch: the argument block's
    slots, then, for entries that take it, the block's device address (0: the slots hold the
    block). The buffer and pointer array must outlive the launch call."""
    n = node.nslots
    if node.block_ptr:
        kb += block_address.to_bytes(SLOT, "little")
        n += 1
    buf = ctypes.create_string_buffer(kb, max(8, len(kb)))
    base = ctypes.addressof(buf)
    ptrs = (ctypes.c_void_p * max(1, n))(*[base + SLOT * k for k in range(n)])
    return buf, ptrs, ctypes.addressof(ptrs) if n else 0


def decode_block(kparams: tuple[ParamInfo, ...], kb: bytes) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    scalars: dict[str, Any] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for p in kparams:
        lay = p.layout
        if lay.kind == "ndarray":
            shapes[lay.name] = struct.unpack_from(f"<{lay.ndim}q", kb, lay.offset + SLOT)
        else:
            scalars[lay.name] = struct.unpack_from("<" + SCALAR_FORMAT[lay.dtype], kb, lay.offset)[0]
    return scalars, shapes


class GraphExec:
    """A CUDA graph of one run's kernel nodes (one per launch, chained), instantiated, with the
    arguments in the nodes' parameters: what files whose entries do not take their argument
    block's address (written before `CudaLaunch.block_ptr`) replay with (kiln.runtime.cuda_graph
    otherwise)."""

    def __init__(self, r: LaunchPlan, lm: LoadedImage, block: bytes) -> None:
        drv = driver()
        self.r = r
        self.lm = lm
        self.block = block
        self.graph = check(drv.cuGraphCreate(0), "cuGraphCreate")
        self.nodes: list[Any] = []
        self.node_blocks: list[bytes] = []
        self.node_params: list[tuple[Any, Any, Any]] = []   # (CUDA_KERNEL_NODE_PARAMS, buffer, pointers)
        prev = None
        for node in r.nodes:
            kb = r.node_block(node, block)
            grid = r.grid(node, kb, lm)
            params = self._params(node, kb, grid)
            deps = [prev] if prev is not None else None
            gnode = check(drv.cuGraphAddKernelNode(self.graph, deps, 1 if deps else 0, params[0]),
                          f"{r.owner}: cuGraphAddKernelNode({node.entry})")
            self.nodes.append(gnode)
            self.node_blocks.append(kb)
            self.node_params.append(params)
            prev = gnode
        self.exec = check(drv.cuGraphInstantiate(self.graph, 0), f"{r.owner}: cuGraphInstantiate")

    def _params(self, node: Node, kb: bytes, grid: int) -> tuple[Any, Any, Any]:
        drv = driver()
        p = drv.CUDA_KERNEL_NODE_PARAMS()
        p.func = self.lm.functions[node.entry]
        p.gridDimX, p.gridDimY, p.gridDimZ = grid, 1, 1
        p.blockDimX = 1 if node.mode == "single" else self.r.block_size
        p.blockDimY = p.blockDimZ = 1
        p.sharedMemBytes = 0
        buf, ptrs, p.kernelParams = node_params(node, kb)
        p.extra = 0
        return p, buf, ptrs           # the driver copies the values on each call that takes p

    def update(self, block: bytes) -> None:
        """Only scalars changed (array pointers and shapes are the cache key): update the nodes
        whose argument blocks differ, in place (the node's parameter buffer is rewritten and handed
        to cuGraphExecKernelNodeSetParams again)."""
        drv = driver()
        r = self.r
        for i, node in enumerate(r.nodes):
            kb = r.node_block(node, block)
            if kb == self.node_blocks[i]:
                continue
            p, buf, _ptrs = self.node_params[i]
            ctypes.memmove(buf, kb, len(kb))        # the slots; a block address after them stays 0
            if node.count is not None:
                grid = r.grid(node, kb, self.lm)
                if grid != p.gridDimX:
                    p.gridDimX = grid
            err = drv.cuGraphExecKernelNodeSetParams(self.exec, self.nodes[i], p)
            if err[0] != drv.CUresult.CUDA_SUCCESS:
                check(err, f"{r.owner}: cuGraphExecKernelNodeSetParams")
            self.node_blocks[i] = kb
        self.block = block

    def destroy(self) -> None:
        drv = driver()
        try:
            drv.cuGraphExecDestroy(self.exec)
            drv.cuGraphDestroy(self.graph)
        except Exception:  # noqa: BLE001, S110 - best effort at teardown
            pass
