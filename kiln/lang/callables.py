"""`Compilable` (what kernels and funcs share: the Python function, its source, its type
annotations) and `Func`. The front end's compiler (kiln.lang.function) recognises them without
importing the kernel module, which sits above it (kiln.lang.kernel)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

from kiln.errors import ArgumentError, KernelError
from kiln.lang.fields import Template, TemplateArg, template
from kiln.lang.transformer import SourceInfo
from kiln.types import (
    DEFAULT_INT,
    MatrixType,
    NdArrayType,
    ScalarType,
    bool_,
    default_fp,
    from_numpy,
    ndarray,
)

_ANN_CASTS: dict[int, ScalarType] = {id(int): DEFAULT_INT, id(bool): bool_}   # float: default_fp()


def _error(src: SourceInfo, node: ast.AST, msg: str) -> KernelError:
    loc = src.loc(node)
    return KernelError(msg, filename=loc.filename, lineno=loc.line, col=loc.col,
                       source_line=src.line_text(loc.line), end_col=loc.end_col)


class Compilable:
    """What kernels and funcs share: the Python function, its source and its annotations."""

    kind = "function"

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not inspect.isfunction(fn):
            raise TypeError(f"@kl.{self.kind} decorates a Python function, got {fn!r}")
        self.py_func = fn
        self.name: str = fn.__name__
        self.qualname: str = fn.__qualname__
        self.filename: str = inspect.getsourcefile(fn) or fn.__code__.co_filename
        self.first_line: int = fn.__code__.co_firstlineno
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._src: SourceInfo | None = None
        self._def: ast.FunctionDef | None = None
        self._annotations: list[ScalarType | NdArrayType] | None = None
        self._ret: ScalarType | None = None
        code = fn.__code__
        self.param_names: list[str] = list(code.co_varnames[:code.co_argcount])

    @property
    def globals(self) -> dict[str, Any]:
        return self.py_func.__globals__

    @property
    def closure(self) -> dict[str, Any]:
        out = {}
        for name, cell in zip(self.py_func.__code__.co_freevars, self.py_func.__closure__ or ()):
            try:
                out[name] = cell.cell_contents
            except ValueError:
                pass
        return out

    @property
    def source(self) -> str:
        return "".join(self._source_info().lines)

    def _source_info(self) -> SourceInfo:
        if self._src is None:
            try:
                lines, first = inspect.getsourcelines(self.py_func)
            except (OSError, TypeError) as e:
                raise KernelError(f"cannot read the source of {self.kind} '{self.name}': {e}",
                                  filename=self.filename, lineno=self.first_line) from None
            text = "".join(lines)
            ded = textwrap.dedent(text)
            first_raw = next((ln for ln in lines if ln.strip()), "")
            first_ded = next((ln for ln in ded.splitlines(True) if ln.strip()), "")
            indent = len(first_raw) - len(first_ded)
            self._src = SourceInfo(self.filename, first, lines, indent)
            tree = ast.parse(ded)
            fdef = tree.body[0] if tree.body else None
            if not isinstance(fdef, ast.FunctionDef):
                raise KernelError(f"@kl.{self.kind} must decorate a plain 'def' function",
                                  filename=self.filename, lineno=first)
            self._def = fdef
            self._check_signature(fdef)
        return self._src

    def _fdef(self) -> ast.FunctionDef:
        self._source_info()
        assert self._def is not None
        return self._def

    def _check_signature(self, fdef: ast.FunctionDef) -> None:
        a = fdef.args
        assert self._src is not None
        if a.vararg or a.kwarg or a.kwonlyargs:
            raise _error(self._src, fdef, f"{self.kind} '{self.name}': *args, **kwargs and keyword-only "
                                          f"parameters are not supported")
        if a.defaults:
            raise _error(self._src, a.defaults[0], f"{self.kind} '{self.name}': default parameter values "
                                                   f"are not supported")

    def _eval_annotation(self, ann: Any, node: ast.AST) -> Any:
        for _ in range(2):  # a quoted annotation under `from __future__ import annotations`
            if not isinstance(ann, str):
                break
            try:
                    ann = eval(ann, dict(self.globals), self.closure)
            except Exception as e:  # noqa: BLE001 - any error in the user's annotation
                raise _error(self._source_info(), node, f"cannot evaluate annotation {ann!r}: {e}") from None
        return ann

    def _to_type(self, ann: Any, node: ast.AST, what: str) -> ScalarType | NdArrayType:
        if isinstance(ann, ScalarType | NdArrayType | MatrixType | Template):
            return ann  # type: ignore[return-value]
        if ann is template:  # `kl.template` written without the call
            return template()  # type: ignore[return-value]
        if ann is ndarray:
            return NdArrayType(None, None)
        if ann is float:        # Python's float means the default float, as in Taichi
            return default_fp()
        if id(ann) in _ANN_CASTS:
            return _ANN_CASTS[id(ann)]
        if isinstance(ann, type) and issubclass(ann, np.generic):
            t = from_numpy(np.dtype(ann))
            if t is not None:
                return t
        raise _error(self._source_info(), node, f"{what} has unsupported type annotation {ann!r}; use a "
                                                f"kiln type such as kl.f32 or kl.ndarray(kl.f32, ndim=1)")

    @property
    def annotations(self) -> list[ScalarType | NdArrayType]:
        """The declared parameter types, in order (ndarray dtype/ndim may be None = generic)."""
        if self._annotations is None:
            fdef = self._fdef()
            raw = self.py_func.__annotations__
            out = []
            for k, arg in enumerate(fdef.args.posonlyargs + fdef.args.args):
                if k == 0 and arg.arg == "self" and arg.arg not in raw:  # a method of a data-oriented class
                    out.append(template())  # type: ignore[arg-type]
                    continue
                if arg.arg not in raw:
                    raise _error(self._source_info(), arg, f"parameter '{arg.arg}' of {self.kind} "
                                                           f"'{self.name}' needs a type annotation")
                ann = self._eval_annotation(raw[arg.arg], arg)
                out.append(self._to_type(ann, arg, f"parameter '{arg.arg}'"))
            if "return" in raw and fdef.returns is not None:
                ret = self._eval_annotation(raw["return"], fdef.returns)
                if ret is None:
                    self._ret = None
                else:
                    rt = self._to_type(ret, fdef.returns, "the return value")
                    if not isinstance(rt, ScalarType):
                        raise _error(self._source_info(), fdef.returns,
                                     f"{self.kind} '{self.name}' can only return a scalar")
                    self._ret = rt
            self._annotations = out
        return self._annotations

    @property
    def return_type(self) -> ScalarType | None:
        self.annotations  # noqa: B018 - computes _ret
        return self._ret

    def _concrete(self, types: tuple[ScalarType | NdArrayType, ...]) -> tuple[ScalarType | NdArrayType, ...]:
        anns = self.annotations
        if len(types) != len(anns):
            raise ArgumentError(f"{self.kind} '{self.name}' has {len(anns)} parameter(s), got {len(types)} type(s)")
        out: list[ScalarType | NdArrayType] = []
        for pname, ann, t in zip(self.param_names, anns, types):
            if isinstance(ann, Template):
                if not isinstance(t, TemplateArg) and not (isinstance(t, NdArrayType) and t.is_concrete):
                    raise ArgumentError(f"parameter '{pname}' of {self.kind} '{self.name}' is a kl.template(): "
                                        f"it needs a compile-time value (a field, a constant), got {t!r}")
                out.append(t)
                continue
            if isinstance(ann, ScalarType | MatrixType):
                if t != ann:
                    raise ArgumentError(f"parameter '{pname}' of {self.kind} '{self.name}' is {ann!r}, got {t!r}")
                out.append(ann)
                continue
            if not isinstance(t, NdArrayType) or not t.is_concrete:
                raise ArgumentError(f"parameter '{pname}' of {self.kind} '{self.name}' needs a concrete "
                                    f"ndarray type, got {t!r}")
            if (ann.dtype is not None and ann.dtype != t.dtype) or (ann.ndim is not None and ann.ndim != t.ndim) or (
                    ann.element_shape != t.element_shape):
                raise ArgumentError(f"parameter '{pname}' of {self.kind} '{self.name}' is {ann!r}, got {t!r}")
            out.append(t)
        return tuple(out)

    def __repr__(self) -> str:
        return f"<kiln {self.kind} {self.qualname}>"


class Func(Compilable):
    """A `@kl.func`: callable from kernels and other funcs, specialised per argument types.

    Fully annotated scalar/ndarray funcs returning nothing or a scalar compile to their own IR
    function; every other func is inlined at its call sites (`inlined`, kiln.lang.inline)."""

    kind = "func"

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__(fn)
        self._inlined: bool | None = None

    def raw_annotations(self) -> dict[str, Any]:
        """Parameter and return annotations by name: kiln scalar/ndarray types where the
        annotation is one, else the evaluated annotation object (the inliner binds those
        arguments as they are: vector and template types of other front-end parts)."""
        fdef = self._fdef()
        raw = self.py_func.__annotations__
        out: dict[str, Any] = {}
        nodes: list[tuple[str, ast.AST]] = [(a.arg, a) for a in fdef.args.posonlyargs + fdef.args.args]
        if fdef.returns is not None:
            nodes.append(("return", fdef.returns))
        for name, node in nodes:
            if name not in raw:
                continue
            ann = self._eval_annotation(raw[name], node)
            try:
                out[name] = None if ann is None else self._to_type(ann, node, name)
            except KernelError:
                out[name] = ann
        return out

    @property
    def inlined(self) -> bool:
        """Whether calls expand in the caller (Taichi's ti.func) rather than call an IR function."""
        if self._inlined is None:
            fdef = self._fdef()
            anns = self.raw_annotations()
            params = [a.arg for a in fdef.args.posonlyargs + fdef.args.args]
            generic = any(not isinstance(anns.get(p), ScalarType | NdArrayType | MatrixType | Template) for p in params)
            if "return" in anns:
                odd_return = anns["return"] is not None and not isinstance(anns["return"], ScalarType)
            else:   # no annotation: returning a value at all makes it a Taichi-style func
                odd_return = any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fdef))
            self._inlined = generic or odd_return
        return self._inlined

    def require_inline(self) -> None:
        """Its body needs the caller's context (kl.random): inline it from now on."""
        self._inlined = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Outside kernels a func is plain Python (handy for testing reference code).
        return self.py_func(*args, **kwargs)
