"""The on-disk compile cache: a compile request's .kiln bytes, keyed by everything they depend on.

Direct kernel calls and `GraphBuilder/Module.compile()` both go through `compile_program`, which
looks a request up here before running the front end (and before importing llvmlite), and stores
what it compiled. The value is the file itself, already complete and checksummed: a hit is
verified by the runtime's own reader (`container.unpack`), and an entry that fails it is a miss
whose fresh result replaces it.

The key (`request_key`) is a sha256 over

- the cache format, kiln's version, the container format and a fingerprint of kiln's own source
  files (size + mtime of each, so a changed compiler never reads entries of the old one), and
  llvmlite's version (its dist-info and shared library, read without importing it);
- per kernel and every `@kl.func` it reaches: the source text, file, line and qualname, and the
  value of every name the code can resolve at compile time (closure cells, globals, builtins,
  the attributes a module is read through), as type + repr for plain constants, a fingerprint
  for kiln funcs and types. A name bound to anything else (an arbitrary object) makes the request
  uncacheable: it is compiled, never stored, so an unseen dependency can never serve stale code;
- the argument types, the graphs (arguments, shapes, dispatches, baked constants), the exported
  names, the targets (for "host": this machine's architecture and CPU feature flags).

Location: `KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`; `KILN_CACHE=0`
turns it off (kiln/config.py). CUDA requests and compiles that dump stages are not cached (their
output depends on the installed libdevice/nvJitLink, and dumps are written while compiling).
Concurrent processes are safe: an entry is written to a unique temporary file in the same
folder, flushed to disk, then renamed over the final name (atomic on POSIX and Windows), so a
reader sees either no entry or a whole one. The runtime never imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from kiln import config
from kiln._version import KILN_VERSION
from kiln.artifact import container
from kiln.driver.request import CompileRequest, GraphArgSpec
from kiln.errors import ArtifactError
from kiln.lang.callables import Compilable
from kiln.lang.fields import Field, TemplateArg
from kiln.lang.transformer import NameResolver
from kiln.runtime.hostcpu import host_arch, host_features
from kiln.types import NdArrayType, ScalarType, default_fp

#: bump when the key's contents or the entry layout change
CACHE_FORMAT = 1
#: module attribute chains followed when a kernel reads a module (`cfg.params.N`)
_MAX_MODULE_DEPTH = 3
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
#: modules whose classes, builtins and ufuncs are keyed by name (their code is part of the
#: installation, which the key covers through kiln's and llvmlite's fingerprints and numpy's version)
_LIBRARY_MODULES = frozenset({"builtins", "math", "cmath", "numpy", "kiln"})


class Uncacheable(Exception):
    """A kernel reads a name whose value the key cannot capture: compile without the cache."""


def cache_dir(cfg: config.Config | None = None) -> str:
    """The cache folder in force (see the module docstring)."""
    cfg = cfg or config.current()
    if cfg.cache_dir:
        return os.path.expanduser(cfg.cache_dir)
    base = cfg.xdg_cache_home or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kiln")


def enabled_for(request: CompileRequest, *, dumping: bool) -> bool:
    """Whether `request` may use the cache: on (KILN_CACHE), CPU only, no stage dumps."""
    return config.current().cache and not request.cuda and not dumping


def entry_path(key: str, cfg: config.Config | None = None) -> str:
    return os.path.join(cache_dir(cfg), f"v{CACHE_FORMAT}", f"{key}.kiln")


def load(key: str) -> bytes | None:
    """The cached file of `key`, or None (absent, unreadable or failing its checksums)."""
    try:
        with open(entry_path(key), "rb") as f:
            data = f.read()
        container.unpack(data, source="<kiln cache entry>")
    except (OSError, ArtifactError):
        return None
    return data


def store(key: str, data: bytes) -> None:
    """Write an entry atomically (unique temp + fsync + rename); a cache that cannot be written
    (read-only or full disk) is skipped silently, as a cache must never fail a compile."""
    import tempfile  # only a store needs it (it imports shutil and random: ~4 ms of every start)

    path = entry_path(key)
    folder = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# -- the key ---------------------------------------------------------------------------------

def request_key(request: CompileRequest) -> str | None:
    """The cache key of `request`, or None when it cannot be cached (see `Uncacheable`)."""
    h = hashlib.sha256()
    fps = _KernelPrints(field_content=request.field_init)
    try:
        for part in _request_parts(request, fps):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
    except Uncacheable:
        return None
    return h.hexdigest()


#: the request fields _request_parts keys explicitly (the rest are keyed by their repr)
_KEYED_FIELDS = frozenset({"graphs", "kernels", "cpu_targets", "cuda", "cuda_archs", "fast_math", "random_seed",
                           "field_init"})


def _request_parts(request: CompileRequest, fps: _KernelPrints) -> Iterator[str]:
    yield f"kiln-cache {CACHE_FORMAT} kiln {KILN_VERSION} format {container.FORMAT_MAJOR}.{container.FORMAT_MINOR}"
    yield _compiler_fingerprint()
    yield _llvmlite_fingerprint()
    yield f"numpy {np.__version__}"
    yield f"targets {request.cpu_targets!r} cuda {request.cuda} {request.cuda_archs!r} fast_math {request.fast_math}"
    yield f"seed {request.random_seed} field_init {request.field_init} default_fp {default_fp().name}"
    # every other field of the request, so that a new compile option can never hit an old entry
    yield repr({k: v for k, v in vars(request).items() if k not in _KEYED_FIELDS})
    types_used = [t for k in request.kernels for t in k.param_types] + [
        t for g in request.graphs for d in g.dispatches for t in d.param_types]
    if any(isinstance(t, TemplateArg) for t in types_used):
        raise Uncacheable("template arguments are compile-time objects")
    if "host" in request.cpu_targets:
        yield _host_fingerprint()
    for k in request.kernels:
        yield f"kernel {k.name!r} {fps.of(k.kernel)} {k.param_types!r}"
    for g in request.graphs:
        yield f"graph {g.name!r} args " + repr([(a.name, a.type, a.shape) for a in g.args])
        for d in g.dispatches:
            args = [("arg", a.name) if isinstance(a, GraphArgSpec) else (type(a).__name__, repr(a)) for a in d.args]
            yield f"dispatch {fps.of(d.kernel)} {d.param_types!r} {args!r}"


@functools.lru_cache(maxsize=1)
def _compiler_fingerprint() -> str:
    """Size and mtime of every source file of kiln: a changed compiler never hits old entries."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                h.update(f"{os.path.relpath(os.path.join(folder, name), root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return "kiln sources " + h.hexdigest()


@functools.lru_cache(maxsize=1)
def _llvmlite_fingerprint() -> str:
    """llvmlite's version (dist-info name) and shared library (size, mtime), without importing
    it: the import alone costs 0.2-0.4 s, more than a cache hit may."""
    import importlib.util

    spec = importlib.util.find_spec("llvmlite")
    if spec is None or not spec.submodule_search_locations:
        return "llvmlite missing"
    pkg = next(iter(spec.submodule_search_locations))
    site = os.path.dirname(pkg)
    dist = sorted(n for n in os.listdir(site) if n.startswith("llvmlite-") and n.endswith((".dist-info", ".egg-info")))
    libs = []
    binding = os.path.join(pkg, "binding")
    for name in sorted(os.listdir(binding)) if os.path.isdir(binding) else []:
        if name.startswith("libllvmlite") or name.endswith((".so", ".dylib", ".dll")):
            st = os.stat(os.path.join(binding, name))
            libs.append((name, st.st_size, st.st_mtime_ns))
    return f"llvmlite {dist!r} {libs!r}"


@functools.lru_cache(maxsize=1)
def _host_fingerprint() -> str:
    feats = host_features()
    return f"host {host_arch()} {platform.machine()} {sys.platform} " + (
        "unknown" if feats is None else ",".join(sorted(feats)))


class _KernelPrints:
    """The fingerprint of each kernel or func object, computed once per key. `field_content`:
    the file records the fields' content (compiled graphs and modules), so the key covers it."""

    def __init__(self, field_content: bool = True) -> None:
        self.done: dict[int, str] = {}
        self.active: set[int] = set()
        self.field_content = field_content

    def of(self, c: Compilable) -> str:
        fp = self.done.get(id(c))
        if fp is None:
            if id(c) in self.active:            # recursion: the outer print covers it
                return f"recursive {c.qualname}"
            self.active.add(id(c))
            try:
                fp = self.done[id(c)] = self._compute(c)
            finally:
                self.active.discard(id(c))
        return fp

    def _compute(self, c: Compilable) -> str:
        if not isinstance(c, Compilable):
            raise Uncacheable(f"{c!r} is not a kiln kernel")
        try:
            source = c.source
        except Exception as e:  # noqa: BLE001 - no source: the compile reports it properly
            raise Uncacheable(str(e)) from None
        fn = c.py_func
        names = _names_read(fn)
        resolver = NameResolver(fn)
        h = hashlib.sha256()
        h.update(f"{c.kind} {c.qualname} {c.filename}:{c.first_line}\n{source}\n".encode("utf-8", "surrogatepass"))
        for name in sorted(names):
            found, value = resolver.lookup(name)
            if isinstance(value, Field):
                value.name_for(name)   # fixed at first use, as the front end would: it is in the file
            if found:
                h.update(f"{name}={self._value(value, names, 0)}\n".encode("utf-8", "surrogatepass"))
        result = getattr(c, "result_field", None)     # a kernel's return value (kiln.lang.kernel)
        if isinstance(result, Field):
            result.name_for(f"{c.name}_result")        # as the front end names it
            h.update(f"result={self._value(result, names, 0)}\n".encode())
        for pname, ann in sorted(getattr(fn, "__annotations__", {}).items()):
            if not isinstance(ann, str):
                h.update(f"annotation {pname}={self._value(ann, names, 0)}\n".encode())
        return h.hexdigest()

    def _value(self, v: Any, names: frozenset[str], depth: int) -> str:
        if isinstance(v, _PLAIN):
            return f"{type(v).__name__}:{v!r}"
        if isinstance(v, np.generic):
            return f"np.{v.dtype}:{v.tobytes().hex()}"
        if isinstance(v, ScalarType | NdArrayType):
            return f"type:{v!r}"
        if isinstance(v, Field):
            # a compiled module records the field's content as its initial value: key it too
            content = hashlib.sha256(v.array.tobytes()).hexdigest() if self.field_content else "-"
            return f"field:{v.name}:{v.dtype.name}{v.shape}{v.element_shape}:{content}"
        if isinstance(v, Compilable):
            return f"{v.kind}:{self.of(v)}"
        if isinstance(v, tuple | list | frozenset):
            items = sorted(v, key=repr) if isinstance(v, frozenset) else v
            return f"{type(v).__name__}(" + ",".join(self._value(x, names, depth) for x in items) + ")"
        if isinstance(v, types.ModuleType):
            if depth >= _MAX_MODULE_DEPTH:
                return f"module:{v.__name__}"
            attrs = []
            for n in sorted(names):
                try:
                    found, attr = hasattr(v, n), getattr(v, n, None)
                except Exception as e:  # noqa: BLE001 - a lazy module failing to import an attribute
                    raise Uncacheable(f"module {v.__name__}.{n}: {e}") from None
                if found:
                    attrs.append(f"{n}={self._value(attr, names, depth + 1)}")
            return f"module:{v.__name__}[" + ",".join(attrs) + "]"
        if isinstance(v, type | types.BuiltinFunctionType | types.FunctionType | np.ufunc):
            mod = getattr(v, "__module__", None) or type(v).__module__
            if mod.split(".")[0] in _LIBRARY_MODULES:      # fixed for a given installation
                return f"callable:{mod}.{getattr(v, '__qualname__', getattr(v, '__name__', '?'))}"
        text = repr(v)
        if type(v).__module__.startswith("kiln") and " at 0x" not in text:
            return f"kiln:{type(v).__qualname__}:{text}"
        raise Uncacheable(f"a kernel reads a {type(v).__name__} object, which the cache key cannot capture")


def _names_read(fn: Any) -> frozenset[str]:
    """Every name the function's code may resolve or read as an attribute, and the identifiers
    of string annotations (`from __future__ import annotations`)."""
    code = fn.__code__
    names = set(code.co_names) | set(code.co_freevars)
    for ann in getattr(fn, "__annotations__", {}).values():
        if isinstance(ann, str):
            names.update(_identifiers(ann))
    return frozenset(names)


def _identifiers(text: str) -> Iterator[str]:
    word = ""
    for ch in text + " ":
        if ch.isalnum() or ch == "_":
            word += ch
        else:
            if word and not word[0].isdigit():
                yield word
            word = ""
