"""Choosing an object loader, and the small ctypes helpers the runtime uses on a loaded object.

`load_object(blob)` picks kiln's own ELF loader (`kiln.runtime.elf`, no LLVM) on Linux x86-64 and
the MCJIT fallback (`kiln.runtime.mcjit`, needs llvmlite) everywhere else. The environment
variable KILN_LOADER=elf|mcjit overrides the choice.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from typing import Any

from kiln import config
from kiln.errors import ArtifactError

__all__ = ["ENTRY_TYPE", "default_loader", "get_global", "load_object", "make_entry", "set_global"]

#: the native entry ABI: int32 entry(uint8_t *args) (see kiln/abi.py). CFUNCTYPE releases the GIL.
ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)

LOADERS = ("elf", "mcjit")


def default_loader() -> str:
    """The loader `load_object(..., loader="auto")` uses on this host."""
    env = config.current().loader
    if env:
        if env not in LOADERS and env != "auto":
            raise ArtifactError(f"KILN_LOADER={env!r}: expected one of {', '.join(LOADERS)}")
        if env != "auto":
            return env
    machine = platform.machine().lower()
    if sys.platform.startswith("linux") and machine in ("x86_64", "amd64"):
        return "elf"
    return "mcjit"


def load_object(blob: bytes, loader: str = "auto") -> Any:
    """Load a relocatable object blob; returns an object with `address(name)`, `symbols`, `close()`."""
    if loader == "auto":
        loader = default_loader()
    if loader == "elf":
        from kiln.runtime.elf import load_elf_object
        return load_elf_object(blob)
    if loader == "mcjit":
        from kiln.runtime.mcjit import load_mcjit_object
        return load_mcjit_object(blob)
    raise ArtifactError(f"unknown object loader {loader!r}: expected 'auto', 'elf' or 'mcjit'")


def set_global(obj: Any, name: str, ctype: Any, value: Any) -> None:
    """Write `value` into the global `name` of a loaded object, as ctype (e.g. ctypes.c_int32,
    ctypes.c_void_p for the kiln_rt_* function pointers)."""
    ctype.from_address(obj.data_address(name, ctypes.sizeof(ctype))).value = value


def get_global(obj: Any, name: str, ctype: Any) -> Any:
    """Read the global `name` of a loaded object as ctype."""
    return ctype.from_address(obj.data_address(name, ctypes.sizeof(ctype))).value


def make_entry(address: int) -> Any:
    """A ctypes callable for a native entry point `int32 entry(uint8_t *args)`."""
    if not address:
        raise ArtifactError("entry point address is null")
    return ENTRY_TYPE(address)
