"""A stand-in for cuda.bindings.driver that records what kiln's CUDA runtime asks of it (tests only).

Device memory is host memory; nothing executes. It lets tests check the runtime's plumbing on a
machine without a GPU: staging copies, argument blocks, grid sizes, CUDA-graph updates, streams.
"""

from __future__ import annotations

import ctypes
import sys
import types

LOG = []
MEM = {}          # dptr -> ctypes buffer
_next = [0x10000]


class CUresult:
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_DEVICE = 100


class CUdevice_attribute:
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 1
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 2
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 3


class CUDA_KERNEL_NODE_PARAMS:
    pass


class CUevent_flags:
    CU_EVENT_DISABLE_TIMING = 2


class CUpointer_attribute:
    CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9


GPUS = [1]         # how many GPUs the fake driver shows (tests set it)
CURRENT = [11]     # the current context: 11 + the GPU's ordinal
POINTER_GPU = {}   # device pointer -> the GPU it belongs to (arrays of tests; allocations: MEM_GPU)
MEM_GPU = {}       # allocation -> the GPU that was current when it was made


HOST = {}        # page-locked host allocations: address -> ctypes buffer
EVENTS = {}      # event -> recorded on stream (None: never recorded)


def cuInit(flags): return (0,)
def cuGetErrorName(err): return (0, b"ERR")
def cuDeviceGetCount(): return (0, GPUS[0])
def cuDeviceGet(i): return (0, 7 + i)
def cuDevicePrimaryCtxRetain(dev): return (0, 11 + dev - 7)
def cuDeviceGetAttribute(a, dev): return (0, {1: 9, 2: 0, 3: 4}[a])
def cuCtxGetCurrent(): return (0, CURRENT[0])
def cuCtxSetCurrent(c):
    CURRENT[0] = c
    LOG.append(("ctx", c - 11))
    return (0,)


def cuPointerGetAttribute(attr, ptr):
    assert attr == CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
    if ptr in POINTER_GPU:
        return (0, POINTER_GPU[ptr])
    for base, buf in MEM.items():
        if base <= ptr < base + len(buf):
            return (0, MEM_GPU.get(base, 0))
    return (1, None)          # CUDA_ERROR_INVALID_VALUE: not CUDA memory
IMAGES = []      # the PTX/cubin images loaded, in order
GLOBALS = {}     # global name -> (dptr, size) of the last image


def cuModuleLoadData(image):
    LOG.append(("load", len(image)))
    IMAGES.append(bytes(image))
    GLOBALS.clear()
    return (0, 99)


def cuModuleGetGlobal(mod, name):
    """A PTX `.global .b8 name[n]` (with its `= {...}` initializer, if any) as device memory."""
    import re
    key = name.decode()
    if key not in GLOBALS:
        m = re.search(rb"\.b8 " + re.escape(name) + rb"\[(\d+)\](?: = \{([^}]*)\})?", IMAGES[-1])
        if m is None:
            return (500, None, 0)
        size = int(m.group(1))
        dptr = cuMemAlloc(size)[1]
        if m.group(2):
            ctypes.memmove(MEM[dptr], bytes(int(v) for v in m.group(2).split(b",")), size)
        GLOBALS[key] = (dptr, size)
    return (0, *GLOBALS[key])
def cuModuleGetFunction(mod, name): return (0, name.decode())
def cuOccupancyMaxActiveBlocksPerMultiprocessor(f, block, smem): return (0, 2)
def cuMemAlloc(n):
    p = _next[0]
    _next[0] += (n + 255) // 256 * 256 + 256
    MEM[p] = ctypes.create_string_buffer(n)
    MEM_GPU[p] = CURRENT[0] - 11
    LOG.append(("alloc", n, CURRENT[0] - 11))
    return (0, p)
def cuMemFree(p): MEM.pop(p, None); LOG.append(("free", p)); return (0,)
def cuMemcpyHtoDAsync(dptr, src, n, s):
    ctypes.memmove(MEM[dptr], src, n); LOG.append(("htod", n, s)); return (0,)
def cuMemcpyDtoHAsync(dst, dptr, n, s):
    ctypes.memmove(dst, MEM[dptr], n)
    LOG.append(("dtoh", n, s))
    return (0,)
def cuStreamSynchronize(s): LOG.append(("sync", s)); return (0,)
def cuMemHostAlloc(n, flags):
    buf = ctypes.create_string_buffer(n)
    HOST[ctypes.addressof(buf)] = buf
    return (0, ctypes.addressof(buf))
def cuMemFreeHost(p): HOST.pop(p, None); return (0,)
def cuEventCreate(flags):
    e = len(EVENTS) + 1000
    EVENTS[e] = None
    return (0, e)
def cuEventRecord(e, s): EVENTS[e] = s; LOG.append(("record", s)); return (0,)
def cuEventQuery(e): return (0,)
def cuEventSynchronize(e): return (0,)
def cuEventDestroy(e): EVENTS.pop(e, None); return (0,)


def slots(kernel_params, n):
    """The `n` 8-byte parameters a launch passed (its kernelParams address, as logged)."""
    ptrs = (ctypes.c_void_p * n).from_address(kernel_params)
    return [ctypes.string_at(p, 8) for p in ptrs]


def device_bytes(dptr, n):
    """`n` bytes of fake device memory at `dptr` (inside an allocation)."""
    base = max(b for b in MEM if b <= dptr)
    return ctypes.string_at(ctypes.addressof(MEM[base]) + dptr - base, n)


def _params_bytes(kernel_params, nslots):
    if not kernel_params:
        return b""
    ptrs = (ctypes.c_void_p * nslots).from_address(kernel_params)
    return b"".join(ctypes.string_at(p, 8) for p in ptrs)


def cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, s, kernel_params, extra):
    LOG.append(("launch", f, gx, bx, s, _params_bytes(kernel_params, 4).hex(), kernel_params))
    return (0,)
def cuGraphCreate(flags): return (0, object())
def cuGraphAddKernelNode(graph, deps, ndeps, p):
    LOG.append(("node", p.func, p.gridDimX, p.blockDimX, ndeps, _params_bytes(p.kernelParams, 4).hex(), p.kernelParams))
    return (0, object())
def cuGraphInstantiate(g, flags): return (0, "exec")
def cuGraphLaunch(e, s): LOG.append(("graphlaunch", s)); return (0,)
def cuGraphExecKernelNodeSetParams(e, n, p): LOG.append(("setparams", p.func, p.gridDimX, _params_bytes(p.kernelParams, 4).hex())); return (0,)
def cuGraphExecDestroy(e): LOG.append(("destroy",)); return (0,)
def cuGraphDestroy(g): return (0,)


def install(monkeypatch):
    """Make `from cuda.bindings import driver` find this module for one test."""
    from kiln.runtime import cuda_driver

    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    cuda.bindings = bindings
    bindings.driver = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", sys.modules[__name__])
    monkeypatch.setattr(cuda_driver, "_drv", None)
    monkeypatch.setattr(cuda_driver, "_count", [])
    monkeypatch.setattr(cuda_driver.Device, "_all", {})
    LOG.clear()
    HOST.clear()
    EVENTS.clear()
    GPUS[0] = 1
    CURRENT[0] = 11
    POINTER_GPU.clear()
