"""CUDA driver access for kiln's cuda runtime: initialisation, error checks, devices, and the
choice of code image (cubin or PTX) for a GPU. Imports `cuda.bindings.driver` lazily, at the
first call that needs the driver."""

from __future__ import annotations

from typing import Any, ClassVar

from kiln.errors import CudaError

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


def check(res: Any, what: str) -> Any:
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
        n = check(drv.cuDeviceGetCount(), "cuDeviceGetCount")
        if n < 1:
            return "no CUDA GPU is visible"
    except CudaError as e:
        return str(e)
    return None


def device_ordinal(device: str | int) -> int:
    """The GPU ordinal a device name means: "cuda" is GPU 0, "cuda:N" GPU N (an int is taken as
    is). ValueError for anything else (the one home of this rule: kl.load, kl.set_device,
    compile(device=...) and run(device=...) all ask here)."""
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise ValueError(f"a GPU ordinal cannot be negative, got {device}")
        return device
    if device == "cuda":
        return 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N' (N: the GPU's ordinal), got {device!r}")


_count: list[int] = []


def device_count() -> int:
    """How many CUDA GPUs this process sees (asked once; CudaError when there is no driver)."""
    if not _count:
        _count.append(int(check(driver().cuDeviceGetCount(), "cuDeviceGetCount")))
    return _count[0]


def pointer_device(ptr: int) -> int | None:
    """The ordinal of the GPU whose memory `ptr` points into, or None when the driver cannot
    tell (not CUDA memory, or a pointer of another API)."""
    drv = driver()
    res = drv.cuPointerGetAttribute(drv.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr)
    if res[0] != drv.CUresult.CUDA_SUCCESS:
        return None
    return int(res[1])


class Device:
    """The primary context of one GPU and what kiln needs to know about it."""

    _all: ClassVar[dict[int, Device]] = {}

    def __init__(self, ordinal: int) -> None:
        drv = driver()
        n = check(drv.cuDeviceGetCount(), "cuDeviceGetCount")
        if not 0 <= ordinal < n:
            raise CudaError(f"CUDA device {ordinal} does not exist ({n} visible)")
        self.dev = check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
        self.ctx = check(drv.cuDevicePrimaryCtxRetain(self.dev), "cuDevicePrimaryCtxRetain")
        attr = drv.CUdevice_attribute
        self.cc = (check(drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.dev), "attr"),
                   check(drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.dev), "attr"))
        self.sm_count = check(drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, self.dev),
                              "attr")
        self.ordinal = ordinal

    @classmethod
    def get(cls, ordinal: int) -> Device:
        d = cls._all.get(ordinal)
        if d is None:
            d = cls._all[ordinal] = Device(ordinal)
        return d

    def make_current(self) -> None:
        drv = _drv
        cur = check(drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if int(cur) != int(self.ctx):
            check(drv.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

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
