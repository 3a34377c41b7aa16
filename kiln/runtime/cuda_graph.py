"""CUDA graphs whose kernels read their arguments from device memory.

Every kernel entry kiln writes takes, after its argument block's slots, the device address of
that block (0: the slots hold it; kiln.codegen.nvptx `_argument_slots`, `CudaLaunch.block_ptr`).
A `BlockGraphExec` keeps the argument blocks of all of a run's launches, concatenated, in one
device buffer, and its kernel nodes point into it. A run whose arguments differ from the last
one's (a scalar, an array's pointer, a shape that sizes no grid) refreshes that buffer with ONE
host-to-device copy, ordered before the replay on the same stream, instead of one
`cuGraphExecKernelNodeSetParams` per changed node. Only the grids are baked into the nodes: the
graph is built again (and cached) when an argument a grid size depends on changes.

The copy's source is page-locked memory (a pageable source may make the driver wait for the
stream); a small ring of staging slots, each reused only once the copy that read it has run
(an event per slot), keeps the host from overwriting a block the GPU has yet to read. One graph
is only ever launched on one stream (the cache key holds the stream), so a buffer's copy and the
replays that read it stay in stream order.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from kiln.abi import SLOT
from kiln.errors import CudaError
from kiln.runtime.cuda_driver import check, driver
from kiln.runtime.cuda_launch import LaunchPlan, LoadedImage, Node, node_params

#: page-locked staging slots per graph: how many runs with new arguments may be in flight
STAGING_SLOTS = 4
_ALIGN = 16
#: CU_EVENT_DISABLE_TIMING (cuEventCreate takes the flags as a plain unsigned int)
_EVENT_DISABLE_TIMING = 2


class BlockImage:
    """Where each launch's argument block lives in the concatenated device image, and how to
    build that image from a run's argument block with one numpy gather of 8-byte slots (blocks
    are made of slots: kiln.abi)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.offsets: list[int] = []
        template = bytearray()
        src: list[int] = []
        dst: list[int] = []
        for node in nodes:
            base = len(template)
            self.offsets.append(base)
            for g in node.gather:
                at = len(template)
                if isinstance(g, bytes):
                    template += g
                else:
                    template += bytes(g[1])
                    src.extend(range(g[0] // SLOT, (g[0] + g[1]) // SLOT))
                    dst.extend(range(at // SLOT, (at + g[1]) // SLOT))
            template += bytes(-len(template) % _ALIGN)
            if len(template) == base:        # a kernel without parameters: keep offsets distinct
                template += bytes(_ALIGN)
        self.nbytes = len(template)
        #: the constant slots (bindings baked in at compile time) and zeros elsewhere
        self.template = np.frombuffer(bytes(template), np.uint64)
        self.src = np.asarray(src, np.intp)
        self.dst = np.asarray(dst, np.intp)

    def fill(self, out: np.ndarray, block: bytes) -> None:
        """Write the slots that come from the run block `block` into `out` (uint64, holding the
        template's constants already)."""
        if len(self.src):
            out[self.dst] = np.frombuffer(block, np.uint64)[self.src]


def grid_dependencies(nodes: list[Node]) -> tuple[tuple[int, int], ...]:
    """The (offset, size) ranges of the run block that some launch's grid size depends on: the
    scalars and array shapes its launch count reads (array pointers never size a grid)."""
    ranges: set[tuple[int, int]] = set()
    for node in nodes:
        if node.count is None:
            continue
        names = _count_names(node.count)
        for kp, g in zip(node.kparams, node.gather):
            if kp.layout.name not in names or isinstance(g, bytes):
                continue
            if kp.layout.kind == "ndarray":
                ranges.add((g[0] + 8, g[1] - 8))
            else:
                ranges.add((g[0], g[1]))
    return tuple(sorted(ranges))


def _count_names(x: Any) -> set[str]:
    if isinstance(x, (list, tuple)):
        if len(x) >= 2 and x[0] in ("arg", "shape") and isinstance(x[1], str):
            return {x[1]}
        out: set[str] = set()
        for y in x:
            out |= _count_names(y)
        return out
    return set()


class BlockGraphExec:
    """One instantiated CUDA graph of a run's launches (chained in dispatch order) whose nodes
    read their argument blocks from `self.dbuf`; `launch(block, stream)` refreshes the buffer
    when the arguments changed, then replays."""

    def __init__(self, r: LaunchPlan, lm: LoadedImage, image: BlockImage, block: bytes, stream: int) -> None:
        drv = driver()
        self.r = r
        self.lm = lm
        self.image = image
        self.stream = stream
        self.block: bytes | None = None          # the run block the device buffer holds
        self.dbuf = int(check(drv.cuMemAlloc(image.nbytes), f"{r.owner}: cuMemAlloc({image.nbytes})"))
        self.graph: Any = None
        self.exec: Any = None
        self._slots: list[tuple[int, np.ndarray, Any]] = []
        self._next = 0
        try:
            self._build(block)
            self._staging()
        except BaseException:
            self.destroy()
            raise

    def _build(self, block: bytes) -> None:
        drv = driver()
        r = self.r
        self.graph = check(drv.cuGraphCreate(0), "cuGraphCreate")
        self._keep: list[Any] = []
        prev = None
        for node, off in zip(r.nodes, self.image.offsets):
            grid = r.grid(node, r.node_block(node, block), self.lm)
            p = drv.CUDA_KERNEL_NODE_PARAMS()
            p.func = self.lm.functions[node.entry]
            p.gridDimX, p.gridDimY, p.gridDimZ = grid, 1, 1
            p.blockDimX = 1 if node.mode == "single" else r.block_size
            p.blockDimY = p.blockDimZ = 1
            p.sharedMemBytes = 0
            buf, ptrs, addr = node_params(node, bytes(8 * node.nslots), self.dbuf + off)
            p.kernelParams = addr
            p.extra = 0
            deps = [prev] if prev is not None else None
            prev = check(drv.cuGraphAddKernelNode(self.graph, deps, 1 if deps else 0, p),
                         f"{r.owner}: cuGraphAddKernelNode({node.entry})")
            self._keep.append((p, buf, ptrs))
        self.exec = check(drv.cuGraphInstantiate(self.graph, 0), f"{r.owner}: cuGraphInstantiate")

    def _staging(self) -> None:
        drv = driver()
        n = self.image.nbytes
        for _ in range(STAGING_SLOTS):
            host = int(check(drv.cuMemHostAlloc(n, 0), f"{self.r.owner}: cuMemHostAlloc({n})"))
            view = np.ctypeslib.as_array((ctypes.c_uint64 * (n // SLOT)).from_address(host))
            view[:] = self.image.template
            event = check(drv.cuEventCreate(_EVENT_DISABLE_TIMING), "cuEventCreate")
            self._slots.append((host, view, event))

    def launch(self, block: bytes, stream: int) -> None:
        drv = driver()
        if block != self.block:
            host, view, event = self._slots[self._next]
            self._next = (self._next + 1) % len(self._slots)
            if self.block is not None:        # the slot's last copy must have read it
                done = drv.cuEventQuery(event)
                if done[0] != drv.CUresult.CUDA_SUCCESS:
                    check(drv.cuEventSynchronize(event), f"{self.r.owner}: cuEventSynchronize")
            self.image.fill(view, block)
            check(drv.cuMemcpyHtoDAsync(self.dbuf, host, self.image.nbytes, stream),
                  f"{self.r.owner}: cuMemcpyHtoDAsync (argument blocks)")
            check(drv.cuEventRecord(event, stream), f"{self.r.owner}: cuEventRecord")
            self.block = block
        err = drv.cuGraphLaunch(self.exec, stream)
        if err[0] != drv.CUresult.CUDA_SUCCESS:
            check(err, f"{self.r.owner}: cuGraphLaunch")

    def destroy(self) -> None:
        """Free what this graph holds (best effort: also called while a failed build unwinds)."""
        try:
            drv = driver()
        except CudaError:
            return
        for call, *args in [("cuGraphExecDestroy", self.exec), ("cuGraphDestroy", self.graph)]:
            if args[0] is not None:
                getattr(drv, call)(*args)
        if self._slots:          # a pending copy may still read a slot: wait for the stream
            drv.cuStreamSynchronize(self.stream)
        for host, _view, event in self._slots:
            drv.cuEventDestroy(event)
            drv.cuMemFreeHost(host)
        self._slots = []
        drv.cuMemFree(self.dbuf)
