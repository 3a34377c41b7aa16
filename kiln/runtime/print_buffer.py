"""`print` in kernels: the module's print buffer, and how the runtime turns it into text after a run.

A module whose kernels print (kiln.codegen.print_sites) holds four globals; a module without
`print` has none of them, and its code is unchanged:

- `kiln_print_state`: two int64 slots: [0] the slots reserved so far, [1] the records dropped
  because the buffer was full;
- `kiln_print_buffer`: CAPACITY int64 slots. A print of k values reserves 1 + k consecutive
  slots with one atomic add on state[0]; when they fit, slot 0 holds the print site + 1 and the
  others the values (ints sign- or zero-extended, floats widened to f64, bools 0/1), else the
  record is dropped and state[1] counts it;
- `kiln_print_table_len` (int64) and `kiln_print_table` (that many bytes): UTF-8 JSON
  `{"sites": [[texts, dtypes, file, line], ...]}`, where a site's text is
  `texts[0] + v0 + texts[1] + ... + texts[-1]`.

After each run (and before a failed debug check is raised) the runtime writes the records in
buffer order to sys.stdout, reports dropped records on sys.stderr and clears the buffer. The
order of the records is the order of the reservations: program order on one thread, interleaved
between the threads (CPU) or GPU threads of a parallel loop. Runs of one module from several
threads at the same time share the buffer, as they share the debug record.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from kiln.errors import ArtifactError
from kiln.runtime.debug_record import native_table

STATE = "kiln_print_state"
BUFFER = "kiln_print_buffer"
TABLE = "kiln_print_table"
TABLE_LEN = "kiln_print_table_len"
#: int64 slots of the buffer (512 KiB): a print of k values takes 1 + k of them
CAPACITY = 1 << 16

_FLOATS = {"f16": np.float16, "f32": np.float32, "f64": np.float64}
_DTYPES = frozenset({"bool", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", *_FLOATS})


def format_value(value: Any, dtype: str) -> str:
    """How a kernel's print shows one value of `dtype` (also the interpreter's rule): floats
    as numpy prints a scalar of their type (shortest text that reads back to the same value),
    ints in decimal, bools as True/False."""
    if dtype == "bool":
        return str(bool(value))
    if dtype in _FLOATS:
        return str(_FLOATS[dtype](value))
    return str(int(value))


def _decode(slot: int, dtype: str) -> Any:
    """A value from its 64-bit slot (the bits as a signed int64)."""
    if dtype in _FLOATS:
        return struct.unpack("<d", struct.pack("<q", slot))[0]
    if dtype.startswith("u"):
        return slot & ((1 << 64) - 1)
    return slot


def parse_table(raw: bytes) -> list[tuple[list[str], list[str]]]:
    """The sites of a print table: (texts, dtypes) each (ArtifactError when malformed)."""
    try:
        doc = json.loads(raw.rstrip(b"\0").decode("utf-8"))
        sites = [(list(map(str, s[0])), list(map(str, s[1]))) for s in doc["sites"]]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ArtifactError(f"unreadable print table: {e}") from None
    if any(len(texts) != len(types) + 1 or not set(types) <= _DTYPES for texts, types in sites):
        raise ArtifactError("print table: a site's texts and dtypes do not match")
    return sites


def render(slots: list[int], used: int, dropped: int, sites: list[tuple[list[str], list[str]]]) -> tuple[str, str]:
    """(the printed text, the overflow notice or '') of a buffer whose first `used` slots were
    reserved."""
    out: list[str] = []
    pos, end = 0, min(used, len(slots))
    while pos < end and slots[pos] != 0:
        site = slots[pos] - 1
        if not 0 <= site < len(sites):
            break                              # not a record kiln wrote: stop reading
        texts, types = sites[site]
        if pos + 1 + len(types) > end:
            break
        values = slots[pos + 1:pos + 1 + len(types)]
        out.append(texts[0] + "".join(format_value(_decode(v, t), t) + x
                                      for v, t, x in zip(values, types, texts[1:])))
        pos += 1 + len(types)
    notice = (f"kiln: {dropped} print record(s) dropped: the kernel print buffer ({len(slots)} slots "
              f"of 8 bytes) was full; print less per run\n" if dropped else "")
    return "".join(out), notice


class PrintBuffer:
    """The print buffer of one loaded CPU module (None from `attach` for a module without print)."""

    def __init__(self, native: Any, sites: list[tuple[list[str], list[str]]]) -> None:
        self._state = (ctypes.c_int64 * 2).from_address(native.data_address(STATE, 16))
        self._slots = (ctypes.c_int64 * CAPACITY).from_address(native.data_address(BUFFER, CAPACITY * 8))
        self._native = native          # keeps the memory mapped
        self.sites = sites

    @classmethod
    def attach(cls, native: Any) -> PrintBuffer | None:
        if STATE not in native.symbols:
            return None
        return cls(native, parse_table(native_table(native, TABLE, TABLE_LEN, "print table")))

    def flush(self) -> None:
        """Write what the last run printed and clear the buffer."""
        used, dropped = self._state[0], self._state[1]
        if used == 0 and dropped == 0:
            return
        n = min(max(used, 0), CAPACITY)
        text, notice = render(self._slots[:n], n, dropped, self.sites)
        ctypes.memset(ctypes.addressof(self._slots), 0, n * 8)
        ctypes.memset(ctypes.addressof(self._state), 0, 16)
        emit(text, notice)


def emit(text: str, notice: str, out: Callable[[], TextIO] = lambda: sys.stdout) -> None:
    """Write printed text to stdout (looked up now: pytest's capture, redirect_stdout) and an
    overflow notice to stderr."""
    if text:
        stream = out()
        stream.write(text)
        stream.flush()
    if notice:
        sys.stderr.write(notice)
