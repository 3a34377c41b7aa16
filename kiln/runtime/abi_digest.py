"""The ABI descriptor that binds a manifest to its object code.

For every entry point (each graph and each kernel) the compiler puts into the object a 32-byte
writable global `<entry symbol>_abi` holding `abi_digest(...)`: a SHA-256 of a canonical JSON of
what the manifest says about that entry (its kind and name, the entry symbol, and per parameter
its name, kind, dtype, rank, block offset, access mode and shape constraints). The loader
recomputes the digest from the manifest it read and refuses the file (ArtifactError) when the
object holds a different one or none: a manifest edited consistently and re-checksummed, or
another file's object under this manifest, no longer runs (docs/format.md, docs/debug.md).

It protects against mistakes and tampering with the manifest alone; whoever can write the object
can write its digests too (running a file runs its native code: trust it like a library).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from kiln.artifact.manifest import ParamInfo
from kiln.errors import ArtifactError

#: the global's name is the entry symbol followed by this
SUFFIX = "_abi"
DIGEST_SIZE = 32


def canonical_abi(kind: str, name: str, symbol: str, params: Sequence[ParamInfo]) -> bytes:
    """The canonical JSON (sorted keys, no spaces, UTF-8) that `abi_digest` hashes."""
    doc: dict[str, Any] = {
        "kind": kind, "name": name, "symbol": symbol,
        "params": [{"name": p.layout.name, "kind": p.layout.kind, "dtype": p.layout.dtype, "ndim": p.layout.ndim,
                    "offset": p.layout.offset, "access": p.access,
                    "shape": None if p.shape is None else list(p.shape)} for p in params],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def abi_digest(kind: str, name: str, symbol: str, params: Sequence[ParamInfo]) -> bytes:
    """SHA-256 of the entry's canonical ABI (`kind` "graph" or "kernel")."""
    return hashlib.sha256(canonical_abi(kind, name, symbol, params)).digest()


def check_abi(native: Any, kind: str, name: str, symbol: str, params: Sequence[ParamInfo]) -> None:
    """Refuse (ArtifactError) an object whose descriptor for `symbol` is missing or disagrees
    with what the manifest says about the entry."""
    import ctypes

    glob = symbol + SUFFIX
    native.address(symbol)              # the entry itself first: "symbol ... is not defined"
    if glob not in native.symbols:
        raise ArtifactError(f"{kind} {name!r}: the object has no ABI descriptor {glob!r} (a manifest "
                            "that does not belong to this code, or a file written by an older kiln)")
    held = ctypes.string_at(native.data_address(glob, DIGEST_SIZE), DIGEST_SIZE)
    if held != abi_digest(kind, name, symbol, params):
        raise ArtifactError(f"{kind} {name!r}: the manifest disagrees with the object's ABI descriptor "
                            f"(parameters, access modes, shapes or entry point {symbol!r} were changed, or "
                            "the object belongs to another file)")
