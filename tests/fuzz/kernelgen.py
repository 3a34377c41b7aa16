"""Random well-typed kiln kernels for the differential fuzzer (tests/fuzz/fuzz_diff.py,
tests/test_differential.py).

A `Draw` makes every random choice (hypothesis' `data.draw` in the test, `random.Random` in the
long-run script), so hypothesis can shrink a failing kernel choice by choice.

Each kernel is one parallel loop over `i` that writes `out_<T>[i]` for several dtypes, reads input
arrays `in_<T>` (filled with each dtype's edge values) at `i` or at any index reduced into range,
keeps per-iteration locals, nests if / while / serial for, calls a generated @kl.func, and
accumulates into small int arrays with atomics (order-independent, so the result is defined).
Expressions cover every dtype, casts between all of them, integer edge constants, every operator
(// % ** on ints and floats, shifts by any count, division by zero), and the exact math builtins.
Optionally some outputs `tx_<T>[i]` apply one transcendental builtin last (compared within a few
ulp).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

INTS = ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"]
FLOATS = ["f32", "f64"]
NUMERIC = INTS + FLOATS
ALL_STORAGE = ["bool", *NUMERIC, "f16"]
NP = {"bool": np.bool_, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
      "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64, "f16": np.float16,
      "f32": np.float32, "f64": np.float64}
KL = {"bool": "kl.bool_"} | {t: f"kl.{t}" for t in NUMERIC + ["f16"]}
N = 8          # length of every in_/out_ array
ACC = 4        # length of every acc_ array
ACC_OP_GROUPS = [("add", "sub", "+=", "-="), ("and", "&="), ("or", "|="), ("xor", "^="), ("min",), ("max",)]
TRANSCENDENTAL = ["sin", "cos", "exp", "log", "tan", "atan", "tanh", "asin", "acos", "rsqrt"]


class Draw:
    """Random choices; subclasses decide where they come from."""

    def __init__(self, integer: Callable[[int, int], int]) -> None:
        self.integer = integer

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.integer(0, len(options) - 1)]

    def chance(self, percent: int) -> bool:
        return self.integer(0, 99) < percent


def edge_values(t: str) -> list[Any]:
    if t == "bool":
        return [False, True]
    if t in INTS:
        info = np.iinfo(NP[t])
        return [int(info.min), int(info.max), 0, 1, -1 if info.min < 0 else 2, int(info.min) + 1,
                int(info.max) - 1, 7, 3, 100 if info.max >= 100 else 5]
    finfo = np.finfo(NP[t])
    return [0.0, -0.0, 1.0, -1.5, 0.5, 3.0, float(finfo.max), -float(finfo.max), float(finfo.tiny),
            float(finfo.smallest_subnormal), np.inf, -np.inf, np.nan, 1e-3, 7.25, -100.0]


def literal(t: str, value: Any) -> str:
    if t == "bool":
        return "True" if value else "False"
    if t in INTS:
        return f"{KL[t]}({int(value)})"
    v = float(value)
    if np.isnan(v):
        return f"({KL[t]}(math.inf) - {KL[t]}(math.inf))"
    if np.isinf(v):
        return f"{KL[t]}({'-' if v < 0 else ''}math.inf)"
    return f"{KL[t]}({v!r})"


class KernelGen:
    """Generates the source of one module: a func and a kernel."""

    def __init__(self, draw: Draw, name: str = "kern", transcendental: bool = True,
                 wild_indices: bool = False) -> None:
        self.d = draw
        #: True: computed indices sometimes fall past the array's end (for debug mode, whose
        #: checks must then fail the same way in compiled code and in the interpreter)
        self.wild_indices = wild_indices
        self.name = name
        self.out_types = sorted({self.d.choice(ALL_STORAGE) for _ in range(self.d.integer(1, 4))})
        self.in_types = sorted(set(self.out_types) | {self.d.choice(ALL_STORAGE)
                                                       for _ in range(self.d.integer(1, 4))})
        self.acc_types = sorted({self.d.choice(INTS) for _ in range(self.d.integer(0, 2))})
        # one commuting family of atomics per accumulator array inside the parallel loop: mixing
        # (add with or, say) would make the result depend on the iterations' order
        self.acc_ops = {t: self.d.choice(ACC_OP_GROUPS) for t in self.acc_types}
        self.tx_types = (sorted({self.d.choice(FLOATS) for _ in range(self.d.integer(0, 2))})
                         if transcendental else [])
        self.scalar_types = sorted({self.d.choice(NUMERIC + ["bool"]) for _ in range(self.d.integer(0, 3))})
        self.func_type = self.d.choice(NUMERIC) if self.d.chance(50) else None
        self.locals: dict[str, str] = {}         # name -> type, visible from here on
        self.counter = 0
        self.in_func = False
        self.func_params: list[tuple[str, str]] = []
        #: locals of the serial prologue: readable in the parallel loop, never assigned there
        self.readonly: dict[str, str] = {}

    # ------------------------------------------------------------------------------ expressions
    def expr(self, t: str, depth: int = 0) -> str:
        """A Python expression of kiln type `t` (f16: storage only, from casts and loads)."""
        if t == "f16":
            return self.d.choice([lambda: f"kl.f16({self.expr(self.d.choice(FLOATS), depth + 1)})",
                                  lambda: self.load("f16") if "f16" in self.in_types and not self.in_func
                                  else self.literal("f16")])()
        if depth >= 3 or self.d.chance(25):
            return self.atom(t)
        if t == "bool":
            return self.bool_expr(depth)
        options: list[Callable[[], str]] = [
            lambda: self.binary(t, depth), lambda: self.binary(t, depth), lambda: self.cast(t, depth),
            lambda: self.unary(t, depth), lambda: self.select(t, depth), lambda: self.builtin(t, depth),
            lambda: self.mixed(t, depth),
        ]
        if self.func_type == t and not self.in_func:
            options.append(lambda: f"f0({self.expr(t, depth + 1)}, {self.expr(t, depth + 1)})")
        return self.d.choice(options)()

    def literal(self, t: str) -> str:
        return literal(t, self.d.choice(edge_values(t)))

    def atom(self, t: str) -> str:
        options: list[Callable[[], str]] = [lambda: self.literal(t)]
        names = [n for n, lt in self.locals.items() if lt == t]
        if names:
            options += [lambda: self.d.choice(names)] * 2
        if t in self.scalar_types and not self.in_func:
            options += [lambda: f"s_{t}"] * 2
        if t in self.in_types and not self.in_func:
            options += [lambda: self.load(t)] * 2
        if t == "i64" and not self.in_func:
            options += [lambda: "i"] * 2
        pool = list(self.locals.values()) if self.in_func else self.in_types
        if len(options) == 1 and pool and self.d.chance(60):
            # no variable of this type: read one of another type and cast (fewer constant kernels)
            u = self.d.choice(pool)
            if u != t:
                return f"{KL[t]}({self.atom(u)})"
        return self.d.choice(options)()

    def load(self, t: str) -> str:
        if self.d.chance(60):
            return f"in_{t}[i]"
        return f"in_{t}[kl.i64({self.expr(self.d.choice(INTS), 2)}) % {self.extent(N)}]"

    def extent(self, n: int) -> int:
        """The modulus that keeps a computed index in 0..n-1 (or, with wild indices, sometimes not)."""
        return n + 2 if self.wild_indices and self.d.chance(20) else n

    def bool_expr(self, depth: int) -> str:
        u = self.d.choice(NUMERIC + ["bool"])
        cmp_ = self.d.choice(["==", "!=", "<", "<=", ">", ">="]) if u != "bool" else self.d.choice(["==", "!="])
        return self.d.choice([
            lambda: f"({self.expr(u, depth + 1)} {cmp_} {self.expr(u, depth + 1)})",
            lambda: f"(not {self.expr('bool', depth + 1)})",
            lambda: f"({self.expr('bool', depth + 1)} {self.d.choice(['and', 'or', '&', '|', '^'])} "
                    f"{self.expr('bool', depth + 1)})",
            lambda: f"kl.isnan({self.expr(self.d.choice(FLOATS), depth + 1)})",
            lambda: f"kl.isinf({self.expr(self.d.choice(FLOATS), depth + 1)})",
            lambda: f"kl.bool_({self.expr(self.d.choice(NUMERIC), depth + 1)})",
        ])()

    def binary(self, t: str, depth: int) -> str:
        ops = ["+", "-", "*", "//", "%", "**"]
        if t in INTS:
            ops += ["&", "|", "^", "<<", ">>"]
        else:
            ops += ["/", "/"]
        op = self.d.choice(ops)
        if t in FLOATS and op == "**":
            op = "*"          # float ** is libm pow: inexact, only in the tx_ outputs
        rhs_t = self.d.choice(INTS) if op in ("<<", ">>") else t
        return f"({self.expr(t, depth + 1)} {op} {self.expr(rhs_t, depth + 1)})"

    def mixed(self, t: str, depth: int) -> str:
        """Two operands of different types, promoted by the front end, then cast to `t`."""
        a, b = self.d.choice(NUMERIC), self.d.choice(NUMERIC)
        op = self.d.choice(["+", "-", "*", "//", "%"])
        return f"{KL[t]}({self.expr(a, depth + 1)} {op} {self.expr(b, depth + 1)})"

    def cast(self, t: str, depth: int) -> str:
        return f"{KL[t]}({self.expr(self.d.choice(ALL_STORAGE), depth + 1)})"

    def unary(self, t: str, depth: int) -> str:
        if t in INTS and self.d.chance(50):
            return f"(~{self.expr(t, depth + 1)})"
        return f"{KL[t]}(-{self.expr(t, depth + 1)})"

    def select(self, t: str, depth: int) -> str:
        c, a, b = self.expr("bool", depth + 1), self.expr(t, depth + 1), self.expr(t, depth + 1)
        if self.d.chance(50):
            return f"({a} if {c} else {b})"
        return f"kl.select({c}, {a}, {b})"

    def builtin(self, t: str, depth: int) -> str:
        names = ["abs", "min", "max"] + (["sqrt", "floor", "ceil", "round"] if t in FLOATS else [])
        name = self.d.choice(names)
        args = ", ".join(self.expr(t, depth + 1) for _ in range(2 if name in ("min", "max") else 1))
        return f"kl.{name}({args})"

    # ------------------------------------------------------------------------------ statements
    def new_local(self, t: str) -> str:
        self.counter += 1
        name = f"v{self.counter}_{t}"
        return name

    def stmts(self, depth: int, indent: str, count: int) -> list[str]:
        out: list[str] = []
        for _ in range(count):
            out += self.stmt(depth, indent)
        return out or [indent + "pass"]

    def stmt(self, depth: int, indent: str) -> list[str]:
        kinds = ["assign", "assign", "store", "store"]
        if depth < 2:
            kinds += ["if", "for", "while"]
        if self.acc_types and not self.in_func:
            kinds += ["atomic"]
        kind = self.d.choice(kinds)
        if kind == "assign":
            t = self.d.choice(NUMERIC + ["bool"])
            names = [n for n, lt in self.locals.items() if lt == t and n not in self.readonly]
            value = self.expr(t)
            if names and self.d.chance(50):
                return [f"{indent}{self.d.choice(names)} = {value}"]
            name = self.new_local(t)
            line = f"{indent}{name} = {KL[t]}({value})"
            self.locals[name] = t     # visible only after its first assignment
            return [line]
        if kind == "store":
            if self.in_func:
                return [f"{indent}pass"]
            t = self.d.choice(self.out_types)
            return [f"{indent}out_{t}[i] = {self.expr(t)}"]
        if kind == "atomic":
            t = self.d.choice(self.acc_types)
            idx = f"kl.i64({self.expr(self.d.choice(INTS), 2)}) % {self.extent(ACC)}"
            op = self.d.choice(self.acc_ops[t])
            if "=" in op:
                return [f"{indent}acc_{t}[{idx}] {op} {self.expr(t, 1)}"]
            return [f"{indent}kl.atomic_{op}(acc_{t}[{idx}], {self.expr(t, 1)})"]
        saved = dict(self.locals)
        if kind == "if":
            lines = [f"{indent}if {self.expr('bool', 1)}:"] + self.stmts(depth + 1, indent + "    ",
                                                                         self.d.integer(1, 3))
            self.locals = dict(saved)    # a local first set in one branch may be unset in the other
            lines += [f"{indent}else:"] + self.stmts(depth + 1, indent + "    ", self.d.integer(0, 2))
            self.locals = saved
            return lines
        if kind == "for":
            var = self.new_local("i64")
            stop = f"kl.i64({self.expr(self.d.choice(INTS), 2)}) % 4"
            lines = [f"{indent}for {var} in range({stop}):"]
            self.locals[var] = "i64"
            lines += self.stmts(depth + 1, indent + "    ", self.d.integer(1, 3))
            self.locals = saved
            return lines
        counter = self.new_local("i32")
        lines = [f"{indent}{counter} = kl.i32(0)",
                 f"{indent}while {counter} < 3 and {self.expr('bool', 2)}:",
                 f"{indent}    {counter} = {counter} + kl.i32(1)"]
        self.locals[counter] = "i32"
        self.readonly[counter] = "i32"      # the body must not reset it: the loop would not end
        lines += self.stmts(depth + 1, indent + "    ", self.d.integer(1, 3))
        if self.d.chance(30):
            lines += [f"{indent}    if {self.expr('bool', 2)}:", f"{indent}        break"]
        self.locals = saved
        self.locals[counter] = "i32"
        return lines

    # ------------------------------------------------------------------------------ whole module
    def func_source(self) -> list[str]:
        if self.func_type is None:
            return []
        t = self.func_type
        self.in_func, saved = True, self.locals
        self.locals = {"a": t, "b": t}
        body = self.stmts(1, "    ", self.d.integer(0, 2))
        lines = [f"@kl.func\ndef f0(a: {KL[t]}, b: {KL[t]}) -> {KL[t]}:", *body,
                 f"    if {self.expr('bool', 1)}:", f"        return {self.expr(t, 1)}",
                 f"    return {self.expr(t, 1)}", ""]
        self.in_func, self.locals = False, saved
        return lines

    def prologue(self) -> list[str]:
        """Serial code before the parallel loop: atomics whose old value is used (defined here,
        where nothing runs concurrently) and locals the loop may read but not assign."""
        lines: list[str] = []
        if not self.acc_types or not self.d.chance(50):
            return lines
        self.in_func, saved = True, self.locals      # no `i`, no loads of in_ at index i here
        self.locals = {}
        for _ in range(self.d.integer(1, 3)):
            t = self.d.choice(self.acc_types)
            op = self.d.choice(["add", "sub", "min", "max", "and", "or", "xor"])
            name = self.new_local(t)
            idx = self.d.integer(0, ACC - 1)
            lines.append(f"    {name} = kl.atomic_{op}(acc_{t}[{idx}], {self.expr(t, 1)})")
            self.locals[name] = t
        self.in_func = False
        self.readonly = dict(self.locals)
        self.locals = {**saved, **self.locals}
        return lines

    def params(self) -> list[tuple[str, str, str]]:
        """(name, kind, dtype) in parameter order."""
        ps = [(f"out_{t}", "array", t) for t in self.out_types]
        ps += [(f"tx_{t}", "array", t) for t in self.tx_types]
        ps += [(f"in_{t}", "array", t) for t in self.in_types]
        ps += [(f"acc_{t}", "array", t) for t in self.acc_types]
        ps += [(f"s_{t}", "scalar", t) for t in self.scalar_types]
        return ps

    def source(self) -> str:
        lines = ["import math", "import kiln as kl", "", *self.func_source()]
        sig = ", ".join(f"{n}: kl.ndarray({KL[t]}, ndim=1)" if k == "array" else f"{n}: {KL[t]}"
                        for n, k, t in self.params())
        lines += ["@kl.kernel", f"def {self.name}({sig}):", *self.prologue(),
                  f"    for i in range({N}):"]
        body = self.stmts(0, "        ", self.d.integer(1, 5))
        for t in self.out_types:      # every output written at least once
            body.append(f"        out_{t}[i] = {self.expr(t)}")
        for t in self.tx_types:
            fn = self.d.choice(TRANSCENDENTAL)
            body.append(f"        tx_{t}[i] = kl.{fn}({self.expr(t, 1)})")
        return "\n".join(lines + body) + "\n"

    def inputs(self) -> dict[str, Any]:
        """Fresh arguments: inputs hold edge values, outputs and accumulators start at zero/edges."""
        args: dict[str, Any] = {}
        for name, kind, t in self.params():
            if kind == "scalar":
                args[name] = NP[t](self.d.choice(edge_values(t)))
            elif name.startswith("in_"):
                vals = edge_values(t)
                args[name] = np.array([self.d.choice(vals) for _ in range(N)], NP[t])
            elif name.startswith("acc_"):
                args[name] = np.array([self.d.choice(edge_values(t)) for _ in range(ACC)], NP[t])
            else:
                args[name] = np.zeros(N, NP[t])
        return args
