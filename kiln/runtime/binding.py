"""Argument binding: check every argument of a run, then pack the native argument block.

Everything that does not depend on the call (names, dtypes, ranges, the struct format) is
computed once in `ArgBinder.__init__`; `pack` does only per-call work. All checks happen before
any native code runs, so a failing call leaves every array untouched. Arrays are never copied:
the block holds their data pointers and strides (any strides: views, transposes, Fortran order,
negative steps), and objects that are not numpy arrays but share their memory through
`__array_interface__`, the buffer protocol or CPU DLPack are bound through a numpy view of that
same memory (kiln.runtime.host_arrays).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from kiln._record import Record
from kiln.abi import HIDDEN_PREFIX, ParamLayout, block_struct, block_struct_objects, is_field_param, vector_of
from kiln.artifact.manifest import FieldInfo, ParamInfo, ShapeDim
from kiln.errors import ArgumentError, ArgumentValueError, ArtifactError
from kiln.runtime.host_arrays import HostArrayError, host_view
from kiln.types import SCALARS_BY_NAME, NdArrayType, from_numpy, value_range

_ARRAY, _BOOL, _INT, _FLOAT, _VECTOR = 0, 1, 2, 3, 4


def _probe_offsets() -> tuple[int, int]:
    """Offsets of the data pointer and of the strides pointer inside a CPython ndarray object
    (numpy's PyArrayObject_fields: data, nd, dimensions, strides), or (0, 0) if they can't be
    trusted.

    Reading them straight from the object is 3x faster than `a.ctypes.data`; they are verified
    on several live arrays before use, and `ndarray.ctypes.data` / `a.strides` are the fallback.
    """
    try:
        base = np.arange(24.0).reshape(2, 3, 4)
        probes = [np.empty(n, np.float32) for n in (1, 7, 1000)] + [
            base[1], base.T, base[::-1, :, ::2], np.asfortranarray(base)]
        ptr = ctypes.sizeof(ctypes.c_void_p)
        off = 2 * ptr                     # PyObject_HEAD on a default CPython build
        strides_off = off + 3 * ptr       # data, nd (padded), dimensions, then strides
        for a in probes:
            if ctypes.c_void_p.from_address(id(a) + off).value != a.ctypes.data:
                return 0, 0
            strides = ctypes.c_void_p.from_address(id(a) + strides_off).value or 0
            if tuple((ctypes.c_int64 * a.ndim).from_address(strides)) != a.strides:
                return 0, 0
        return off, strides_off
    except (OSError, ValueError, TypeError, AttributeError):  # pragma: no cover - exotic interpreters
        return 0, 0


#: where an ndarray object keeps its data pointer and its strides pointer (0: unknown, use the
#: plain entry points)
DATA_OFFSET, STRIDES_OFFSET = _probe_offsets()
_from_address = ctypes.c_void_p.from_address
_ndarray = np.ndarray


def data_pointer(a: np.ndarray) -> int:
    if DATA_OFFSET:
        return _from_address(id(a) + DATA_OFFSET).value or 0
    return int(a.ctypes.data)


class ArgPlan(Record):
    """What one parameter needs from its argument, computed once per graph or kernel."""

    __slots__ = ('name', 'kind', 'dtype', 'type_name', 'ndim', 'needs_write', 'shape', 'lo', 'hi', 'array_type',
                 'element_dims', 'parts')
    _defaults: ClassVar[dict[str, Any]] = {'lo': 0, 'hi': 0, 'array_type': None, 'element_dims': 0, 'parts': ()}
    name: str
    kind: int
    dtype: np.dtype | None
    type_name: str
    ndim: int
    needs_write: bool
    shape: tuple[ShapeDim, ...] | None
    lo: int | float
    hi: int | float
    array_type: NdArrayType | None   # arrays: the concrete type, whose `mismatch` words errors
    element_dims: int  # trailing dims of a vector/matrix element (0: scalar elements)
    parts: tuple[ArgPlan, ...]  # a vector/matrix scalar param: one plan per component


class ArgBinder:
    """Checks a mapping of named arguments against parameters and packs the argument block.

    The one argument checker of kiln: the CPU runtime packs with `pack`; the CUDA runtime calls
    `check_mapping`, `scalar`, `check_ndarray` and `check_shape` and adds only device-array checks.
    """

    def __init__(self, params: tuple[ParamInfo, ...], owner: str) -> None:
        self.owner = owner
        self.struct = block_struct([p.layout for p in params])
        self.struct_objects = block_struct_objects([p.layout for p in params])
        self.plans = self._plans(params)
        self.names = tuple(p.name for p in self.plans)
        self.name_set = frozenset(self.names)
        self.fast_plans = tuple((p.name, p.kind == _ARRAY, p.dtype, p.ndim, p.shape, p) for p in self.plans)
        self.has_symbols = any(isinstance(d, str) for p in params if p.shape for d in p.shape)
        used = [(p.layout.name, p.access) for p in params if p.layout.kind == "ndarray" and p.access != "none"]
        #: pairs of array parameters of which at least one is written (debug mode's overlap check)
        self.write_pairs = tuple((a, b) for k, (a, ma) in enumerate(used) for b, mb in used[k + 1:]
                                 if "write" in ma or "write" in mb)

    @classmethod
    def _plans(cls, params: tuple[ParamInfo, ...]) -> tuple[ArgPlan, ...]:
        """One plan per argument: a vector/matrix scalar argument `g` is laid out as the
        consecutive scalar params `g.0`, `g.1`, ... that carry its element_shape."""
        out: list[ArgPlan] = []
        i = 0
        while i < len(params):
            p = params[i]
            if p.layout.kind != "scalar" or not p.element_shape:
                out.append(cls._plan(p))
                i += 1
                continue
            n = math.prod(p.element_shape)
            parts = tuple(cls._plan(q) for q in params[i:i + n])
            out.append(ArgPlan(vector_of(p.layout.name), _VECTOR, None, p.layout.dtype, 0, False,
                               tuple(p.element_shape), parts=parts))
            i += n
        return tuple(out)

    @staticmethod
    def _plan(p: ParamInfo) -> ArgPlan:
        lay: ParamLayout = p.layout
        st = SCALARS_BY_NAME[lay.dtype]
        dt = st.np_dtype
        if lay.kind == "ndarray":
            shape = p.shape
            if p.element_shape and shape is None:
                # ndarrays of vectors: the element dims are checked like declared sizes, so plain
                # scalar arrays (shape None) keep their check-free fast path
                shape = (None,) * (lay.ndim - len(p.element_shape)) + tuple(p.element_shape)
            return ArgPlan(lay.name, _ARRAY, dt, lay.dtype, lay.ndim, p.access in ("write", "readwrite"), shape,
                           array_type=NdArrayType(st, lay.ndim, tuple(p.element_shape)),
                           element_dims=len(p.element_shape))
        kind = _BOOL if st.is_bool else _INT if st.is_int else _FLOAT
        lo, hi = value_range(st)
        return ArgPlan(lay.name, kind, dt, lay.dtype, 0, False, None, lo, hi)

    # ------------------------------------------------------------------------------ per call
    def pack(self, args: Mapping[str, object]) -> bytes:
        """The argument block for one call, with data pointers (the plain entry's ABI)."""
        return self._pack(args, False)

    def pack_objects(self, args: Mapping[str, object]) -> bytes:
        """The block for an entry's `_pyobj` variant: array slots hold the array objects'
        addresses, and native code reads the data pointer at DATA_OFFSET inside each."""
        return self._pack(args, True)

    def _pack(self, args: Mapping[str, object], objects: bool) -> bytes:
        """The block of one call. An array argument that is not a numpy array (but shares its
        memory through one of the protocols of kiln.runtime.host_arrays) is replaced IN `args` by
        a numpy view of the same memory: the caller passes a mapping it owns, which keeps that
        view alive until the native call returns (the `_pyobj` entry reads it)."""
        if type(args) is not dict and not isinstance(args, Mapping):
            self.check_mapping(args)
        if len(args) != len(self.names):
            self.check_names(args)
        values: list[object] = []
        symbols: dict[str, int] = {}
        # Plain tuples, unpacked in the loop header: the cheapest per-parameter access in CPython.
        for name, is_array, dtype, ndim, shape_spec, plan in self.fast_plans:
            try:
                a = args[name]
            except KeyError:
                self.check_names(args)
                raise
            if is_array:
                if type(a) is not _ndarray and not isinstance(a, _ndarray):
                    a = self.host_view(plan, a)
                    if isinstance(args, dict):
                        args[name] = a            # held by the caller's mapping during the call
                    elif objects:
                        raise TypeError("pack_objects needs a dict that the caller owns")
                dt = a.dtype
                if (dt is not dtype and dt != dtype) or a.ndim != ndim:
                    self.check_ndarray(plan, a)
                # carray = C-contiguous, aligned and writeable: the common case in one test
                if not a.flags.carray:
                    self._check_flags(plan, a, False)
                shape = a.shape
                if shape_spec is not None:
                    self.check_shape(plan, shape, symbols)
                if objects:       # the `_pyobj` entry reads the data pointer and strides itself
                    values.append(id(a))
                    values += shape
                else:
                    values.append(data_pointer(a))
                    values += shape
                    values += element_strides(a)
            else:
                if plan.kind != _VECTOR:
                    values.append(self.scalar(plan, a))
                else:
                    values += self.vector(plan, a)
        return (self.struct_objects if objects else self.struct).pack(*values)

    def host_view(self, plan: ArgPlan, a: object) -> np.ndarray:
        """A zero-copy numpy view of a host array that is not a numpy array, or the error that
        says why `a` cannot be bound (kiln.runtime.host_arrays)."""
        try:
            view = host_view(a)
        except HostArrayError as e:
            raise ArgumentError(f"{self.where(plan)}: {e}") from None
        if view is None:
            raise self._array_type_error(plan, a)
        if plan.needs_write and not view.flags.writeable and hasattr(a, "__dlpack__"):
            raise ArgumentValueError(
                f"{self.where(plan)}: the compiled code writes to this array, but its DLPack export is read-only "
                "(a producer of the unversioned protocol cannot say its memory is writable, so numpy views it "
                "read-only): pass a writable numpy view of it, e.g. tensor.numpy() for a PyTorch CPU tensor")
        return view

    # ------------------------------------------------------------------------------ checks
    def check_overlaps(self, args: Mapping[str, object]) -> None:
        """Debug mode: no written array may share memory with another array argument (the same
        array twice, or overlapping views); kiln's code assumes they are distinct, like C's
        `restrict`. Release builds leave this to the caller (docs/debug.md)."""
        for a, b in self.write_pairs:
            x, y = args[a], args[b]
            if isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.may_share_memory(x, y):
                same = "the same array" if x is y else "overlapping arrays"
                raise ArgumentError(f"{self.owner}: arguments {a!r} and {b!r} are {same}, and the code "
                                    "writes to one of them; pass distinct arrays (a copy)")

    def check_mapping(self, args: object) -> None:
        """`args` must be a mapping with exactly the parameter names as keys."""
        if not isinstance(args, Mapping):
            raise ArgumentError(f"{self.owner}: run() takes a dict of named arguments, got {type(args).__name__}")
        if len(args) != len(self.names) or not self.name_set.issuperset(args):
            self.check_names(args)

    def where(self, plan: ArgPlan) -> str:
        return f"{self.owner}: argument {plan.name!r}"

    def check_ndarray(self, plan: ArgPlan, a: np.ndarray, host_copy: bool = False) -> None:
        """dtype, ndim, layout, alignment and writability of a numpy array argument
        (`host_copy`: the array's bytes are copied to a device as they lie, so it must be
        C-contiguous, and its alignment does not matter)."""
        assert plan.array_type is not None
        problem = plan.array_type.mismatch(from_numpy(a.dtype), a.ndim, str(a.dtype), a.shape)
        if problem is not None:
            raise ArgumentError(f"{self.where(plan)}: {problem}")
        self._check_flags(plan, a, host_copy)

    def _check_flags(self, plan: ArgPlan, a: np.ndarray, host_copy: bool) -> None:
        """Any strides are fine for code on this host; what is refused: misaligned data or
        strides, a read-only array the code writes, and a written array whose elements may
        share memory (a zero stride from broadcast_to, or overlapping strides)."""
        flags = a.flags
        if not flags.aligned and not host_copy:
            raise ArgumentValueError(f"{self.where(plan)}: array data or strides are not aligned to its dtype "
                                     "(pass a copy)")
        if plan.needs_write and not flags.writeable:
            raise ArgumentValueError(f"{self.where(plan)}: array is read-only but the compiled code writes to it")
        if (plan.needs_write and not (flags.c_contiguous or flags.f_contiguous)
                and may_overlap_itself(a.shape, a.strides, a.itemsize)):
            raise ArgumentValueError(f"{self.where(plan)}: the compiled code writes to this array, but its strides "
                                     f"{a.strides} make elements share memory (a zero stride from broadcast_to, or "
                                     "overlapping strides); pass an array with distinct elements (a copy)")
        if host_copy and not flags.c_contiguous:
            raise ArgumentValueError(f"{self.where(plan)}: array is not C-contiguous, and host arrays are copied "
                                     "to the GPU byte for byte (pass np.ascontiguousarray(x), or a device array)")

    def check_names(self, args: Mapping[str, object]) -> None:
        shown = tuple(n for n in self.names if not n.startswith(HIDDEN_PREFIX))   # fields: the runtime's
        missing = [n for n in self.names if n not in args]
        if missing:
            raise missing_arguments(self.owner, missing, shown)
        unknown = [str(n) for n in args if n not in self.name_set]
        raise ArgumentError(f"{self.owner}: unknown argument{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; expected {', '.join(shown) or 'none'}")

    def _array_type_error(self, plan: ArgPlan, a: object) -> ArgumentError:
        return ArgumentError(f"{self.where(plan)}: expected a numpy.ndarray (or an object with __array_interface__, "
                             f"the buffer protocol or CPU DLPack) of {plan.type_name} with ndim={plan.ndim}, "
                             f"got {type(a).__name__}")

    def check_shape(self, plan: ArgPlan, shape: tuple[int, ...], symbols: dict[str, int]) -> None:
        """Fixed dimensions and shape symbols (bound in `symbols` by earlier arguments of the run)."""
        assert plan.shape is not None
        for k, (want, got) in enumerate(zip(plan.shape, shape)):
            if want is None:
                continue
            if isinstance(want, int):
                if got != want and k >= plan.ndim - plan.element_dims:
                    raise ArgumentError(f"{self.where(plan)}: expected an array of elements of shape "
                                        f"{plan.shape[plan.ndim - plan.element_dims:]} (the last dimension(s)), "
                                        f"got shape {shape}")
                if got != want:
                    raise ArgumentValueError(f"{self.where(plan)}: dimension {k} must be {want}, got shape {shape}")
            else:
                bound = symbols.setdefault(want, got)
                if bound != got:
                    raise ArgumentValueError(
                        f"{self.where(plan)}: dimension {k} is {got} but shape symbol "
                        f"{want!r} is {bound} from an earlier argument (shapes declared {plan.shape})")

    def vector(self, plan: ArgPlan, v: object) -> list[object]:
        """A vector/matrix argument: a tuple, list or numpy array of the element shape."""
        try:
            arr = np.asarray(v)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != plan.shape or arr.dtype.kind not in "biuf":
            got = f"shape {arr.shape}" if arr is not None and arr.dtype.kind in "biuf" else type(v).__name__
            raise ArgumentError(f"{self.owner}: argument {plan.name!r}: expected a {plan.type_name} vector/matrix "
                                f"of shape {plan.shape} (a tuple, list or numpy array), got {got}")
        return [self.scalar(part, x) for part, x in zip(plan.parts, arr.ravel().tolist())]

    def scalar(self, plan: ArgPlan, v: object) -> object:
        """The checked value of a scalar argument, as the block stores it."""
        # Fast paths first: plain Python numbers are what almost every call passes.
        t = type(v)
        if plan.kind == _FLOAT and (t is float or t is int):
            if plan.lo <= v <= plan.hi:  # type: ignore[operator]
                return v
        elif plan.kind == _INT and t is int and plan.lo <= v <= plan.hi:  # type: ignore[operator]
            return v
        return self._scalar_slow(plan, v)

    def _scalar_slow(self, plan: ArgPlan, v: object) -> object:
        where = self.where(plan)
        if plan.kind == _BOOL:
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            raise ArgumentError(f"{where}: expected a bool, got {type(v).__name__}")
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v[()]
        if plan.kind == _INT:
            if not isinstance(v, (int, np.integer)) or isinstance(v, np.bool_):
                raise ArgumentError(f"{where}: expected an integer for {plan.type_name}, got {type(v).__name__}")
            iv = int(v)
            if not plan.lo <= iv <= plan.hi:
                raise ArgumentValueError(f"{where}: {iv} is out of range for {plan.type_name} "
                                         f"({plan.lo}..{plan.hi})")
            return iv
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)):
            raise ArgumentError(f"{where}: expected a number for {plan.type_name}, got {type(v).__name__}")
        try:
            fv = float(v)
        except OverflowError:          # an int beyond f64's range
            fv = math.inf
        # inf and nan pass as themselves; a finite value that is not finite as f64 (a huge int,
        # a np.longdouble beyond f64's range) is out of range like any other
        if (not plan.lo <= fv <= plan.hi and math.isfinite(fv)) or (
                math.isinf(fv) and (isinstance(v, (int, np.integer)) or bool(np.isfinite(v)))):
            shown = repr(fv) if math.isfinite(fv) else f"{str(v)[:20]}... ({type(v).__name__})"
            raise ArgumentValueError(f"{where}: {shown} is out of range for {plan.type_name}")
        return fv


def element_strides(a: np.ndarray) -> list[int]:
    """The strides of `a` in elements, as the argument block holds them (kiln.abi). Aligned arrays
    have byte strides that are multiples of the item size, except on extent-1 dimensions, whose
    stride is never used."""
    size = a.itemsize
    return [s // size for s in a.strides]


def may_overlap_itself(shape: tuple[int, ...], byte_strides: tuple[int, ...], itemsize: int) -> bool:
    """Whether two elements of an array may share memory. Conservative: True when, with the
    dimensions sorted by stride, one stride is shorter than the span of the smaller ones (exact
    for zero strides and ordinary views; a few exotic interleavings are refused though disjoint).
    The C runtime (c/src/run.c) applies the same rule."""
    if 0 in shape:
        return False
    reach = itemsize
    for stride, n in sorted((abs(s), n) for s, n in zip(byte_strides, shape) if n > 1):
        if stride < reach:
            return True
        reach += stride * (n - 1)
    return False


def missing_arguments(owner: str, missing: list[str], names: tuple[str, ...]) -> ArgumentError:
    return ArgumentError(f"{owner}: missing argument{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))}; expected {', '.join(names) or 'none'}")


def bind_call_arguments(owner: str, names: tuple[str, ...], args: tuple[object, ...],
                        kwargs: Mapping[str, object]) -> dict[str, object]:
    """Positional and keyword arguments of a call as one dict of named arguments: the one rule
    for too many, unknown, doubly given and missing arguments (direct calls, CPU and CUDA
    kernels). `owner` names the callee in messages, e.g. "kernel 'saxpy'"."""
    if len(args) > len(names):
        raise ArgumentError(f"{owner}: takes {len(names)} arguments, got {len(args)}")
    named = dict(zip(names, args))
    for k, v in kwargs.items():
        if k in named:
            raise ArgumentError(f"{owner}: argument {k!r} given twice")
        if k not in names:
            raise ArgumentError(f"{owner}: has no parameter {k!r}; parameters: {', '.join(names)}")
        named[k] = v
    if len(named) != len(names):
        raise missing_arguments(owner, [n for n in names if n not in named], names)
    return named


def allocate_fields(fields: Mapping[str, FieldInfo], blobs: Mapping[str, bytes | memoryview]) -> dict[str, np.ndarray]:
    """A fresh numpy array per field of a loaded file, holding its recorded initial value: each
    load owns its storage, so two loaded modules never share a field."""
    out: dict[str, np.ndarray] = {}
    for name, f in fields.items():
        dt = SCALARS_BY_NAME[f.dtype].np_dtype
        shape = f.storage_shape
        if f.init is None:
            out[name] = np.zeros(shape, dt)
            continue
        raw = bytes(blobs[f.init])
        if len(raw) != dt.itemsize * math.prod(shape):
            raise ArtifactError(f"field {name!r}: its init blob holds {len(raw)} bytes, expected "
                                     f"{dt.itemsize * math.prod(shape)}")
        out[name] = np.frombuffer(raw, dt).reshape(shape).copy()
    return out


def field_arguments(params: tuple[ParamInfo, ...], storage: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The hidden arguments (`@name` -> the module's array) of a graph's or kernel's parameters."""
    return {p.layout.name: storage[p.layout.name[len(HIDDEN_PREFIX):]]
            for p in params if is_field_param(p.layout.name)}


def visible(params: tuple[ParamInfo, ...]) -> tuple[ParamInfo, ...]:
    """The parameters a caller passes (hidden field parameters are filled by the runtime)."""
    return tuple(p for p in params if not p.layout.name.startswith(HIDDEN_PREFIX))
