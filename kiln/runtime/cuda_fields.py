"""Module-level fields on the GPU: each loaded CUDA module owns one device array per field and
device, allocated at first use and filled from the file's init blob (docs/format.md, `fields`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.artifact.manifest import FieldInfo
from kiln.runtime.binding import allocate_fields
from kiln.runtime.cuda_driver import check, driver


class DeviceField:
    """One field's storage on one GPU. Kernels take it in place (`__cuda_array_interface__`);
    `to_numpy()` and `from_numpy()` copy to and from the host (synchronously)."""

    def __init__(self, info: FieldInfo, ptr: int, dtype: np.dtype) -> None:
        self.info = info
        self.ptr = ptr
        self.dtype = dtype
        self.storage_shape = info.storage_shape
        self.nbytes = int(np.prod(self.storage_shape)) * dtype.itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape + self.info.element_shape

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.storage_shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "strides": None, "version": 3}

    def to_numpy(self) -> np.ndarray:
        out = np.empty(self.storage_shape, self.dtype)
        drv = driver()
        check(drv.cuMemcpyDtoHAsync(out.ctypes.data, self.ptr, self.nbytes, 0), "cuMemcpyDtoHAsync")
        check(drv.cuStreamSynchronize(0), "cuStreamSynchronize")
        return out.reshape(self.shape)

    def from_numpy(self, a: Any) -> None:
        arr = np.ascontiguousarray(np.asarray(a, self.dtype))
        if arr.shape != self.shape:
            raise ValueError(f"from_numpy: field {self.info.name!r} has shape {self.shape}, got {arr.shape}")
        drv = driver()
        check(drv.cuMemcpyHtoDAsync(self.ptr, arr.ctypes.data, self.nbytes, 0), "cuMemcpyHtoDAsync")
        check(drv.cuStreamSynchronize(0), "cuStreamSynchronize")

    def __repr__(self) -> str:
        return f"<DeviceField {self.info.name!r} {self.info.dtype} shape={self.shape}>"


class DeviceFields:
    """The fields of one loaded CUDA module, per device (the caller makes the device current)."""

    def __init__(self, fields: Mapping[str, FieldInfo], blobs: Mapping[str, Any]) -> None:
        self.infos = dict(fields)
        self._init = allocate_fields(fields, blobs) if fields else {}
        self._on: dict[int, dict[str, DeviceField]] = {}

    def on(self, device: int) -> dict[str, DeviceField]:
        have = self._on.get(device)
        if have is None:
            drv = driver()
            have = {}
            for name, host in self._init.items():
                nbytes = max(1, host.nbytes)
                ptr = int(check(drv.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes}) for field {name!r}"))
                check(drv.cuMemcpyHtoDAsync(ptr, host.ctypes.data, host.nbytes, 0), "cuMemcpyHtoDAsync")
                have[name] = DeviceField(self.infos[name], ptr, host.dtype)
            check(drv.cuStreamSynchronize(0), "cuStreamSynchronize")
            self._on[device] = have
        return have
