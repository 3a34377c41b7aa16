"""PTX -> cubin ahead of time with nvJitLink (cuda-bindings' `cuda.bindings.nvjitlink`).

Needs `pip install "kiln-aot[cuda]"` (cuda-bindings + the nvidia-nvjitlink wheel that ships
libnvJitLink.so). No GPU and no driver are needed: nvJitLink is a pure compiler library.

    nvjitlink_available() -> None | reason
    link_cubin(ptx, "sm_90") -> bytes
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

from kiln.errors import TargetError

_lib_preloaded = False


def _preload_libnvjitlink() -> None:
    """Make libnvJitLink.so findable: cuda-bindings looks it up through cuda-pathfinder, which
    finds the nvidia wheels; for older cuda-bindings we dlopen it from site-packages first."""
    global _lib_preloaded
    if _lib_preloaded:
        return
    _lib_preloaded = True
    for base in sys.path:
        for pat in ("nvidia/cu13/lib/libnvJitLink.so*", "nvidia/nvjitlink/lib/libnvJitLink.so*",
                    "nvidia/cu12/lib/libnvJitLink.so*"):
            for path in sorted(glob.glob(os.path.join(base, pat))):
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    return
                except OSError:
                    continue


def _nvjitlink():
    _preload_libnvjitlink()
    from cuda.bindings import nvjitlink  # type: ignore[import-not-found]

    nvjitlink.version()      # raises when libnvJitLink cannot be loaded
    return nvjitlink


def nvjitlink_available() -> str | None:
    """None when cubins can be built here, else why not (for messages and the manifest)."""
    try:
        _nvjitlink()
    except ImportError as e:
        return f"cuda-bindings is not installed ({e}); pip install 'kiln-aot[cuda]'"
    except Exception as e:  # noqa: BLE001 - missing shared library, wrong version...
        return f"nvJitLink is not usable: {e}"
    return None


def nvjitlink_version() -> str:
    try:
        major, minor = _nvjitlink().version()
        return f"{major}.{minor}"
    except Exception:  # noqa: BLE001
        return ""


def link_cubin(ptx: str, arch: str, opt_level: int = 3) -> bytes:
    """Compile and link one PTX module into a cubin for `arch` ("sm_80", "sm_90", ...)."""
    try:
        nvj = _nvjitlink()
    except Exception as e:
        raise TargetError(f"cannot build a {arch} cubin: {nvjitlink_available() or e}") from e
    opts = [f"-arch={arch}", f"-O{opt_level}"]
    handle = nvj.create(len(opts), opts)
    try:
        data = ptx.encode() + b"\0"
        try:
            nvj.add_data(handle, nvj.InputType.PTX, data, len(data), "kiln.ptx")
            nvj.complete(handle)
        except Exception as e:  # noqa: BLE001
            log = _error_log(nvj, handle)
            raise TargetError(f"nvJitLink failed for {arch}: {e}\n{log}") from None
        size = nvj.get_linked_cubin_size(handle)
        buf = bytearray(size)
        nvj.get_linked_cubin(handle, buf)
        return bytes(buf)
    finally:
        nvj.destroy(handle)


def _error_log(nvj, handle) -> str:
    try:
        n = nvj.get_error_log_size(handle)
        buf = bytearray(n)
        nvj.get_error_log(handle, buf)
        return buf.rstrip(b"\0").decode(errors="replace")
    except Exception:  # noqa: BLE001
        return ""
