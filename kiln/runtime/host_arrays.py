"""Host arrays that are not numpy arrays: zero-copy numpy views of their memory.

The CPU runtime binds numpy arrays directly (kiln.runtime.binding). Other objects that describe
host memory are bound through a numpy view of that same memory, never a copy, so code writes
through to the caller's object:

- CPU DLPack producers (`__dlpack__` and `__dlpack_device__`: PyTorch CPU tensors, JAX CPU
  arrays, CuPy's host arrays, ...): `numpy.from_dlpack`. A producer that speaks only the
  unversioned protocol cannot say whether its memory is writable, and numpy then makes the view
  read-only: such arrays can be read, not written (newer producers answer `max_version`);
- objects with `__array_interface__` (numpy's array interface, version 3);
- objects with the buffer protocol (memoryview, array.array, bytearray, bytes, mmap, ...),
  their format mapped to a dtype by numpy (`'f'` float32, `'d'` float64, `'B'` uint8, ...).

Device memory (DLPack on a GPU) is refused with the way to run it. Any strides, read-only flags
and dtypes come through unchanged, and the binder checks them like a numpy array's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: DLPack device types (dlpack.h DLDeviceType) by number, for messages
_DL_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi",
               10: "rocm", 11: "rocm_host", 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon"}
_DL_CPU = 1
_DL_CUDA_KINDS = (2, 3, 13)
_CUDA_HINT = "; to run on the GPU, load a file compiled for the cuda target with kl.load(path, device='cuda')"


class HostArrayError(Exception):
    """`a` speaks an array protocol but cannot be viewed as host memory (the message says why)."""


def host_view(a: Any) -> np.ndarray | None:
    """A numpy array sharing `a`'s memory, or None when `a` speaks none of the protocols above.
    Raises HostArrayError for a device array or a malformed description."""
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__"):
        return _from_dlpack(a)
    if hasattr(a, "__cuda_array_interface__"):
        raise HostArrayError(f"a CUDA device array (__cuda_array_interface__), but this code runs on the CPU and "
                             f"reads host memory: pass a CPU array (kiln never copies arrays){_CUDA_HINT}")
    try:
        if hasattr(a, "__array_interface__"):
            return np.asarray(a)
        view = memoryview(a)
    except TypeError:
        return None
    except (ValueError, KeyError, AttributeError) as e:
        raise HostArrayError(f"its __array_interface__ cannot be read: {e}") from None
    try:
        return np.asarray(view)
    except (ValueError, TypeError, NotImplementedError) as e:
        raise HostArrayError(f"its buffer (format {view.format!r}) has no numpy dtype: {e}") from None


def _from_dlpack(a: Any) -> np.ndarray:
    try:
        dev_type, dev_id = a.__dlpack_device__()
    except Exception as e:  # noqa: BLE001 - a foreign method: any failure is the caller's error
        raise HostArrayError(f"its __dlpack_device__() failed: {type(e).__name__}: {e}") from None
    if int(dev_type) != _DL_CPU:
        where = f"{_DL_DEVICES.get(int(dev_type), f'DLPack device type {int(dev_type)}')}:{dev_id}"
        hint = _CUDA_HINT if int(dev_type) in _DL_CUDA_KINDS else ""
        raise HostArrayError(f"a DLPack array on device {where}, but this code runs on the CPU and reads "
                             f"host memory: pass a CPU array (kiln never copies arrays){hint}")
    try:
        return np.from_dlpack(a)
    except (BufferError, TypeError, ValueError, RuntimeError) as e:
        raise HostArrayError(f"numpy cannot view its DLPack tensor: {e}") from None
