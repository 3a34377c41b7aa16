"""The manifest of a .kiln file: typed records, JSON encoding and strict validation.

`Manifest.from_json` treats its input as hostile: every field is checked for presence and
type, every cross reference (dispatch -> kernel, binding -> graph param, target -> blob) is
resolved, and the first problem raises ArtifactError with the JSON path of the bad field.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

from kiln._record import Record
from kiln.abi import SLOT, ParamLayout
from kiln.errors import ArtifactError
from kiln.types import MAX_NDIM, SCALARS_BY_NAME

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
    __slots__ = ('layout', 'access', 'shape')
    layout: ParamLayout
    access: str  # how the code uses an ndarray (ACCESS_MODES)
    shape: tuple[ShapeDim, ...] | None  # graph params only: declared shape constraints

    def __init__(self, layout: ParamLayout, access: str, shape: tuple[ShapeDim, ...] | None = None) -> None:
        self.layout = layout
        self.access = access
        self.shape = shape


class KernelInfo(Record):
    __slots__ = ('name', 'display_name', 'params', 'entries')
    name: str  # unique IR name
    display_name: str  # the user's function name
    params: tuple[ParamInfo, ...]
    entries: dict[str, str]  # target name -> native symbol


class Binding(Record):
    __slots__ = ('kind', 'arg', 'value', 'dtype')
    kind: str  # "arg" | "const"
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


class Manifest(Record):
    __slots__ = ('format_version', 'kiln_version', 'created', 'targets', 'kernels', 'graphs', 'exported_kernels',
                 'provenance')
    #: optional build provenance (docs/format.md "Provenance"): read_provenance checks its shape
    _defaults: ClassVar[dict[str, Any]] = {'provenance': None}
    provenance: dict[str, Any] | None
    format_version: tuple[int, int]
    kiln_version: str
    created: str
    targets: tuple[TargetInfo, ...]
    kernels: dict[str, KernelInfo]
    graphs: dict[str, GraphInfo]
    exported_kernels: dict[str, str]  # user-facing name -> KernelInfo.name

    # ----------------------------------------------------------------------------- encoding
    def to_json(self) -> dict[str, Any]:
        def param(p: ParamInfo) -> dict[str, Any]:
            d = p.layout.to_json() | {"access": p.access}
            if p.shape is not None:
                d["shape"] = list(p.shape)
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
                                    {"arg": b.arg} if b.kind == "arg" else {"const": b.value, "dtype": b.dtype}
                                    for b in d.bindings]} for d in g.dispatches],
                                "entries": dict(g.entries)} for g in self.graphs.values()},
            "exported_kernels": dict(self.exported_kernels),
        } | ({} if self.provenance is None else {"provenance": self.provenance})

    # ----------------------------------------------------------------------------- decoding
    @staticmethod
    def from_json(doc: dict[str, Any], blob_names: set[str]) -> Manifest:
        return _Reader(blob_names).manifest(doc)


class _Reader:
    """Validating decoder; each method takes the JSON value and its path for messages."""

    def __init__(self, blob_names: set[str]) -> None:
        self.blob_names = blob_names

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
        kernels = {name: self.kernel(name, k, f"kernels.{name}", target_names)
                   for name, k in self.field(doc, "kernels", "", dict).items()}
        graphs = {name: self.graph(name, g, f"graphs.{name}", kernels, target_names)
                  for name, g in self.field(doc, "graphs", "", dict).items()}
        exported = self.field(doc, "exported_kernels", "", dict)
        for name, kname in exported.items():
            if kname not in kernels:
                self.fail(f"exported_kernels.{name}", f"names unknown kernel {kname!r}")
        return Manifest((ver[0], ver[1]), kiln_version, created, targets, kernels, graphs, dict(exported),
                        read_provenance(doc.get("provenance")))

    def target(self, t: Any, path: str) -> TargetInfo:
        vals = [self.field(t, k, path, str) for k in ("name", "kind", "arch", "triple", "cpu", "features")]
        if vals[1] not in ("cpu", "cuda"):
            self.fail(f"{path}.kind", f"unknown target kind {vals[1]!r}")
        blobs = self.field(t, "blobs", path, list)
        for i, b in enumerate(blobs):
            if not isinstance(b, str) or b not in self.blob_names:
                self.fail(f"{path}.blobs[{i}]", f"names a blob that is not in the file: {b!r}")
        return TargetInfo(*vals, blobs=tuple(blobs))  # type: ignore[arg-type]

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
            offset += SLOT * (1 + ndim)
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
            out.append(ParamInfo(layout, access, shape))
        return tuple(out)

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
                if isinstance(b, dict) and "arg" in b:
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
                    bindings.append(Binding("const", value=value, dtype=dtype))
            dispatches.append(DispatchInfo(kname, tuple(bindings)))
        return GraphInfo(name, params, tuple(dispatches), self.entries(g, path, target_names))


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
