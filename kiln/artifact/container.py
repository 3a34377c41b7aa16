"""The .kiln container: a fixed header, a JSON manifest and binary blobs, each checksummed.

Layout (all integers little-endian; docs/format.md is the public contract):

    offset  size  field
    0       8     magic  b"KILN\\x00\\r\\n\\x1a"   (catches text-mode and truncation damage early)
    8       2     format major version
    10      2     format minor version
    12      4     flags: bit 0 = signed (an Ed25519 signature trailer ends the file); others 0
    16      8     manifest offset   (always 64 in version 1)
    24      8     manifest length
    32      32    SHA-256 of the manifest bytes
    64      ...   manifest (UTF-8 JSON), then blobs, each starting on a 16-byte boundary

Each blob's offset, size and SHA-256 are listed in the manifest's "blobs" table. A signed file
ends with a fixed trailer (SIGNATURE_TRAILER: magic, Ed25519 public key, signature over every
byte before the trailer); kiln.signing makes and checks it. Reading never executes anything from
the file, never unpickles and never writes to disk.
"""

from __future__ import annotations

import os
import struct
from typing import ClassVar

from kiln._record import Record
from kiln.errors import ArtifactError

MAGIC = b"KILN\x00\r\n\x1a"
FORMAT_MAJOR = 2   # 2: array arguments carry strides (kiln.abi); 1.x files need recompiling
FORMAT_MINOR = 0
HEADER = struct.Struct("<8sHHIQQ32s")
HEADER_SIZE = 64
BLOB_ALIGN = 16
#: a manifest larger than this is refused before parsing (a hostile file could claim gigabytes)
MAX_MANIFEST_BYTES = 64 << 20
#: header flag: the file ends with a signature trailer (1.0 readers refuse any flag: no misreading)
FLAG_SIGNED = 0x1
KNOWN_FLAGS = FLAG_SIGNED
#: the signature trailer: magic, Ed25519 public key (32 bytes), signature (64 bytes)
SIGNATURE_TRAILER = struct.Struct("<8s32s64s")
SIGNATURE_MAGIC = b"KILNSIG1"


def _align(n: int) -> int:
    return (n + BLOB_ALIGN - 1) // BLOB_ALIGN * BLOB_ALIGN


try:  # the built-in implementation imports in microseconds; hashlib loads OpenSSL first
    from _sha256 import sha256 as _sha256_new  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python >= 3.12 renamed it
    try:
        from _sha2 import sha256 as _sha256_new  # type: ignore[import-not-found,no-redef]
    except ImportError:
        from hashlib import sha256 as _sha256_new  # type: ignore[assignment,no-redef]


class _ScanContext:
    """What CPython's C JSON scanner reads from its decoder: strict parsing, no hooks, and no
    NaN/Infinity (a manifest never holds them)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: ClassVar[dict[str, object]] = {}

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not allowed in a kiln manifest")


def json_loads(text: str) -> object:
    """`json.loads` for manifests. Uses the C scanner directly where it exists: importing the json
    package costs ~2 ms, a fifth of kiln's whole start-up budget."""
    try:
        from _json import make_scanner  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - not CPython
        import json
        return json.loads(text)
    ws = " \t\n\r"
    start = len(text) - len(text.lstrip(ws))
    try:
        value, end = make_scanner(_ScanContext)(text, start)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at character {e.value}") from None
    if len(text.rstrip(ws)) != end:
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value


#: above this size hashlib's OpenSSL SHA-256 (5x faster, ~2 ms to import) pays for itself
_BIG_HASH = 1 << 20


def _sha256(data: bytes | memoryview) -> object:
    if len(data) > _BIG_HASH:
        import hashlib
        return hashlib.sha256(data)
    return _sha256_new(data)


def sha256_hex(data: bytes | memoryview) -> str:
    return _sha256(data).hexdigest()  # type: ignore[attr-defined, no-any-return]


def pack(manifest: dict[str, object], blobs: dict[str, bytes]) -> bytes:
    """Serialize a manifest (without its "blobs" table, which is filled here) and the blobs."""
    import json  # writing happens at compile time; loading uses the C scanner alone
    names = sorted(blobs)
    # The blob table's offsets depend on the manifest's length, which depends on the offsets'
    # digits: lay out with a fixed-width placeholder pass, then once more for real.
    digests = {name: sha256_hex(blobs[name]) for name in names}   # once, not once per pass
    table: list[dict[str, object]] = []
    body = b""
    for _ in range(16):  # offsets only grow, so this settles in a few passes
        manifest = dict(manifest, blobs=table)
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        offset = _align(HEADER_SIZE + len(body))
        new_table = []
        for name in names:
            data = blobs[name]
            new_table.append({"name": name, "offset": offset, "size": len(data), "sha256": digests[name]})
            offset = _align(offset + len(data))
        if new_table == table:
            break
        table = new_table
    else:  # pragma: no cover
        raise AssertionError("blob table did not converge")
    header = HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, 0, HEADER_SIZE, len(body),
                         _sha256_new(body).digest())
    out = bytearray(header.ljust(HEADER_SIZE, b"\x00"))
    out += body
    for entry in table:
        out += b"\x00" * (int(entry["offset"]) - len(out))  # type: ignore[call-overload]
        out += blobs[str(entry["name"])]
    return bytes(out)


class Container(Record):
    """A parsed, checksum-verified .kiln file: the manifest and zero-copy views of the blobs."""

    __slots__ = ('format_version', 'manifest', 'blobs', 'size', 'signed')
    format_version: tuple[int, int]
    manifest: dict[str, object]
    blobs: dict[str, memoryview]
    size: int
    #: the file carries a signature trailer (checked only when unpack got trusted_keys)
    signed: bool
    _defaults: ClassVar[dict[str, object]] = {"signed": False}


def unpack(data: bytes, *, source: str = "<bytes>") -> Container:
    """Parse and verify a .kiln file. Every failure is an ArtifactError naming `source`.

    A signature trailer is recognised and left out of the content; checking it against trusted
    keys is kiln.signing.verify_signature's job (the loaders call it first when given keys).
    """

    def fail(what: str) -> ArtifactError:
        return ArtifactError(f"{source}: {what}")

    if len(data) < HEADER_SIZE:
        if not data.startswith(MAGIC[: len(data)]) or len(data) == 0:
            raise fail("not a kiln file (bad magic)" if data else "file is empty")
        raise fail(f"truncated file: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, major, minor, flags, m_off, m_len, m_sha = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise fail("not a kiln file (bad magic)")
    if major > FORMAT_MAJOR:
        raise fail(f"format version {major}.{minor} is newer than this kiln supports "
                   f"({FORMAT_MAJOR}.{FORMAT_MINOR}); upgrade kiln to load it")
    if major < 1:
        raise fail(f"invalid format version {major}.{minor}")
    if major < FORMAT_MAJOR:
        raise fail(f"format version {major}.{minor} was written by an older kiln; recompile it "
                   f"(this kiln: {FORMAT_MAJOR}.{FORMAT_MINOR})")   # 1.x code takes arrays without strides
    if flags & ~KNOWN_FLAGS:
        raise fail(f"unsupported header flags 0x{flags:x}")
    end = len(data)      # where the content covered by the blob table ends
    if flags & FLAG_SIGNED:
        end -= SIGNATURE_TRAILER.size
        if end < HEADER_SIZE or data[end:end + len(SIGNATURE_MAGIC)] != SIGNATURE_MAGIC:
            raise fail("header flags say the file is signed (bit 0) but it has no signature trailer")
    if m_off != HEADER_SIZE or m_len > MAX_MANIFEST_BYTES:
        raise fail(f"bad manifest location (offset {m_off}, length {m_len})")
    if m_off + m_len > end:
        raise fail(f"truncated file: manifest needs bytes up to {m_off + m_len}, file has {end}")
    view = memoryview(data)
    body = view[m_off: m_off + m_len]
    if _sha256(body).digest() != m_sha:  # type: ignore[attr-defined]
        raise fail("manifest checksum mismatch (the file is damaged)")
    try:
        manifest = json_loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise fail(f"manifest is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise fail("manifest: expected a JSON object at the top level")
    table = manifest.get("blobs")
    if not isinstance(table, list):
        raise fail("manifest: field 'blobs' missing or not a list")
    blobs: dict[str, memoryview] = {}
    for i, entry in enumerate(table):
        where = f"manifest: blobs[{i}]"
        if not isinstance(entry, dict):
            raise fail(f"{where}: expected an object")
        name, off, size, digest = (entry.get(k) for k in ("name", "offset", "size", "sha256"))
        if not isinstance(name, str) or not name:
            raise fail(f"{where}.name: expected a non-empty string")
        for key, val in (("offset", off), ("size", size)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                raise fail(f"{where}.{key}: expected a non-negative integer, got {val!r}")
        if not isinstance(digest, str) or len(digest) != 64:
            raise fail(f"{where}.sha256: expected 64 hex digits")
        assert isinstance(off, int) and isinstance(size, int)
        if off < m_off + m_len or off + size > end:
            raise fail(f"truncated or corrupt file: blob {name!r} spans bytes {off}..{off + size}, "
                       f"file has {end}")
        blob = view[off: off + size]
        if sha256_hex(blob) != digest:
            raise fail(f"checksum mismatch in blob {name!r} (the file is damaged)")
        if name in blobs:
            raise fail(f"{where}.name: duplicate blob {name!r}")
        blobs[name] = blob
    return Container((major, minor), manifest, blobs, len(data), bool(flags & FLAG_SIGNED))


def read_bytes(path: str) -> bytes:
    """The whole file, or an ArtifactError naming it (one read: files are loaded from memory)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}") from None


def _umask() -> int:
    """The process umask without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file so that a reader (or a crash) never sees half of it: write a unique
    temporary in the destination folder, fsync it, rename it over `path`, fsync the folder. The
    temporary is removed on every failure (KeyboardInterrupt included); concurrent writers each
    rename a complete file of their own. OSError becomes ArtifactError naming `path`."""
    import tempfile
    dest = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise ArtifactError(f"cannot save {dest}: {e.strerror or e}") from None
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())   # what open() would have made, not mkstemp's 0600
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ArtifactError(f"cannot save {dest}: {e.strerror or e}") from None
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make the rename durable. Best effort: some systems cannot open or fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_file(path: str) -> Container:
    return unpack(read_bytes(path), source=str(path))
