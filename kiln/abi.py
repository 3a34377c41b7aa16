"""The native calling convention shared by the code generators and the runtime.

Every kernel and every graph has ONE native entry point `int32 entry(uint8_t *args)`: `args`
points to a packed argument block, the entry returns 0 on success (non-zero status codes are
reserved for debug-mode checks). A Python call therefore costs a single foreign call.

Argument block layout, little-endian, parameters in declaration order, each in 8-byte slots:
- scalar: one slot; the value sits at the start of the slot in its native width
  (bool: one byte 0/1; f16: IEEE binary16 bits), the rest of the slot is padding;
- ndarray: 1 + 2*ndim slots: the data pointer (the address of element [0, ..., 0]), then `ndim`
  int64 extents, then `ndim` int64 strides counted in ELEMENTS (not bytes; negative and zero
  strides allowed). Element [i, j, ...] lives at `data + (i*s0 + j*s1 + ...) * itemsize`. A
  C-contiguous array has strides (n1*n2*..., ..., n_last, 1); the compiled code is fastest when
  the innermost stride is 1 (the loop vectorizer versions its loops on that), but any strides run.

`ABI_VERSION` names this layout; it is part of every entry's ABI descriptor
(kiln.runtime.abi_digest), so code of another layout never runs under this runtime's packing.

The runtime never recomputes this from kernel types at run time: the layout is written into the
.kiln manifest (`ParamLayout.to_json`) and read back from there.
"""

from __future__ import annotations

import struct

from kiln._record import Record
from kiln.types import NdArrayType, ScalarType, parse_type_name

SLOT = 8
#: the revision of the argument-block layout above (1: arrays without strides, kiln <= 0.1 files)
ABI_VERSION = 2
#: prefix of a hidden parameter that carries a module-level field (`@x`): kernels and graphs get
#: one per field they use, and the runtime fills it from the module's own storage
HIDDEN_PREFIX = "@"

#: the hidden last parameter of a kernel that draws random numbers: a u32[4] array (seed lo,
#: seed hi, run lo, run hi) that the runtime passes (kiln.lang.random, docs/language.md)
RNG_PARAM = "@rng"


def is_field_param(name: str) -> bool:
    """Whether a parameter name is a hidden field parameter (`@x`): hidden, and not the random
    state, the one hidden parameter that is not a field."""
    return name.startswith(HIDDEN_PREFIX) and name != RNG_PARAM


def element_params(name: str, size: int) -> tuple[str, ...]:
    """The scalar parameters a vector/matrix argument `name` with `size` elements is laid out as,
    row-major: `name.0`, `name.1`, ... (the front end declares them, the driver binds graph
    arguments to them, the runtime's binder and the manifest reader group them back)."""
    return tuple(f"{name}.{k}" for k in range(size))


def vector_of(element_param: str) -> str:
    """The vector/matrix argument an element parameter belongs to: "g.1" -> "g"."""
    return element_param.rsplit(".", 1)[0]


#: struct format characters for scalar values inside their slot
SCALAR_FORMAT: dict[str, str] = {
    "bool": "?7x", "i8": "b7x", "i16": "h6x", "i32": "i4x", "i64": "q",
    "u8": "B7x", "u16": "H6x", "u32": "I4x", "u64": "Q",
    "f16": "e6x", "f32": "f4x", "f64": "d",
}


class ParamLayout(Record):
    """Where one parameter lives in an argument block."""

    __slots__ = ('name', 'kind', 'dtype', 'ndim', 'offset')
    name: str
    kind: str  # "scalar" or "ndarray"
    dtype: str  # scalar type name, e.g. "f32"
    ndim: int  # 0 for scalars
    offset: int  # byte offset of the first slot

    def __init__(self, name: str, kind: str, dtype: str, ndim: int, offset: int) -> None:
        # written out: a manifest makes several of these per kernel at every load
        self.name = name
        self.kind = kind
        self.dtype = dtype
        self.ndim = ndim
        self.offset = offset

    @property
    def size(self) -> int:
        return SLOT * (1 + 2 * self.ndim) if self.kind == "ndarray" else SLOT

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "ndim": self.ndim,
                "offset": self.offset}


def layout_params(params: list[tuple[str, ScalarType | NdArrayType]]) -> list[ParamLayout]:
    """Lay out (name, type) pairs; ndarray types must be concrete."""
    out: list[ParamLayout] = []
    offset = 0
    for name, t in params:
        if isinstance(t, NdArrayType):
            assert t.dtype is not None and t.ndim is not None, "layout needs concrete array types"
            p = ParamLayout(name, "ndarray", t.dtype.name, t.ndim, offset)
        else:
            p = ParamLayout(name, "scalar", t.name, 0, offset)
        out.append(p)
        offset += p.size
    return out


def block_size(layout: list[ParamLayout]) -> int:
    return sum(p.size for p in layout)


def block_struct(layout: list[ParamLayout]) -> struct.Struct:
    """A struct.Struct that packs a whole argument block in one call, values in the order:
    for a scalar its value; for an ndarray its data pointer, its extents, then its strides."""
    fmt = "<"
    for p in layout:
        fmt += "Q" + "q" * (2 * p.ndim) if p.kind == "ndarray" else SCALAR_FORMAT[p.dtype]
    return struct.Struct(fmt)


def block_struct_objects(layout: list[ParamLayout]) -> struct.Struct:
    """Like `block_struct`, for the `_pyobj` entries (kiln.codegen.cpu_module): an ndarray takes
    its object's address and its extents; its stride slots are padding that the native wrapper
    fills from the numpy object itself (no per-call Python work for strides)."""
    fmt = "<"
    for p in layout:
        fmt += "Q" + "q" * p.ndim + "8x" * p.ndim if p.kind == "ndarray" else SCALAR_FORMAT[p.dtype]
    return struct.Struct(fmt)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The element strides of a C-contiguous array of `shape`."""
    out = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        out[d] = out[d + 1] * shape[d + 1]
    return tuple(out)


def param_type(p: ParamLayout) -> ScalarType | NdArrayType:
    dt = parse_type_name(p.dtype)
    return NdArrayType(dt, p.ndim) if p.kind == "ndarray" else dt


# ---------------------------------------------------------------------------------------------
# External symbols: what objects may leave undefined (one home for the code generator's contract
# and the loader's allow-list; docs/object-code.md)
# ---------------------------------------------------------------------------------------------

#: libm functions kiln's code generator calls, each also with the "f" suffix (f32)
_EMITTED_LIBM = (
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "exp", "exp2",
    "exp10", "expm1", "log", "log2", "log10", "log1p", "pow", "sqrt", "cbrt", "fmod", "floor",
    "ceil", "trunc", "round", "roundeven", "rint", "nearbyint", "fabs", "fmin", "fmax", "ldexp",
    "frexp", "hypot", "sincos", "copysign",
)

#: every external symbol an object kiln compiles may reference (the object-code contract that
#: kiln.codegen.target documents and the test suite checks every compiled object against): libm,
#: mem*, and the f16 conversion helpers LLVM calls on targets without F16C
EMITTED_EXTERNAL_SYMBOLS: frozenset[str] = frozenset(
    [n for b in _EMITTED_LIBM for n in (b, b + "f")]
    + ["memset", "memcpy", "memmove", "__extendhfsf2", "__truncsfhf2", "__gnu_h2f_ieee", "__gnu_f2h_ieee"]
)

#: the rest of libm that the loader also resolves, each also with the "f" suffix
_LOADER_LIBM = (
    "asinh", "acosh", "atanh", "logb", "ilogb", "remainder", "remquo", "lround", "llround", "lrint",
    "llrint", "fdim", "fma", "nextafter", "nexttoward", "erf", "erfc", "tgamma", "lgamma", "scalbn",
    "scalbln", "modf", "nan", "significand",
)

#: every external symbol kiln's loaders accept (kiln.runtime.elf_host resolves them from
#: libm/libc/libgcc_s; anything else is refused). A superset of EMITTED_EXTERNAL_SYMBOLS by
#: construction: files from other kiln or LLVM versions may call a few more runtime helpers.
LOADER_EXTERNAL_SYMBOLS: frozenset[str] = EMITTED_EXTERNAL_SYMBOLS | frozenset(
    [n for b in _LOADER_LIBM for n in (b, b + "f")]
    + ["__sincos", "__sincosf", "__exp_finite", "__expf_finite", "__log_finite", "__logf_finite",
       "__pow_finite", "__powf_finite", "__sin_finite", "__cos_finite"]
    + ["memcmp", "bzero"]
    + ["__truncdfhf2", "__extendhfdf2", "__truncsfbf2", "__truncdfbf2", "__extendbfsf2"]
    + ["__divti3", "__udivti3", "__modti3", "__umodti3", "__muloti4", "__popcountdi2", "__powisf2",
       "__powidf2", "__fixsfti", "__fixdfti", "__fixunssfti", "__fixunsdfti", "__floattisf", "__floattidf",
       "__floatuntisf", "__floatuntidf"]
)
