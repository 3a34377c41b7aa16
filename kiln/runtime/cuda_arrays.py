"""Array and stream interop for the cuda runtime: device arrays of any library (through
`__cuda_array_interface__` or DLPack) and stream objects, read without importing their library."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from kiln.errors import ArgumentError
from kiln.types import from_numpy

_DL_TYPES = {(0, 8): "i8", (0, 16): "i16", (0, 32): "i32", (0, 64): "i64", (1, 8): "u8", (1, 16): "u16",
             (1, 32): "u32", (1, 64): "u64", (2, 16): "f16", (2, 32): "f32", (2, 64): "f64", (6, 8): "bool"}


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


def device_array(a: Any) -> tuple[int, tuple[int, ...], str, tuple[int, ...] | None, Any] | None:
    """(pointer, shape, kiln dtype, byte strides or None for C order, keepalive) of a CUDA device
    array, or None when `a` is not one. Reads `__cuda_array_interface__` first, then DLPack."""
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        shape = tuple(int(s) for s in cai["shape"])
        typestr = cai["typestr"]
        st = from_numpy(np.dtype(typestr))
        dt = st.name if st is not None else np.dtype(typestr).name
        strides = cai.get("strides")
        return int(cai["data"][0] or 0), shape, dt, None if strides is None else tuple(map(int, strides)), a
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
        return int((t.data or 0) + t.byte_offset), shape, dt, strides, cap
    return None


def _accepts_stream(a: Any) -> bool:
    return type(a).__module__.split(".")[0] in ("torch", "cupy", "jax", "jaxlib")


def stream_handle(stream: Any) -> int:
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
