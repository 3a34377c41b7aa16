"""Signed .kiln files: Ed25519 signatures over the whole file (docs/format.md, "Signed files").

    keys = kiln.signing.generate_key()                 # keep keys.private secret
    graph.save("model.kiln", sign_key=keys.private)
    kiln.load("model.kiln", trusted_keys=[keys.public])  # refuses unsigned or foreign files

A signed file has header flag bit 0 set and ends with a 104-byte trailer: the magic "KILNSIG1",
the signer's Ed25519 public key and the signature of every byte before the trailer (header,
manifest and blobs). Loading with `trusted_keys` refuses, with ArtifactError, a file that is not
signed, is signed by a key not in `trusted_keys`, or whose signature does not verify. Without
`trusted_keys` a signed file loads like any other (the signature is not checked).

Keys are raw 32-byte strings (the Ed25519 private seed / public key) or `cryptography` key
objects. The `cryptography` package is needed only to sign or verify (`pip install kiln[sign]`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from kiln._record import Record
from kiln.artifact.container import (
    FLAG_SIGNED,
    HEADER_SIZE,
    SIGNATURE_MAGIC,
    SIGNATURE_TRAILER,
    read_bytes,
    unpack,
)
from kiln.errors import ArtifactError

__all__ = ["KeyPair", "describe_trust", "generate_key", "key_fingerprint", "sign_bytes",
           "signature_key", "verify_signature"]

_FLAGS = struct.Struct("<I")
_FLAGS_AT = 12     # byte offset of the flags in the container header
#: the trust model in one sentence (docs/guarantees.md says it at length)
TRUST_NOTE = ("running a .kiln file runs its native code with this process's rights, like loading "
              "a shared library: load only files you trust or that are signed by a key you trust")


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ArtifactError("signing and verifying .kiln files needs the 'cryptography' package "
                            "(pip install 'kiln[sign]')") from None
    return ed25519


class KeyPair(Record):
    """An Ed25519 key pair as raw bytes: `private` (32-byte seed: keep it secret) and `public`."""

    __slots__ = ("private", "public")
    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()}, private=<hidden>)"


def generate_key() -> KeyPair:
    """A new random Ed25519 key pair."""
    from cryptography.hazmat.primitives import serialization
    key = _ed25519().Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return KeyPair(private, _public_bytes(key.public_key()))


def _public_bytes(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    raw = serialization.Encoding.Raw
    return bytes(key.public_bytes(raw, serialization.PublicFormat.Raw))


def _private_key(key: Any) -> Any:
    ed = _ed25519()
    if isinstance(key, ed.Ed25519PrivateKey):
        return key
    if isinstance(key, KeyPair):
        key = key.private
    if isinstance(key, (bytes, bytearray, memoryview)) and len(key) == 32:
        return ed.Ed25519PrivateKey.from_private_bytes(bytes(key))
    raise ArtifactError(f"sign_key: expected a 32-byte Ed25519 private key or an Ed25519PrivateKey, "
                        f"got {type(key).__name__}")


def _public_key_bytes(key: Any) -> bytes:
    ed = _ed25519()
    if isinstance(key, ed.Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, ed.Ed25519PublicKey):
        return _public_bytes(key)
    if isinstance(key, KeyPair):
        return key.public
    if isinstance(key, (bytes, bytearray, memoryview)) and len(key) == 32:
        return bytes(key)
    raise ArtifactError(f"trusted_keys: expected 32-byte Ed25519 public keys or Ed25519PublicKey "
                        f"objects, got {type(key).__name__}")


def key_fingerprint(public: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its SHA-256."""
    import hashlib
    return hashlib.sha256(public).hexdigest()[:16]


def _content(data: bytes) -> bytes:
    """The file without any signature trailer and with the signed flag cleared."""
    if len(data) < HEADER_SIZE:
        raise ArtifactError("not a kiln file (shorter than its header)")
    (flags,) = _FLAGS.unpack_from(data, _FLAGS_AT)
    if flags & FLAG_SIGNED:
        data = data[:-SIGNATURE_TRAILER.size]
    return data[:_FLAGS_AT] + _FLAGS.pack(flags & ~FLAG_SIGNED) + data[_FLAGS_AT + 4:]


def sign_bytes(data: bytes, key: Any) -> bytes:
    """`data` (a valid .kiln file, signed or not) signed with `key` (replacing any signature)."""
    unpack(data, source="<file to sign>")        # never sign something that would not load
    private = _private_key(key)
    content = bytearray(_content(data))
    (flags,) = _FLAGS.unpack_from(content, _FLAGS_AT)
    _FLAGS.pack_into(content, _FLAGS_AT, flags | FLAG_SIGNED)
    signature = private.sign(bytes(content))
    return bytes(content) + SIGNATURE_TRAILER.pack(SIGNATURE_MAGIC, _public_bytes(private.public_key()),
                                                   signature)


def signature_key(data: bytes) -> bytes | None:
    """The public key a file says signed it (unverified), or None for an unsigned file."""
    if len(data) < HEADER_SIZE + SIGNATURE_TRAILER.size:
        return None
    (flags,) = _FLAGS.unpack_from(data, _FLAGS_AT)
    if not flags & FLAG_SIGNED:
        return None
    magic, public, _sig = SIGNATURE_TRAILER.unpack_from(data, len(data) - SIGNATURE_TRAILER.size)
    return bytes(public) if magic == SIGNATURE_MAGIC else None


def verify_signature(data: bytes, trusted_keys: Any, source: str = "<bytes>") -> bytes:
    """Check that `data` is signed by one of `trusted_keys`; returns the signer's public key.
    Raises ArtifactError naming `source` otherwise (an empty key list trusts nobody)."""
    if isinstance(trusted_keys, (bytes, bytearray, memoryview)) or not isinstance(trusted_keys, Iterable):
        trusted_keys = [trusted_keys]
    trusted = {_public_key_bytes(k) for k in trusted_keys}
    public = signature_key(data)
    if public is None:
        raise ArtifactError(f"{source}: the file is not signed, and trusted_keys requires a signature "
                            "by a trusted key")
    if public not in trusted:
        raise ArtifactError(f"{source}: signed by key {key_fingerprint(public)}, which is not in "
                            "trusted_keys")
    ed = _ed25519()
    from cryptography.exceptions import InvalidSignature
    _magic, _public, signature = SIGNATURE_TRAILER.unpack_from(data, len(data) - SIGNATURE_TRAILER.size)
    try:
        ed.Ed25519PublicKey.from_public_bytes(public).verify(
            bytes(signature), bytes(data[:len(data) - SIGNATURE_TRAILER.size]))
    except InvalidSignature:
        raise ArtifactError(f"{source}: the signature by key {key_fingerprint(public)} does not match "
                            "the file's content (the file was changed after signing)") from None
    return public


def describe_trust(path_or_data: Any, trusted_keys: Any = None) -> list[str]:
    """Lines for `kiln inspect`: whether the file is signed, by which key, whether the signature
    verifies (against `trusted_keys` when given), and the trust model."""
    data = path_or_data if isinstance(path_or_data, bytes) else read_bytes(path_or_data)
    public = signature_key(data)
    lines: list[str] = []
    if public is None:
        (flags,) = _FLAGS.unpack_from(data, _FLAGS_AT) if len(data) >= HEADER_SIZE else (0,)
        lines.append("signature: damaged (signed flag without a trailer)" if flags & FLAG_SIGNED
                     else "signature: none (unsigned file)")
    else:
        lines.append(f"signature: Ed25519, key {key_fingerprint(public)} ({public.hex()})")
        try:
            verify_signature(data, public if trusted_keys is None else trusted_keys, "file")
        except ArtifactError as e:
            lines.append(f"signature check: FAILED: {str(e).removeprefix('file: ')}")
        else:
            lines.append("signature check: valid, by a trusted key" if trusted_keys is not None else
                         "signature check: valid for the key it names (pass trusted keys to check "
                         "who signed it)")
    lines.append("trust: " + TRUST_NOTE)
    return lines

