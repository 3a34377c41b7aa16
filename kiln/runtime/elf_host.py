"""What kiln's ELF loader takes from the host process: the external-symbol allow-list and its
resolver (libm/libc/libgcc_s through ctypes), and anonymous memory through libc mmap/mprotect.

Split from kiln.runtime.elf (which re-exports these names) so that the loader itself stays about
parsing, validation and relocation.
"""

from __future__ import annotations

import ctypes
import sys
import threading

from kiln.abi import LOADER_EXTERNAL_SYMBOLS
from kiln.errors import ArtifactError

# --------------------------------------------------------------------------------------------
# External symbols
# --------------------------------------------------------------------------------------------

#: every external (undefined) symbol an object may reference; anything else is refused (the list
#: lives in kiln.abi, beside the narrower set kiln's own code generator emits)
ALLOWED_EXTERNAL_SYMBOLS: frozenset[str] = LOADER_EXTERNAL_SYMBOLS

_LIB_NAMES = {
    "linux": ("libm.so.6", "libc.so.6", "libgcc_s.so.1"),
    "darwin": ("libm.dylib", "libc.dylib", "libgcc_s.1.dylib"),
}
_libs: list[ctypes.CDLL] | None = None
_resolved: dict[str, int] = {}
_lock = threading.Lock()


def _load_libs() -> list[ctypes.CDLL]:
    global _libs
    if _libs is None:
        libs: list[ctypes.CDLL] = []
        names = _LIB_NAMES.get(sys.platform, _LIB_NAMES["linux"])
        for name in names:
            try:
                libs.append(ctypes.CDLL(name))
            except OSError:
                from ctypes import util  # only on unusual systems: it imports subprocess

                found = util.find_library(name.split(".")[0].removeprefix("lib"))
                if found:
                    try:
                        libs.append(ctypes.CDLL(found))
                    except OSError:
                        pass
        _libs = libs
    return _libs


def resolve_external(name: str) -> int | None:
    """Address of an allowed external symbol in libm/libc/libgcc_s (cached), None if absent.
    A name outside ALLOWED_EXTERNAL_SYMBOLS is an ArtifactError, whoever asks."""
    if name not in ALLOWED_EXTERNAL_SYMBOLS:
        raise ArtifactError(f"ELF: external symbol {name!r} is not in the allowed list")
    addr = _resolved.get(name)
    if addr is not None:
        return addr
    with _lock:
        for lib in _load_libs():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                continue
            addr = ctypes.cast(fn, ctypes.c_void_p).value
            if addr:
                _resolved[name] = addr
                return addr
    return None


# --------------------------------------------------------------------------------------------
# libc memory management
# --------------------------------------------------------------------------------------------

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
_libc: ctypes.CDLL | None = None


def _libc_funcs() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mprotect.restype = ctypes.c_int
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc = libc
    return _libc


def map_anonymous(size: int) -> int:
    libc = _libc_funcs()
    addr = libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise ArtifactError(f"ELF: cannot map {size} bytes for the object image (errno {err})")
    return addr


def unmap(addr: int, size: int) -> None:
    _libc_funcs().munmap(addr, size)


def protect(addr: int, size: int, prot: int) -> None:
    if size and _libc_funcs().mprotect(addr, size, prot) != 0:
        raise ArtifactError(f"ELF: mprotect({addr:#x}, {size:#x}, {prot}) failed "
                            f"(errno {ctypes.get_errno()})")
