"""Optional dependencies: the one place that knows which extra provides which module and how to
install it. Every import of llvmlite (the `compile` extra) or cuda-bindings (the `cuda` extra)
that can fail on a runtime-only install goes through `require`, so the user gets one clear
`MissingExtraError` naming the pip command instead of a bare `ModuleNotFoundError`."""

from __future__ import annotations

import importlib
from types import ModuleType

from kiln.errors import MissingCudaExtraError, MissingExtraError

#: The distribution's name on PyPI (the import name is `kiln`).
DISTRIBUTION = "kiln-aot"

#: extra -> what it is for (used in messages).
EXTRAS: dict[str, str] = {
    "compile": "compiling kernels and graphs (llvmlite)",
    "cuda": "running on NVIDIA GPUs and building cubins (cuda-bindings, nvidia-nvjitlink)",
    "dask": "running saved graphs on a Dask cluster (dask[array,distributed])",
}


def install_command(extra: str) -> str:
    """The pip command that installs `extra`, e.g. `pip install "kiln-aot[compile]"`."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; kiln's extras are {sorted(EXTRAS)}")
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def missing(module: str, extra: str, purpose: str, cause: BaseException | None = None) -> MissingExtraError:
    """The error for `module` (from `extra`) being absent while doing `purpose`."""
    install = install_command(extra)
    detail = f" ({cause})" if cause is not None else ""
    message = f"{purpose} needs {module}, which is not installed{detail}: {install}"
    cls = MissingCudaExtraError if extra == "cuda" else MissingExtraError
    return cls(message, extra=extra, install=install)


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import and return `module`, or raise MissingExtraError naming `extra`'s install command.

    Only a missing module (ImportError) is translated; any other failure while importing (a
    broken shared library, say) propagates unchanged for the caller to explain.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise missing(module, extra, purpose, e) from None
