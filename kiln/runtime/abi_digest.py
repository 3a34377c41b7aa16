"""The ABI descriptor that binds a manifest to its object code.

For every entry point (each graph and each kernel) the compiler puts into the object a 32-byte
writable global `<entry symbol>_abi` holding `abi_digest(...)`: a SHA-256 of a canonical JSON of
what the manifest says about that entry (its kind and name, the entry symbol, and per parameter
its name, kind, dtype, rank, block offset, access mode and shape constraints, and the block
layout's revision `kiln.abi.ABI_VERSION`). The loader
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

from kiln.abi import ABI_VERSION
from kiln.artifact.manifest import ParamInfo
from kiln.errors import ArtifactError

#: the global's name is the entry symbol followed by this
SUFFIX = "_abi"
DIGEST_SIZE = 32


def canonical_abi(kind: str, name: str, symbol: str, params: Sequence[ParamInfo]) -> bytes:
    """The canonical JSON (sorted keys, no spaces, UTF-8) that `abi_digest` hashes."""
    doc: dict[str, Any] = {
        "abi": ABI_VERSION, "kind": kind, "name": name, "symbol": symbol,
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
    held = (ctypes.string_at(native.data_address(glob, DIGEST_SIZE), DIGEST_SIZE)
            if glob in native.symbols else None)
    check_descriptor(held, kind, name, symbol, params, "object")


def ptx_descriptor(ptx: bytes, symbol: str) -> bytes | None:
    """The 32 bytes of `<symbol>_abi` as initialised in PTX text (None when absent)."""
    import re

    m = re.search(rb"\.b8 " + re.escape((symbol + SUFFIX).encode()) + rb"\[32\] = \{([0-9, ]+)\}", ptx)
    if m is None:
        return None
    try:
        values = bytes(int(v) for v in m.group(1).split(b","))
    except ValueError:                  # a value above 255: not a descriptor kiln wrote
        return None
    # PTX zero-fills an array past its initializer, and LLVM leaves trailing zero bytes out
    return values.ljust(32, b"\0") if len(values) <= 32 else None


def check_descriptor(held: bytes | None, kind: str, name: str, symbol: str, params: Sequence[ParamInfo],
                     where: str) -> None:
    """Refuse (ArtifactError) a missing descriptor or one that disagrees with the manifest."""
    if held is None:
        raise ArtifactError(f"{kind} {name!r}: the {where} has no ABI descriptor {symbol + SUFFIX!r} (a manifest "
                            "that does not belong to this code, or a file written by an older kiln)")
    if held != abi_digest(kind, name, symbol, params):
        raise ArtifactError(f"{kind} {name!r}: the manifest disagrees with the {where}'s ABI descriptor "
                            f"(parameters, access modes, shapes or entry point {symbol!r} were changed, or "
                            "the code belongs to another file)")
