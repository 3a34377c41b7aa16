"""NVIDIA's libdevice (`libdevice.10.bc`, LLVM bitcode of the CUDA math library) for the NVPTX target.

    find_libdevice() -> path | None
    libdevice_function(name, bits, fast_math) -> "__nv_sinf" | None
    link_libdevice(module, target_machine, path)

The compiler calls `__nv_sinf`, `__nv_exp`, ... for kiln's math builtins, then links libdevice
into the module before optimising it: the functions used are inlined, the rest (internalised)
are dropped, and LLVM's NVVMReflect pass folds libdevice's `__nvvm_reflect("__CUDA_FTZ")` queries
with the module flag `nvvm-reflect-ftz` (0: denormals are kept, as NVVM does without -ftz).
When libdevice is not found, kiln.codegen.nvptx falls back to its own f64 math
(kiln.codegen.nvptx_math) with one warning; docs/cuda.md, "Math functions".

Where libdevice comes from, first hit wins:
1. `KILN_LIBDEVICE=path` (`KILN_LIBDEVICE=builtin` turns libdevice off: kiln's own math);
2. `cuda.pathfinder.find_bitcode_lib("device")` when cuda-pathfinder is importable;
3. the `nvidia-nvvm` wheel (`pip install nvidia-nvvm`, part of `kiln-aot[cuda]`):
   site-packages/nvidia/*/nvvm/libdevice/libdevice.10.bc;
4. a CUDA toolkit: $CUDA_HOME or $CUDA_PATH, then /usr/local/cuda, under nvvm/libdevice/.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

import llvmlite.binding as llvm

from kiln import config
from kiln.errors import TargetError

LIBDEVICE_FILE = "libdevice.10.bc"
#: `KILN_LIBDEVICE` values that turn libdevice off
OFF_VALUES = ("builtin", "none", "off", "0")

#: kiln math builtin -> libdevice base name (`__nv_<base>` for f64, `__nv_<base>f` for f32)
LIBDEVICE_MATH = {
    "exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin",
    "acos": "acos", "atan": "atan", "atan2": "atan2", "tanh": "tanh", "pow": "pow",
    "exp2": "exp2", "log2": "log2", "log10": "log10", "sinh": "sinh", "cosh": "cosh",
}
#: f32 functions with a fast, less accurate variant (`__nv_fast_<base>f`, used only with
#: fast_math=True) built on the GPU's approximate instructions (sin.approx, ex2.approx, ...)
FAST_F32 = frozenset({"sin", "cos", "tan", "exp", "log", "pow", "log2", "log10", "tanh"})


def libdevice_env() -> tuple[str, str]:
    """The environment this module reads, in one place: (KILN_LIBDEVICE, CUDA_HOME or CUDA_PATH)."""
    cfg = config.current()
    return cfg.libdevice, cfg.cuda_home or cfg.cuda_path


def _from_pathfinder() -> str | None:
    try:
        from cuda import pathfinder  # type: ignore[import-not-found]

        path = pathfinder.find_bitcode_lib("device")
    except Exception:  # noqa: BLE001 - not installed, too old to know bitcode libs, or not found
        return None
    return str(path) if path and os.path.isfile(path) else None


def _from_wheels() -> str | None:
    for base in sys.path:
        for pat in ("nvidia/*/nvvm/libdevice/" + LIBDEVICE_FILE, "nvidia/cuda_nvcc/nvvm/libdevice/" + LIBDEVICE_FILE):
            hits = sorted(glob.glob(os.path.join(base or ".", pat)), reverse=True)   # cu13 before cu12
            if hits:
                return hits[0]
    return None


def libdevice_turned_off() -> bool:
    """Whether the user asked for kiln's own math (`KILN_LIBDEVICE=builtin`)."""
    return libdevice_env()[0].lower() in OFF_VALUES


def find_libdevice() -> str | None:
    """The path of libdevice.10.bc, or None when kiln must use its own math (see the module
    docstring for the search order). A `KILN_LIBDEVICE` naming a missing file is an error."""
    override, cuda_home = libdevice_env()
    if libdevice_turned_off():
        return None
    if override:
        if not os.path.isfile(override):
            raise TargetError(f"KILN_LIBDEVICE={override!r} is not a file (give the path of {LIBDEVICE_FILE}, "
                              f"or KILN_LIBDEVICE=builtin for kiln's own math)")
        return override
    found = _from_pathfinder() or _from_wheels()
    if found:
        return found
    for root in (cuda_home, "/usr/local/cuda"):
        if root:
            p = os.path.join(root, "nvvm", "libdevice", LIBDEVICE_FILE)
            if os.path.isfile(p):
                return p
    return None


def libdevice_function(name: str, bits: int, fast_math: bool = False) -> str | None:
    """The libdevice function computing builtin `name` on `bits`-bit floats (32 or 64), or None."""
    base = LIBDEVICE_MATH.get(name)
    if base is None or bits not in (32, 64):
        return None
    if bits == 64:
        return f"__nv_{base}"
    if fast_math and base in FAST_F32:
        return f"__nv_fast_{base}f"
    return f"__nv_{base}f"


_bitcode_cache: dict[str, bytes] = {}


def _bitcode(path: str) -> bytes:
    data = _bitcode_cache.get(path)
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise TargetError(f"cannot read libdevice at {path!r}: {e}") from e
        _bitcode_cache[path] = data
    return data


def link_libdevice(mod: Any, path: str) -> None:
    """Link libdevice into `mod` (an llvmlite ModuleRef already set to the NVPTX triple and data
    layout) and make its functions internal, so that optimisation inlines the ones used and
    drops the rest (the PTX holds no libdevice symbol)."""
    try:
        lib = llvm.parse_bitcode(_bitcode(path))
    except RuntimeError as e:
        raise TargetError(f"{path!r} is not readable LLVM bitcode ({e}); is it {LIBDEVICE_FILE}?") from e
    lib.triple = mod.triple
    lib.data_layout = mod.data_layout
    mod.link_in(lib)
    for fn in mod.functions:
        if fn.name.startswith("__nv_") and not fn.is_declaration:
            fn.linkage = "internal"
