"""kiln's exception types. Every layer raises these; the public API re-exports them."""

from __future__ import annotations

from typing import ClassVar


class KilnError(Exception):
    """Base class of every error kiln raises on purpose.

    `stage` names the compile stage that raised it ("front end", "fold_constants", "llvm
    optimise", ...; see kiln.driver.pipeline), None outside a compilation. Errors about the
    user's code or data keep their message as it is and carry the stage in the attribute only;
    internal errors (a plain KilnError: a bug in kiln) also name the stage in their message.
    """

    stage: str | None = None
    #: whether str() appends the stage; False for the errors that describe the user's input
    names_stage_in_message: ClassVar[bool] = True

    def __str__(self) -> str:
        text = super().__str__()
        if self.stage is not None and type(self).names_stage_in_message:
            return f"{text} (compile stage: {self.stage})"
        return text


class KernelError(KilnError):
    """A kernel or func cannot be compiled: unsupported construct, type error, undefined name...

    The message names the user's file, line and column and quotes the source line with a caret.
    """

    names_stage_in_message = False

    def __init__(self, message: str, *, filename: str = "<unknown>", lineno: int = 0, col: int = 0,
                 source_line: str = "", end_col: int | None = None) -> None:
        self.msg = message
        self.filename = filename
        self.lineno = lineno
        self.col = col
        self.source_line = source_line
        self.end_col = end_col
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.filename}:{self.lineno}:{self.col + 1}: {self.msg}"
        if not self.source_line:
            return head
        line = self.source_line.rstrip("\n")
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        width = max(1, (self.end_col if self.end_col and self.end_col > self.col else self.col + 1) - self.col)
        caret = " " * (self.col - indent) + "^" * width
        return f"{head}\n    {stripped}\n    {caret}"


class KernelTypeError(KernelError):
    """A type mismatch inside a kernel (a subclass so callers can tell it apart)."""


class ArgumentError(KilnError, TypeError):
    """A kernel or graph was called with a missing, unknown or wrongly typed argument."""

    names_stage_in_message = False


class ArgumentValueError(KilnError, ValueError):
    """An argument has the right type but a wrong value: shape, contiguity, writability, range."""

    names_stage_in_message = False


class ArtifactError(KilnError):
    """A .kiln file (or an object blob inside it) is damaged, unsupported or cannot run here."""

    names_stage_in_message = False


class TargetError(KilnError):
    """A requested compile target does not exist or cannot be built on this machine."""

    names_stage_in_message = False


class CudaError(KilnError):
    """The CUDA target cannot run here (no GPU, no driver, no cuda-bindings, no usable code in the
    file) or a CUDA driver call failed. The message says which and what to do."""

    names_stage_in_message = False


class MissingExtraError(KilnError, ImportError):
    """Something needs an optional part of kiln whose packages are not installed (the `compile`
    extra for compiling, `cuda` for GPUs). The message names the pip command that installs it;
    `extra` is the extra's name and `install` that command (kiln._extras builds both)."""

    names_stage_in_message = False

    def __init__(self, message: str, *, extra: str, install: str) -> None:
        super().__init__(message)
        self.extra = extra
        self.install = install


class MissingCudaExtraError(MissingExtraError, CudaError):
    """The `cuda` extra is missing: a CudaError too, so code that handles CUDA failures sees it."""


class KilnWarning(UserWarning):
    """A compile-time warning about the user's kernel code (e.g. a float stored into an int
    local), reported at the user's file and line."""


class KernelIndexError(KilnError, IndexError):
    """Debug mode: a kernel indexed an array outside its shape (docs/debug.md). The message names
    the kernel, the source line, the array, the index and the shape; nothing after the failing
    access ran (the kernel stopped there and the rest of the graph was skipped)."""

    names_stage_in_message = False


class KernelZeroDivisionError(KilnError, ZeroDivisionError):
    """Debug mode: a kernel divided an integer by zero with `//` or `%` (docs/debug.md)."""

    names_stage_in_message = False
