"""The manifest of a .kiln file: typed records, JSON encoding and strict validation.

`Manifest.from_json` treats its input as hostile: every field is checked for presence and
type, every cross reference (dispatch -> kernel, binding -> graph param, target -> blob) is
resolved, and the first problem raises ArtifactError with the JSON path of the bad field.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NoReturn

from kiln._record import Record
from kiln.abi import HIDDEN_PREFIX, RNG_PARAM, ParamLayout, element_params, vector_of
from kiln.errors import ArtifactError
from kiln.types import MAX_NDIM, SCALARS_BY_NAME, value_range

ShapeDim = int | str | None
ACCESS_MODES = ("none", "read", "write", "readwrite")


class TargetInfo(Record):
    __slots__ = ('name', 'kind', 'arch', 'triple', 'cpu', 'features', 'blobs')
    name: str  # "cpu" or "cuda"
    kind: str  # "cpu" | "cuda"
    arch: str  # "x86_64", "aarch64", "nvptx64"
    triple: str
    cpu: str  # LLVM cpu name ("znver3", "x86-64-v2", "sm_90")
    features: str  # LLVM feature string the code was built with
    blobs: tuple[str, ...]


class ParamInfo(Record):
    __slots__ = ('layout', 'access', 'shape', 'element_shape')
    layout: ParamLayout
    access: str  # how the code uses an ndarray (ACCESS_MODES)
    shape: tuple[ShapeDim, ...] | None  # graph params only: declared shape constraints
    #: ndarrays of vectors/matrices: the trailing dimensions of each element (() for scalars)
    element_shape: tuple[int, ...]

    def __init__(self, layout: ParamLayout, access: str, shape: tuple[ShapeDim, ...] | None = None,
                 element_shape: tuple[int, ...] = ()) -> None:
        self.layout = layout
        self.access = access
        self.shape = shape
        self.element_shape = element_shape


class KernelInfo(Record):
    __slots__ = ('name', 'display_name', 'params', 'entries')
    name: str  # unique IR name
    display_name: str  # the user's function name
    params: tuple[ParamInfo, ...]
    entries: dict[str, str]  # target name -> native symbol


class FieldInfo(Record):
    """A module-level field (docs/format.md, `fields`): the module owns its storage, shaped
    `(shape or (1,)) + element_shape`, filled from the blob `init` (zeros when None)."""

    __slots__ = ('name', 'dtype', 'shape', 'element_shape', 'init')
    name: str
    dtype: str
    shape: tuple[int, ...]          # () for a 0-d field
    element_shape: tuple[int, ...]  # () for scalars, (n,) vectors, (n, m) matrices
    init: str | None                # blob holding the content at compile time (C order)

    @property
    def storage_shape(self) -> tuple[int, ...]:
        return (self.shape or (1,)) + self.element_shape


class Binding(Record):
    __slots__ = ('kind', 'arg', 'value', 'dtype')
    kind: str  # "arg" | "const" | "field" (arg: the field's name; graph param `@name` carries it)
    arg: str
    value: bool | int | float
    dtype: str

    def __init__(self, kind: str, arg: str = "", value: bool | float = 0, dtype: str = "") -> None:
        self.kind = kind
        self.arg = arg
        self.value = value
        self.dtype = dtype


class DispatchInfo(Record):
    __slots__ = ('kernel', 'bindings')
    kernel: str
    bindings: tuple[Binding, ...]


class GraphInfo(Record):
    __slots__ = ('name', 'params', 'dispatches', 'entries')
    name: str
    params: tuple[ParamInfo, ...]
    dispatches: tuple[DispatchInfo, ...]
    entries: dict[str, str]


HostExpr = list[Any]   # a launch-count expression tree: ["const", 3], ["+", a, b], ... (docs/format.md)
HOST_EXPR_OPS: dict[str, int] = {"const": 1, "arg": 1, "shape": 2, "int": 1, "+": 2, "-": 2, "*": 2, "//": 2,
                                 "%": 2, "min": 2, "max": 2}   # op -> number of operands
LAUNCH_MODES = ("loop", "single")


#: where a cuda target's math functions come from (kiln.codegen.libdevice)
MATH_LIBRARIES = ("libdevice", "builtin")


class CudaLaunch(Record):
    """One GPU launch of a kernel (docs/format.md, `cuda.launches`): written by
    kiln.codegen.nvptx, read by kiln.runtime.cuda."""

    __slots__ = ('entry', 'mode', 'count', 'waves', 'coarsen', 'block_ptr')
    _defaults: ClassVar[dict[str, Any]] = {'count': None, 'waves': 1, 'coarsen': None, 'block_ptr': False}
    entry: str   # PTX entry name
    mode: str    # "loop" (grid-stride loop) or "single" (one thread)
    count: tuple[tuple[HostExpr, HostExpr, HostExpr], ...] | None   # per dim [start, stop, step]
    waves: int   # grid cap in full waves of resident blocks
    coarsen: tuple[int, int] | None   # (dim, rows per thread) of a coarsened loop (informative)
    #: the entry takes one more `.param .u64` after the block's slots: the device address of its
    #: argument block, or 0 when the block is in the parameters
    block_ptr: bool

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"entry": self.entry, "mode": self.mode}
        if self.count is not None:
            d["count"] = [list(dim) for dim in self.count]
        if self.waves != 1:
            d["waves"] = self.waves
        if self.coarsen is not None:
            d["coarsen"] = list(self.coarsen)
        if self.block_ptr:
            d["block_ptr"] = True
        return d


class CudaSection(Record):
    """The top-level `cuda` object: what the CUDA runtime needs besides the target's blobs."""

    __slots__ = ('block_size', 'ptx', 'cubins', 'launches', 'cubins_missing', 'nvjitlink', 'math')
    _defaults: ClassVar[dict[str, Any]] = {'cubins_missing': None, 'nvjitlink': None, 'math': None}
    block_size: int                               # threads per block of every loop launch
    ptx: str                                      # blob name of the PTX text
    cubins: dict[str, str]                        # "sm_90" -> cubin blob name
    launches: dict[str, tuple[CudaLaunch, ...]]   # kernel IR name -> its launches in order
    cubins_missing: str | None                    # why the writer built no cubins
    nvjitlink: str | None                         # version that linked the cubins
    math: str | None                              # "libdevice" or "builtin" (informative)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"block_size": self.block_size, "ptx": self.ptx, "cubins": dict(self.cubins),
                             "launches": {k: [ln.to_json() for ln in ls] for k, ls in self.launches.items()}}
        if self.cubins_missing is not None:
            d["cubins_missing"] = self.cubins_missing
        if self.nvjitlink is not None:
            d["nvjitlink"] = self.nvjitlink
        if self.math is not None:
            d["math"] = self.math
        return d


class Manifest(Record):
    __slots__ = ('format_version', 'kiln_version', 'created', 'targets', 'kernels', 'graphs', 'exported_kernels',
                 'cuda', 'fields', 'random_seed', 'provenance')
    #: provenance is optional build information (docs/format.md "Provenance"): read_provenance checks its shape
    _defaults: ClassVar[dict[str, Any]] = {'cuda': None, 'fields': {}, 'random_seed': 0, 'provenance': None}
    format_version: tuple[int, int]
    kiln_version: str
    created: str
    targets: tuple[TargetInfo, ...]
    kernels: dict[str, KernelInfo]
    graphs: dict[str, GraphInfo]
    exported_kernels: dict[str, str]  # user-facing name -> KernelInfo.name
    cuda: CudaSection | None  # launch data, present when a cuda target is
    fields: dict[str, FieldInfo]  # module-level fields (absent from files without any)
    random_seed: int  # initial seed of the module's kl.random state (written when not 0)
    provenance: dict[str, Any] | None  # optional build information (read_provenance checks its shape)

    # ----------------------------------------------------------------------------- encoding
    def to_json(self) -> dict[str, Any]:
        def param(p: ParamInfo) -> dict[str, Any]:
            d = p.layout.to_json() | {"access": p.access}
            if p.shape is not None:
                d["shape"] = list(p.shape)
            if p.element_shape:
                d["element_shape"] = list(p.element_shape)
            return d

        return {
            "format": "kiln",
            "format_version": list(self.format_version),
            "kiln_version": self.kiln_version,
            "created": self.created,
            "targets": [{"name": t.name, "kind": t.kind, "arch": t.arch, "triple": t.triple, "cpu": t.cpu,
                         "features": t.features, "blobs": list(t.blobs)} for t in self.targets],
            "kernels": {k.name: {"display_name": k.display_name, "params": [param(p) for p in k.params],
                                 "entries": dict(k.entries)} for k in self.kernels.values()},
            "graphs": {g.name: {"params": [param(p) for p in g.params],
                                "dispatches": [{"kernel": d.kernel, "bindings": [
                                    {"arg": b.arg} if b.kind == "arg" else {"field": b.arg} if b.kind == "field"
                                    else {"const": b.value, "dtype": b.dtype}
                                    for b in d.bindings]} for d in g.dispatches],
                                "entries": dict(g.entries)} for g in self.graphs.values()},
            "exported_kernels": dict(self.exported_kernels),
        } | ({} if self.cuda is None else {"cuda": self.cuda.to_json()}) | ({} if not self.fields else {
            "fields": {f.name: {"dtype": f.dtype, "shape": list(f.shape), "element_shape": list(f.element_shape),
                                "init": f.init} for f in self.fields.values()}}) | (
            {"random_seed": self.random_seed} if self.random_seed else {}) | (
            {} if self.provenance is None else {"provenance": self.provenance})

    # ----------------------------------------------------------------------------- decoding
    @staticmethod
    def from_json(doc: dict[str, Any], blob_names: set[str]) -> Manifest:
        return _Reader(blob_names).manifest(doc)


class _Reader:
    """Validating decoder; each method takes the JSON value and its path for messages."""

    def __init__(self, blob_names: set[str]) -> None:
        self.blob_names = blob_names
        self.fields: dict[str, FieldInfo] = {}

    def fail(self, path: str, what: str) -> NoReturn:
        raise ArtifactError(f"manifest: {path}: {what}")

    def field(self, obj: Any, key: str, path: str, typ: type | tuple[type, ...]) -> Any:
        if not isinstance(obj, dict):
            self.fail(path, "expected an object")
        if key not in obj:
            self.fail(f"{path}.{key}" if path else key, "required field is missing")
        val = obj[key]
        where = f"{path}.{key}" if path else key
        if isinstance(val, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            self.fail(where, f"expected {self._tname(typ)}, got a boolean")
        if not isinstance(val, typ):
            self.fail(where, f"expected {self._tname(typ)}, got {type(val).__name__}")
        return val

    @staticmethod
    def _tname(typ: type | tuple[type, ...]) -> str:
        names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
                 bool: "a boolean"}
        ts = typ if isinstance(typ, tuple) else (typ,)
        return " or ".join(names.get(t, t.__name__) for t in ts)

    def manifest(self, doc: Any) -> Manifest:
        if self.field(doc, "format", "", str) != "kiln":
            self.fail("format", "expected 'kiln'")
        ver = self.field(doc, "format_version", "", list)
        if len(ver) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in ver):
            self.fail("format_version", "expected [major, minor]")
        kiln_version = self.field(doc, "kiln_version", "", str)
        created = self.field(doc, "created", "", str)
        targets = tuple(self.target(t, f"targets[{i}]")
                        for i, t in enumerate(self.field(doc, "targets", "", list)))
        if not targets:
            self.fail("targets", "the file holds no compiled target")
        target_names = {t.name for t in targets}
        if len(target_names) != len(targets):
            self.fail("targets", "duplicate target names")
        fields = {} if "fields" not in doc else {name: self.field_info(name, f, f"fields.{name}")
                                                 for name, f in self.field(doc, "fields", "", dict).items()}
        self.fields = fields
        kernels = {name: self.kernel(name, k, f"kernels.{name}", target_names)
                   for name, k in self.field(doc, "kernels", "", dict).items()}
        graphs = {name: self.graph(name, g, f"graphs.{name}", kernels, target_names)
                  for name, g in self.field(doc, "graphs", "", dict).items()}
        exported = self.field(doc, "exported_kernels", "", dict)
        for name, kname in exported.items():
            if not isinstance(kname, str):
                self.fail(f"exported_kernels.{name}", f"expected a kernel name, got {type(kname).__name__}")
            if kname not in kernels:
                self.fail(f"exported_kernels.{name}", f"names unknown kernel {kname!r}")
        # optional here (a CPU runtime does not need it); kiln.runtime.cuda requires it
        cuda = None if "cuda" not in doc else self.cuda_section(doc, [t for t in targets if t.kind == "cuda"], kernels)
        seed = self.field(doc, "random_seed", "", int) if "random_seed" in doc else 0
        if not 0 <= seed < 2 ** 64:
            self.fail("random_seed", f"expected an integer in [0, 2**64), got {seed}")
        return Manifest((ver[0], ver[1]), kiln_version, created, targets, kernels, graphs, dict(exported), cuda,
                        fields, seed, read_provenance(doc.get("provenance")))

    # ----------------------------------------------------------------------------- fields
    def field_info(self, name: str, f: Any, path: str) -> FieldInfo:
        if not name.isidentifier():
            self.fail(path, "a field name must be an identifier")
        dtype = self.field(f, "dtype", path, str)
        if dtype not in SCALARS_BY_NAME:
            self.fail(f"{path}.dtype", f"unknown dtype {dtype!r}")
        dims = []
        for key in ("shape", "element_shape"):
            val = self.field(f, key, path, list)
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in val):
                self.fail(f"{path}.{key}", "expected a list of sizes >= 1")
            dims.append(tuple(val))
        init = None if f.get("init") is None else self.field(f, "init", path, str)
        info = FieldInfo(name, dtype, dims[0], dims[1], init)
        if len(info.storage_shape) > MAX_NDIM:
            self.fail(path, f"more than {MAX_NDIM} dimensions")
        if init is not None and init not in self.blob_names:
            self.fail(f"{path}.init", f"names a blob that is not in the file: {init!r}")
        return info

    def check_field_param(self, p: ParamInfo, path: str) -> None:
        """A hidden parameter `@name` must carry a recorded field, with its dtype and dimensions
        (`@rng`, the random-number state, is the one hidden parameter that is not a field)."""
        if p.layout.name == RNG_PARAM:
            if (p.layout.kind, p.layout.dtype, p.layout.ndim) != ("ndarray", "u32", 1):
                self.fail(path, f"{RNG_PARAM} must be a 1-D u32 array")
            return
        f = self.fields.get(p.layout.name.removeprefix(HIDDEN_PREFIX))
        if f is None:
            self.fail(f"{path}.name", f"hidden parameter {p.layout.name!r} names no field of the file")
        if (p.layout.kind, p.layout.dtype, p.layout.ndim) != ("ndarray", f.dtype, len(f.storage_shape)):
            self.fail(path, f"does not match field {f.name!r} ({f.dtype}, {len(f.storage_shape)}-D)")

    # ----------------------------------------------------------------------------- cuda
    def cuda_section(self, doc: dict[str, Any], cuda_targets: list[TargetInfo],
                     kernels: dict[str, KernelInfo]) -> CudaSection:
        if not cuda_targets:
            self.fail("cuda", "present, but the file has no cuda target")
        blobs = set(cuda_targets[0].blobs)
        sec = self.field(doc, "cuda", "", dict)
        block = self.field(sec, "block_size", "cuda", int)
        if not 1 <= block <= 1024:
            self.fail("cuda.block_size", f"{block} is out of range (1..1024)")
        ptx = self.field(sec, "ptx", "cuda", str)
        if ptx not in blobs:
            self.fail("cuda.ptx", f"names a blob that is not in the cuda target: {ptx!r}")
        cubins = self.field(sec, "cubins", "cuda", dict)
        for arch, blob in cubins.items():
            if not isinstance(blob, str) or blob not in blobs:
                self.fail(f"cuda.cubins.{arch}", f"names a blob that is not in the cuda target: {blob!r}")
        optional = [None if k not in sec else self.field(sec, k, "cuda", str)
                    for k in ("cubins_missing", "nvjitlink", "math")]
        if optional[2] not in (None, *MATH_LIBRARIES):
            self.fail("cuda.math", f"expected one of {MATH_LIBRARIES}, got {optional[2]!r}")
        table = self.field(sec, "launches", "cuda", dict)
        for kname in table:
            if kname not in kernels:
                self.fail(f"cuda.launches.{kname}", "names a kernel that is not in the file")
        launches: dict[str, tuple[CudaLaunch, ...]] = {}
        for kname, kinfo in kernels.items():
            if kname not in table:
                self.fail(f"cuda.launches.{kname}", "required field is missing")
            path = f"cuda.launches.{kname}"
            raw = self.field(table, kname, "cuda.launches", list)
            if not raw:
                self.fail(path, "a kernel needs at least one launch")
            kparams = {p.layout.name: p.layout for p in kinfo.params}
            launches[kname] = tuple(self.launch(ln, f"{path}[{i}]", kparams) for i, ln in enumerate(raw))
        return CudaSection(block, ptx, dict(cubins), launches, optional[0], optional[1], optional[2])

    def launch(self, ln: Any, path: str, kparams: dict[str, ParamLayout]) -> CudaLaunch:
        entry = self.field(ln, "entry", path, str)
        if not entry.isidentifier():
            self.fail(f"{path}.entry", f"expected a symbol name, got {entry!r}")
        mode = self.field(ln, "mode", path, str)
        if mode not in LAUNCH_MODES:
            self.fail(f"{path}.mode", f"expected one of {LAUNCH_MODES}, got {mode!r}")
        waves = self.field(ln, "waves", path, int) if "waves" in ln else 1
        if not 1 <= waves <= 1024:
            self.fail(f"{path}.waves", f"{waves} is out of range (1..1024)")
        count = None
        if "count" in ln and ln["count"] is not None:
            if mode != "loop":
                self.fail(f"{path}.count", "only loop launches have a count")
            dims = self.field(ln, "count", path, list)
            for j, dim in enumerate(dims):
                if not isinstance(dim, list) or len(dim) != 3:
                    self.fail(f"{path}.count[{j}]", "expected [start, stop, step]")
                for k, e in enumerate(dim):
                    self.host_expr(e, f"{path}.count[{j}][{k}]", kparams)
            count = tuple(tuple(dim) for dim in dims)
        coarsen = None
        if ln.get("coarsen") is not None:
            co = self.field(ln, "coarsen", path, list)
            if len(co) != 2 or not all(type(v) is int and v >= 0 for v in co):
                self.fail(f"{path}.coarsen", f"expected [dim, factor], got {co!r}")
            coarsen = (co[0], co[1])
        block_ptr = self.field(ln, "block_ptr", path, bool) if "block_ptr" in ln else False
        return CudaLaunch(entry, mode, count, waves, coarsen, block_ptr)

    def host_expr(self, e: Any, path: str, kparams: dict[str, ParamLayout]) -> None:
        """A launch-count expression: an op name and its operands; leaves name the kernel's
        scalar parameters or dimensions of its array parameters."""
        if not isinstance(e, list) or not e or not isinstance(e[0], str) or e[0] not in HOST_EXPR_OPS:
            self.fail(path, f"expected a host expression [op, ...] with op in {sorted(HOST_EXPR_OPS)}")
        op, args = e[0], e[1:]
        if len(args) != HOST_EXPR_OPS[op]:
            self.fail(path, f"{op!r} takes {HOST_EXPR_OPS[op]} operand(s), got {len(args)}")
        if op == "const":
            if not isinstance(args[0], (bool, int, float)):
                self.fail(f"{path}[1]", "expected a number")
        elif op in ("arg", "shape"):
            want = "scalar" if op == "arg" else "ndarray"
            lay = kparams.get(args[0]) if isinstance(args[0], str) else None
            if lay is None or lay.kind != want:
                self.fail(f"{path}[1]", f"expected the name of a {want} parameter of the kernel, got {args[0]!r}")
            if op == "shape" and (not isinstance(args[1], int) or isinstance(args[1], bool)
                                  or not 0 <= args[1] < lay.ndim):
                self.fail(f"{path}[2]", f"expected a dimension index below {lay.ndim}, got {args[1]!r}")
        else:
            for k, a in enumerate(args):
                self.host_expr(a, f"{path}[{k + 1}]", kparams)

    def target(self, t: Any, path: str) -> TargetInfo:
        vals = [self.field(t, k, path, str) for k in ("name", "kind", "arch", "triple", "cpu", "features")]
        if vals[1] not in ("cpu", "cuda"):
            self.fail(f"{path}.kind", f"unknown target kind {vals[1]!r}")
        blobs = self.field(t, "blobs", path, list)
        for i, b in enumerate(blobs):
            if not isinstance(b, str) or b not in self.blob_names:
                self.fail(f"{path}.blobs[{i}]", f"names a blob that is not in the file: {b!r}")
        return TargetInfo(*vals, blobs=tuple(blobs))

    def entries(self, obj: Any, path: str, target_names: set[str]) -> dict[str, str]:
        entries = self.field(obj, "entries", path, dict)
        for tname, sym in entries.items():
            if tname not in target_names:
                self.fail(f"{path}.entries.{tname}", "names a target that is not in the file")
            if not isinstance(sym, str) or not sym.isidentifier():
                self.fail(f"{path}.entries.{tname}", "expected a symbol name")
        return dict(entries)

    def params(self, obj: Any, path: str, graph: bool) -> tuple[ParamInfo, ...]:
        out: list[ParamInfo] = []
        offset = 0
        names: set[str] = set()
        for i, p in enumerate(self.field(obj, "params", path, list)):
            where = f"{path}.params[{i}]"
            name = self.field(p, "name", where, str)
            kind = self.field(p, "kind", where, str)
            dtype = self.field(p, "dtype", where, str)
            ndim = self.field(p, "ndim", where, int)
            off = self.field(p, "offset", where, int)
            access = self.field(p, "access", where, str)
            if name in names:
                self.fail(f"{where}.name", f"duplicate parameter {name!r}")
            names.add(name)
            if kind not in ("scalar", "ndarray"):
                self.fail(f"{where}.kind", f"expected 'scalar' or 'ndarray', got {kind!r}")
            if dtype not in SCALARS_BY_NAME:
                self.fail(f"{where}.dtype", f"unknown dtype {dtype!r}")
            if (kind == "scalar" and ndim != 0) or (kind == "ndarray" and not 1 <= ndim <= MAX_NDIM):
                self.fail(f"{where}.ndim", f"invalid ndim {ndim} for a {kind}")
            if off != offset:
                self.fail(f"{where}.offset", f"expected {offset} (packed layout), got {off}")
            if access not in ACCESS_MODES:
                self.fail(f"{where}.access", f"expected one of {ACCESS_MODES}, got {access!r}")
            layout = ParamLayout(name, kind, dtype, ndim, off)
            offset += layout.size
            shape = None
            if graph and "shape" in p and p["shape"] is not None:
                shape_val = self.field(p, "shape", where, list)
                if kind != "ndarray" or len(shape_val) != ndim:
                    self.fail(f"{where}.shape", f"expected a list of {ndim} dimensions")
                for j, d in enumerate(shape_val):
                    ok = d is None or (isinstance(d, str) and d.isidentifier()) or (
                        isinstance(d, int) and not isinstance(d, bool) and d >= 0)
                    if not ok:
                        self.fail(f"{where}.shape[{j}]", f"expected a size, a symbol name or null, got {d!r}")
                shape = tuple(shape_val)
            out.append(ParamInfo(layout, access, shape, self.element_shape(p, where, kind, ndim)))
            if name.startswith(HIDDEN_PREFIX):
                self.check_field_param(out[-1], where)
        self.vector_groups(out, path)
        return tuple(out)

    def element_shape(self, p: Any, where: str, kind: str, ndim: int) -> tuple[int, ...]:
        """Optional (absent in files written before vectors): the trailing element dimensions."""
        if p.get("element_shape") is None:
            return ()
        es = self.field(p, "element_shape", where, list)
        if not 1 <= len(es) <= 2 or (kind == "ndarray" and len(es) >= ndim) or not all(
                isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 4 for d in es):
            self.fail(f"{where}.element_shape", f"expected 1 or 2 sizes in 1..4 (fewer than ndim={ndim} for arrays)")
        return tuple(es)

    def vector_groups(self, params: list[ParamInfo], path: str) -> None:
        """A vector argument `g` is the scalar params `g.0`, `g.1`, ... all with its element_shape."""
        i = 0
        while i < len(params):
            p = params[i]
            if p.layout.kind != "scalar" or not p.element_shape:
                i += 1
                continue
            n = 1
            for d in p.element_shape:
                n *= d
            base = vector_of(p.layout.name)
            group = params[i:i + n]
            if len(group) != n or any(q.layout.kind != "scalar" or q.element_shape != p.element_shape
                                      for q in group) or tuple(q.layout.name for q in group) != element_params(base, n):
                self.fail(f"{path}.params[{i}]", f"vector argument {base!r} needs {n} scalar params "
                                                  f"{base}.0..{base}.{n - 1} of element_shape {list(p.element_shape)}")
            i += n

    def kernel(self, name: str, k: Any, path: str, target_names: set[str]) -> KernelInfo:
        display = self.field(k, "display_name", path, str)
        return KernelInfo(name, display, self.params(k, path, graph=False), self.entries(k, path, target_names))

    def graph(self, name: str, g: Any, path: str, kernels: dict[str, KernelInfo],
              target_names: set[str]) -> GraphInfo:
        params = self.params(g, path, graph=True)
        by_name = {p.layout.name: p for p in params}
        dispatches: list[DispatchInfo] = []
        for i, d in enumerate(self.field(g, "dispatches", path, list)):
            where = f"{path}.dispatches[{i}]"
            kname = self.field(d, "kernel", where, str)
            if kname not in kernels:
                self.fail(f"{where}.kernel", f"unknown kernel {kname!r}")
            kparams = kernels[kname].params
            raw = self.field(d, "bindings", where, list)
            if len(raw) != len(kparams):
                self.fail(f"{where}.bindings", f"kernel {kname!r} takes {len(kparams)} arguments, got {len(raw)}")
            bindings: list[Binding] = []
            for j, (b, kp) in enumerate(zip(raw, kparams)):
                bw = f"{where}.bindings[{j}]"
                if isinstance(b, dict) and "field" in b:
                    fname = self.field(b, "field", bw, str)
                    gp = by_name.get(HIDDEN_PREFIX + fname)
                    if fname not in self.fields or gp is None:
                        self.fail(f"{bw}.field", f"unknown field {fname!r} (or no graph parameter carries it)")
                    if kp.layout.name != HIDDEN_PREFIX + fname:
                        self.fail(f"{bw}.field", f"kernel parameter {kp.layout.name!r} does not carry field {fname!r}")
                    bindings.append(Binding("field", arg=fname))
                elif isinstance(b, dict) and "arg" in b:
                    arg = self.field(b, "arg", bw, str)
                    gp = by_name.get(arg)
                    if gp is None:
                        self.fail(f"{bw}.arg", f"unknown graph parameter {arg!r}")
                    if (gp.layout.kind, gp.layout.dtype, gp.layout.ndim) != (
                            kp.layout.kind, kp.layout.dtype, kp.layout.ndim):
                        self.fail(f"{bw}.arg", f"graph parameter {arg!r} does not match kernel parameter "
                                               f"{kp.layout.name!r}")
                    bindings.append(Binding("arg", arg=arg))
                else:
                    value = self.field(b, "const", bw, (bool, int, float))
                    dtype = self.field(b, "dtype", bw, str)
                    if kp.layout.kind != "scalar" or dtype != kp.layout.dtype:
                        self.fail(f"{bw}.dtype", f"constant does not match kernel parameter {kp.layout.name!r}")
                    self.const_value(value, dtype, f"{bw}.const")
                    bindings.append(Binding("const", value=value, dtype=dtype))
            dispatches.append(DispatchInfo(kname, tuple(bindings)))
        return GraphInfo(name, params, tuple(dispatches), self.entries(g, path, target_names))

    def const_value(self, value: bool | float, dtype: str, path: str) -> None:
        """A constant binding must be a value of its dtype (the runtimes pack it as one)."""
        t = SCALARS_BY_NAME[dtype]
        if t.is_bool != isinstance(value, bool) or (t.is_int and not isinstance(value, int)):
            self.fail(path, f"expected a {dtype} value, got {value!r}")
        lo, hi = value_range(t)
        infinite = isinstance(value, float) and not math.isfinite(value)
        if not t.is_bool and not lo <= value <= hi and not (t.is_float and infinite):
            self.fail(path, f"{str(value)[:40]} is out of range for {dtype}")


def read_provenance(doc: Any) -> dict[str, Any] | None:
    """The optional "provenance" object: string fields "kiln_version" and "target", "flags" (an
    object of strings, numbers or booleans) and "sources" (kernel name -> SHA-256 hex of its
    source); unknown keys are kept. None when absent."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ArtifactError("manifest: provenance: expected an object")
    for key in ("kiln_version", "target"):
        if key in doc and not isinstance(doc[key], str):
            raise ArtifactError(f"manifest: provenance.{key}: expected a string")
    flags = doc.get("flags", {})
    if not isinstance(flags, dict) or not all(
            isinstance(v, (str, bool, int, float)) for v in flags.values()):
        raise ArtifactError("manifest: provenance.flags: expected an object of plain values")
    sources = doc.get("sources", {})
    if not isinstance(sources, dict) or not all(
            isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)
            for v in sources.values()):
        raise ArtifactError("manifest: provenance.sources: expected kernel name -> SHA-256 hex")
    return dict(doc)
