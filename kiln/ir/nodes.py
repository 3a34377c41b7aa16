"""kiln's typed kernel IR: frozen dataclasses, one op enum per node family, an explicit type and
a source location on every node.

The front end (kiln.lang) produces it, passes (kiln.passes) rewrite it, code generators
(kiln.codegen) consume it. The IR is a tree (structured control flow), not SSA: locals are named
mutable variables declared once per function with a fixed type; the code generator gives each an
alloca and lets LLVM's mem2reg build SSA.

Invariants (checked by kiln.ir.verify):
- every Expr carries a concrete ScalarType (arrays only appear as `ArrayRef`);
- binary operands already have the result type (the front end inserts Casts), except shifts
  whose right operand may be any int type, and comparisons whose result is bool;
- `AugStore` exists only between the front end and the `lower_aug_stores` pass;
- `ParallelFor` appears only at the top level of a kernel body, never in funcs, never nested;
- `Break`/`Continue` only inside serial `For`/`While`.

Plans (set by kiln.passes.plan_parallel, obeyed by the code generators, printed with the IR):
`ParallelFor.plan` says which atomics and arrays each chunk/thread privatises, and
`KernelIR.launch_plan` how the kernel splits into GPU launches. Both are plain frozen data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kiln.types import NdArrayType, ScalarType


@dataclass(frozen=True)
class Loc:
    """Where a node came from in the user's source (1-based line, 0-based columns)."""

    filename: str
    line: int
    col: int
    end_col: int | None = None


NO_LOC = Loc("<kiln>", 0, 0)


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------

class UnaryOp(enum.Enum):
    NEG = "-"
    NOT = "not"        # logical, operand is bool
    INVERT = "~"       # bitwise, operand is int (or bool: logical not)


class BinaryOp(enum.Enum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"          # true division: operands and result are float
    FLOORDIV = "//"    # Python semantics: rounds toward -inf (ints and floats)
    MOD = "%"          # Python semantics: result has the sign of the divisor
    POW = "**"
    BITAND = "&"
    BITOR = "|"
    BITXOR = "^"
    SHL = "<<"
    SHR = ">>"         # arithmetic for signed ints, logical for unsigned


class CompareOp(enum.Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class LogicalOp(enum.Enum):
    AND = "and"        # short-circuit, operands and result are bool
    OR = "or"


class AtomicOp(enum.Enum):
    ADD = "add"
    SUB = "sub"
    MIN = "min"
    MAX = "max"
    AND = "and"        # ints only
    OR = "or"
    XOR = "xor"


@dataclass(frozen=True)
class Expr:
    type: ScalarType
    loc: Loc


@dataclass(frozen=True)
class Const(Expr):
    value: bool | int | float


@dataclass(frozen=True)
class Var(Expr):
    """Read of a scalar local variable or scalar parameter of the enclosing function."""

    name: str


@dataclass(frozen=True)
class ArrayRef:
    """An ndarray parameter of the enclosing function (arrays are never locals or values)."""

    name: str
    type: NdArrayType   # always concrete (dtype and ndim set)
    loc: Loc


@dataclass(frozen=True)
class Shape(Expr):
    """`x.shape[dim]`, type INDEX (i64)."""

    array: ArrayRef
    dim: int


@dataclass(frozen=True)
class Load(Expr):
    """`x[i, j]`: one index per dimension, each of an int type; type is the array's dtype."""

    array: ArrayRef
    indices: tuple[Expr, ...]
    #: debug mode: the index of this access's site in `KernelIR.checks` (bounds-checked when
    #: >= 0; set only by kiln.passes.insert_bounds_checks)
    check: int = -1


@dataclass(frozen=True)
class Unary(Expr):
    op: UnaryOp
    operand: Expr


@dataclass(frozen=True)
class Binary(Expr):
    op: BinaryOp
    lhs: Expr
    rhs: Expr
    #: debug mode: integer `//` and `%` whose divisor is checked for zero (a `KernelIR.checks`
    #: index, as on Load)
    check: int = -1


@dataclass(frozen=True)
class Compare(Expr):
    """Single comparison (chains are split into Logical ANDs by the front end); type is bool.
    Both operands have the same type."""

    op: CompareOp
    lhs: Expr
    rhs: Expr


@dataclass(frozen=True)
class Logical(Expr):
    op: LogicalOp
    lhs: Expr
    rhs: Expr


@dataclass(frozen=True)
class Select(Expr):
    """`a if cond else b` (lazy: only the taken side is evaluated) and `kl.select(c, a, b)`."""

    cond: Expr
    if_true: Expr
    if_false: Expr


@dataclass(frozen=True)
class Cast(Expr):
    """Numeric conversion to `type`. float->int truncates toward zero (C, numpy astype);
    anything->bool is `!= 0`."""

    value: Expr


@dataclass(frozen=True)
class BuiltinCall(Expr):
    """A math builtin declared in kiln.ir.builtins (sqrt, sin, atan2, isnan, ...)."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class AtomicRMW(Expr):
    """Atomically `x[idx] = x[idx] <op> value` and return the old value (type = array dtype)."""

    op: AtomicOp
    array: ArrayRef
    indices: tuple[Expr, ...]
    value: Expr
    check: int = -1             # as on Load


@dataclass(frozen=True)
class Call(Expr):
    """Call of a @kl.func by its unique IR name. `args` are scalar Exprs or ArrayRefs in the
    order of the callee's params. For a func without return value, type is bool and the value
    is meaningless (only valid as an ExprStmt)."""

    func: str
    args: tuple[Expr | ArrayRef, ...]


# ---------------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stmt:
    loc: Loc


@dataclass(frozen=True)
class Assign(Stmt):
    """`name = value` for a scalar local (declared in FunctionIR.locals with value's type)."""

    name: str
    value: Expr


@dataclass(frozen=True)
class Store(Stmt):
    """`x[i, j] = value`, value already cast to the array dtype."""

    array: ArrayRef
    indices: tuple[Expr, ...]
    value: Expr
    check: int = -1             # as on Load


@dataclass(frozen=True)
class AugStore(Stmt):
    """`x[i] op= value` as written; lowered by passes.lower_aug_stores to an atomic (inside a
    parallel loop) or a load-op-store (elsewhere). `value` has the array dtype."""

    op: AtomicOp
    array: ArrayRef
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True)
class ExprStmt(Stmt):
    """An expression evaluated for its effect (atomics, calls)."""

    value: Expr


@dataclass(frozen=True)
class Print(Stmt):
    """`print(...)` in a kernel or func: the text `texts[0] + v0 + texts[1] + ... + texts[n]`
    (`len(texts) == len(values) + 1`; separators and the line end are in the texts). Compiled
    code appends a record to the module's print buffer; the runtime writes the text after the
    run (kiln.runtime.print_buffer)."""

    texts: tuple[str, ...]
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class If(Stmt):
    cond: Expr                  # bool
    then_body: tuple[Stmt, ...]
    else_body: tuple[Stmt, ...]


@dataclass(frozen=True)
class While(Stmt):
    cond: Expr                  # bool
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class For(Stmt):
    """Serial `for var in range(start, stop, step)`: start/stop/step share var's int type. The
    step is evaluated once; a zero step runs no iterations (Python raises; kiln cannot)."""

    var: str                    # a local of the function
    start: Expr
    stop: Expr
    step: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Break(Stmt):
    pass


@dataclass(frozen=True)
class Continue(Stmt):
    pass


@dataclass(frozen=True)
class Return(Stmt):
    value: Expr | None          # funcs only; cast to the declared return type


@dataclass(frozen=True)
class ParallelRange:
    """One dimension of a parallel loop: `start <= v < stop` by `step` (all INDEX typed)."""

    var: str
    start: Expr
    stop: Expr
    step: Expr


@dataclass(frozen=True)
class ScalarReduction:
    """`array[indices] op= v` statements whose indices never change in the loop and whose array
    the loop touches in no other way: each chunk (CPU) or thread (GPU) accumulates them in a
    private register and merges its partial result with ONE atomic at the end. `indices` carry
    no source locations (they are the key that matches the loop's atomics)."""

    array: str
    op: AtomicOp
    indices: tuple[Expr, ...]


@dataclass(frozen=True)
class PrivateArray:
    """An array that the loop only updates by statement-level atomics with varying indices (a
    histogram): a CPU chunk may scatter into a private copy (when the array is small enough, a
    run-time check) and merge it with one `merge_op` atomic per changed element."""

    array: str
    merge_op: AtomicOp


@dataclass(frozen=True)
class SharedAtomicArray:
    """An array updated by atomics in the loop that is NOT privatised, and why."""

    array: str
    reason: str


@dataclass(frozen=True)
class Coarsening:
    """GPU thread coarsening of a neighbour-reading loop (a stencil): each thread runs `factor`
    consecutive iterations of dimension `dim` (step 1) and loads each element of the arrays in
    `reuse` once for all of them: `u[i - 1, j]`, `u[i, j]` and `u[i + 1, j]` of consecutive rows
    are the same elements, kept in registers (a sliding window). Those arrays are only read in
    the loop (under every name: like CUDA's __restrict__)."""

    dim: int
    factor: int
    reuse: tuple[str, ...]


@dataclass(frozen=True)
class Vectorization:
    """GPU vector access along the innermost dimension: each thread runs `width` consecutive
    iterations of the loop's last dimension (step 1), starting at a multiple of `width` of its
    variable, so that the loads and stores of the arrays in `arrays` (indexed `[..., var + c]`)
    of those iterations sit side by side in memory and LLVM merges them into vector accesses
    (`ld.global.v4.f32`). The runtime alignment check (data pointer and strides) picks this path
    per launch; arrays that fail it run the plain loop."""

    width: int
    arrays: tuple[str, ...]


@dataclass(frozen=True)
class ParallelPlan:
    """How a parallel loop is run (kiln.passes.plan_parallel decides, codegen obeys)."""

    reductions: tuple[ScalarReduction, ...] = ()
    private_arrays: tuple[PrivateArray, ...] = ()
    shared_atomics: tuple[SharedAtomicArray, ...] = ()
    #: an iteration runs a serial loop or calls a func: the CPU weighs it as many simple ones
    #: when deciding whether the loop is worth running on threads
    heavy_iterations: bool = False
    #: the body is straight-line assignments, stores and planned reductions, so a GPU thread may
    #: run several iterations in lock step (kiln.codegen.nvptx)
    lockstep: bool = False
    #: the GPU runs this loop coarsened (None: one iteration per grid-stride step)
    coarsen: Coarsening | None = None
    #: the GPU runs consecutive innermost iterations with vector loads and stores (None: not)
    vector: Vectorization | None = None


@dataclass(frozen=True)
class ParallelFor(Stmt):
    """The kernel's outermost `for` over range/kl.ndrange: iterations run in parallel in any
    order, row-major over `dims` (the last dimension varies fastest). Locals assigned before the
    loop are read-only inside it; locals first assigned inside it are private to an iteration.
    `plan` is None until kiln.passes.plan_parallel runs; the code generators need it."""

    dims: tuple[ParallelRange, ...]
    body: tuple[Stmt, ...]
    plan: ParallelPlan | None = None


# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    name: str
    type: ScalarType | NdArrayType
    loc: Loc


@dataclass(frozen=True)
class FunctionIR:
    """A kernel (is_kernel=True, no return type) or a @kl.func.

    `name` is unique within a compilation (the front end mangles it with the specialisation's
    types). `locals` declares every scalar local and its type, params excluded.
    """

    name: str
    params: tuple[Param, ...]
    ret: ScalarType | None
    locals: tuple[tuple[str, ScalarType], ...]
    body: tuple[Stmt, ...]
    loc: Loc
    is_kernel: bool


@dataclass(frozen=True)
class LaunchPhase:
    """One GPU launch of a kernel: `mode` "loop" (a grid over the parallel loop `stmts[0]`) or
    "single" (one thread running `stmts`). `stmts` and `prefix` are indices into the kernel body;
    `prefix` are earlier serial statements every thread re-executes first with their side effects
    stripped, so that locals have their values."""

    mode: str
    stmts: tuple[int, ...]
    prefix: tuple[int, ...] = ()


@dataclass(frozen=True)
class LaunchPlan:
    """How the kernel splits into GPU launches, in order. A kernel the GPU cannot run has no
    phases and `cuda_refusal` says why (raised only when compiling for CUDA, at `refusal_loc`)."""

    phases: tuple[LaunchPhase, ...]
    cuda_refusal: str = ""
    refusal_loc: Loc = NO_LOC


@dataclass(frozen=True)
class CheckSite:
    """One run-time check of debug mode (kiln.passes.insert_bounds_checks): `kind` "index" (an
    access of `array`, whose indices must satisfy 0 <= i < extent in every dimension) or
    "divide" (an integer `//`/`%` whose divisor must be non-zero; `array` is empty). `loc` is
    the user's source line; a failing check stops the kernel and is reported with it."""

    kind: str
    array: str
    loc: Loc


@dataclass(frozen=True)
class KernelIR:
    """A kernel together with every func it (transitively) calls, callees first."""

    kernel: FunctionIR
    funcs: tuple[FunctionIR, ...] = field(default=())
    #: the user-facing name of the kernel (the Python function's qualified name)
    display_name: str = ""
    #: set by kiln.passes.plan_parallel (None before)
    launch_plan: LaunchPlan | None = None
    #: debug mode: the check sites that accesses and divisions of the kernel and its funcs refer
    #: to by index (`Load.check`, ...); empty in release builds
    checks: tuple[CheckSite, ...] = ()
