"""Compiles one Python function (a kernel or a func specialisation) to a FunctionIR."""

from __future__ import annotations

import ast
import re

from kiln.abi import HIDDEN_PREFIX
from kiln.errors import KernelError
from kiln.ir import nodes as ir
from kiln.lang.callables import Compilable, Func
from kiln.lang.fields import Field, TemplateArg
from kiln.lang.inline import InlineFrame
from kiln.lang.matrix_assign import vector_params
from kiln.lang.random import RngUse, finish_kernel
from kiln.lang.stmts import always_returns
from kiln.lang.structfor import StructForMixin
from kiln.lang.transformer import LoopCtx, NameResolver, Scope, SourceInfo
from kiln.lang.values import LangError, Value, cast_to, from_python, type_error
from kiln.types import INDEX, MatrixType, NdArrayType, ScalarType


def mangle(qualname: str, types: tuple[ScalarType | NdArrayType, ...]) -> str:
    """`clamp` with (f32, f32, f32) -> `clamp__f32_f32_f32`; arrays are `f32a2` (dtype + ndim)."""
    base = re.sub(r"[^0-9A-Za-z_]", "_", qualname.replace(".<locals>.", "."))
    parts = [f"{t.dtype.name}a{t.ndim}" if isinstance(t, NdArrayType) else t.tag if isinstance(t, TemplateArg)
             else f"{t.dtype.name}v{'x'.join(map(str, t.shape))}" if isinstance(t, MatrixType)
             else t.name for t in types]  # type: ignore[union-attr]
    return base + "__" + "_".join(parts) if parts else base + "__"


class FunctionCompiler(StructForMixin):
    def __init__(self, obj: Compilable, ctx: CompileContext, types: tuple[ScalarType | NdArrayType, ...],
                 is_kernel: bool) -> None:
        self.obj = obj
        self.src: SourceInfo = obj._source_info()
        self.ctx = ctx
        self.types = types
        self.is_kernel = is_kernel
        self.resolver = NameResolver(obj.py_func)
        self.scope = Scope()
        self.region: int | None = None
        self.region_lines: dict[int, int] = {}
        self.loops: list[LoopCtx] = []
        self.nesting = 0
        self.func_name = obj.name
        self.ret = None if is_kernel else obj.return_type
        self.local_decls: dict[str, ScalarType] = {}
        #: hidden parameter name ("@x") -> the field it carries, in parameter order
        self.field_params: dict[str, Field] = {}
        self.tuple_locals: dict[str, Value] = {}
        self.pending: list[ir.Stmt] = []
        self.inline: InlineFrame | None = None
        self.rng = RngUse()
        self.compiling_func = not is_kernel

    def compile(self, name: str) -> ir.FunctionIR:
        try:
            return self._compile(name)
        except LangError as e:
            raise self.to_kernel_error(e) from None
        except RecursionError:
            raise KernelError("expression or call chain nested too deeply",
                              filename=self.src.filename, lineno=self.src.first_line) from None

    def _compile(self, name: str) -> ir.FunctionIR:
        fdef = self.obj._fdef()
        params: list[ir.Param] = []
        prologue: list[ir.Stmt] = []
        assigned = {n.id for n in ast.walk(fdef) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        for arg, t in zip(fdef.args.posonlyargs + fdef.args.args, self.types):
            loc = self.loc(arg)
            if isinstance(t, MatrixType):  # a vector argument: one scalar IR param per element
                params += vector_params(self, arg.arg, t, loc)
                continue
            if isinstance(t, TemplateArg):  # a compile-time value: no IR parameter
                self.scope.params[arg.arg] = self.template_value(t, arg.arg, loc)
                continue
            params.append(ir.Param(arg.arg, t, loc))
            value: Value
            if isinstance(t, NdArrayType):
                value = ir.ArrayRef(arg.arg, t, loc)
            else:
                value = ir.Var(t, loc, arg.arg)
                if arg.arg in assigned:  # a scalar param assigned in the body: a local copy
                    lv = self.declare(arg.arg, t, loc.line, ir_name=f"{arg.arg}.copy")
                    prologue.append(ir.Assign(loc, lv.ir_name, value))
            self.scope.params[arg.arg] = value
        body = prologue + self.stmts(fdef.body)
        params += [ir.Param(h, f.array_type, self.loc(fdef)) for h, f in self.field_params.items()]
        if self.is_kernel:
            body = finish_kernel(self, params, body, self.loc(fdef))
        if self.ret is not None and not always_returns(body):
            raise LangError(f"func '{self.func_name}' must end with a return statement (some path "
                            f"returns no {self.ret.name} value)", fdef)
        return ir.FunctionIR(name=name, params=tuple(params), ret=self.ret,
                             locals=tuple(self.local_decls.items()), body=tuple(body),
                             loc=self.loc(fdef), is_kernel=self.is_kernel)

    def template_value(self, t: TemplateArg, pname: str, loc: ir.Loc) -> Value:
        """What a template parameter means in the body: a field's array, a constant, an object."""
        if isinstance(t.value, Field):
            return self.field_ref(t.value, pname, loc)
        return from_python(t.value)

    def field_ref(self, f: Field, capture_name: str, loc: ir.Loc) -> ir.ArrayRef:
        """The hidden array parameter that carries field `f` (added on first use)."""
        hidden = HIDDEN_PREFIX + f.name_for(capture_name)
        prev = self.field_params.setdefault(hidden, f)
        if prev is not f:
            raise LangError(f"two different fields are both named '{f.name}'; give one another name with "
                            f"kl.field(..., name=...)")
        return ir.ArrayRef(hidden, f.array_type, loc)

    def kernel_return(self, value: ast.expr, loc: ir.Loc) -> list[ir.Stmt]:
        """`return v` in a kernel (Taichi's kernel return value): v is stored in the kernel's
        0-d result field (kiln.lang.kernel.Kernel.result_field), which a direct call returns."""
        f = getattr(self.obj, "result_field", None)
        if f is None:
            raise type_error(f"kernel '{self.func_name}' returns a value but has no return type annotation "
                             "(-> kl.f32)")
        arr = self.field_ref(f, f"{self.func_name}_result", loc)
        v = cast_to(self.scalar(value), f.dtype, loc)
        return [ir.Store(loc, arr, (ir.Const(INDEX, loc, 0),), v), ir.Return(loc, None)]

    def field_of(self, arr: ir.ArrayRef) -> Field | None:
        return self.field_params.get(arr.name)


class CompileContext:
    """State of one kernel compilation: func specialisations (callees first) and the call stack
    used to detect recursion."""

    def __init__(self) -> None:
        self.done: dict[tuple[int, tuple[ScalarType | NdArrayType, ...]], ir.FunctionIR] = {}
        self.order: list[ir.FunctionIR] = []
        self.stack: list[Func] = []
        self.names: set[str] = set()
        #: func IR name -> the fields its hidden parameters carry (callers pass them on)
        self.func_fields: dict[str, dict[str, Field]] = {}
        self.inline_count = 0      # expansions of inlined funcs so far (their locals' prefixes)

    def unique_name(self, base: str) -> str:
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def specialize_func(self, func: Func, types: tuple[ScalarType | NdArrayType, ...]) -> ir.FunctionIR:
        key = (id(func), types)
        fir = self.done.get(key)
        if fir is not None:
            return fir
        if any(f is func for f in self.stack):
            chain = " -> ".join(f.name for f in self.stack[self.stack.index(func):]) + f" -> {func.name}"
            raise LangError(f"recursive call to func '{func.name}' is not supported ({chain})")
        func._source_info()
        self.stack.append(func)
        try:
            compiler = FunctionCompiler(func, self, types, is_kernel=False)
            fir = compiler.compile(self.unique_name(mangle(func.qualname, types)))
        finally:
            self.stack.pop()
        self.func_fields[fir.name] = compiler.field_params
        self.done[key] = fir
        self.order.append(fir)
        return fir
