"""Debug mode's error record: how a checked kernel reports its first failed check, and how the
runtime turns that record into a `KernelIndexError` / `KernelZeroDivisionError`.

A module compiled with checks (kiln.passes.insert_bounds_checks, kiln.codegen.debug_checks)
holds three writable globals:

- `kiln_debug_record`: RECORD_SLOTS int64 slots: [0] a flag (0: no failure), [1] the kernel
  running when it failed (an index into the table's kernels), [2] the failed check site (an
  index into the table's sites), [3] the number of index values, then MAX_NDIM index values
  and MAX_NDIM extents. The first failure wins (a compare-and-swap on the flag).
- `kiln_debug_table_len` (int64) and `kiln_debug_table` (that many bytes): UTF-8 JSON
  `{"kernels": [display names], "sites": [[kind, array, file, line], ...]}`.

Each kernel entry stores its kernel index in `kiln_debug_kernel` before running, checks the flag
after and returns STATUS_CHECK_FAILED when it is set; a graph entry stops at the first non-zero
status, so nothing after the failing dispatch runs. The record is per loaded module: concurrent
runs of one debug module from several threads share it (documented in docs/debug.md).
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

from kiln.errors import ArtifactError, KernelIndexError, KernelZeroDivisionError, KilnError
from kiln.types import MAX_NDIM

RECORD = "kiln_debug_record"
KERNEL = "kiln_debug_kernel"
TABLE = "kiln_debug_table"
TABLE_LEN = "kiln_debug_table_len"
#: flag, kernel, site, ndim, MAX_NDIM indices, MAX_NDIM extents
RECORD_SLOTS = 4 + 2 * MAX_NDIM
#: what an entry returns after a failed check (0 is success)
STATUS_CHECK_FAILED = 3


class DebugRecord:
    """The error record of one loaded module (None from `attach` for a release module)."""

    def __init__(self, native: Any, table: dict[str, Any]) -> None:
        self._array = (ctypes.c_int64 * RECORD_SLOTS).from_address(
            native.data_address(RECORD, RECORD_SLOTS * 8))
        self._native = native          # keeps the memory mapped
        self.kernels: list[str] = [str(k) for k in table.get("kernels", [])]
        self.sites: list[list[Any]] = list(table.get("sites", []))

    @classmethod
    def attach(cls, native: Any) -> DebugRecord | None:
        if RECORD not in native.symbols:
            return None
        return cls(native, parse_table(native_table(native, TABLE, TABLE_LEN, "debug table")))

    def take_error(self) -> KilnError | None:
        """The failure recorded by the last run as an exception (and the record cleared), or
        None when no check failed."""
        rec = list(self._array)
        if rec[0] == 0:
            return None
        ctypes.memset(ctypes.addressof(self._array), 0, RECORD_SLOTS * 8)
        kernel = self.kernels[rec[1]] if 0 <= rec[1] < len(self.kernels) else f"#{rec[1]}"
        return describe(rec, kernel, self.sites)


#: the largest site table (debug checks, prints) a loader accepts (bytes)
MAX_TABLE = 1 << 26


def native_table(native: Any, table: str, table_len: str, what: str) -> bytes:
    """The bytes of a site table a loaded CPU object carries (`table`, its length in
    `table_len`), bounded by MAX_TABLE (ArtifactError beyond)."""
    n = ctypes.c_int64.from_address(native.data_address(table_len, 8)).value
    if not 0 < n <= MAX_TABLE:
        raise ArtifactError(f"{what} of {n} bytes")
    return ctypes.string_at(native.data_address(table, n), n)


def parse_table(raw: bytes) -> dict[str, Any]:
    """The site table's JSON (ArtifactError when it is not a JSON object)."""
    try:
        table = json.loads(raw.rstrip(b"\0").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"unreadable debug table: {e}") from None
    if not isinstance(table, dict):
        raise ArtifactError("debug table is not a JSON object")
    return table


def describe(rec: list[int], kernel: str, sites: list[list[Any]]) -> KilnError:
    """The exception for a set record `rec` of kernel `kernel` (the CPU reads the kernel from the
    record, the CUDA runtime knows which launch failed)."""
    site = sites[rec[2]] if 0 <= rec[2] < len(sites) else ["?", "?", "?", 0]
    kind, array, filename, line = (list(site) + ["?"] * 4)[:4]
    where = f"{filename}:{line}"
    if kind == "divide":
        return KernelZeroDivisionError(f"kernel {kernel!r} at {where}: integer division or modulo by zero")
    ndim = max(0, min(int(rec[3]), MAX_NDIM))
    index = tuple(rec[4:4 + ndim])
    shape = tuple(rec[4 + MAX_NDIM:4 + MAX_NDIM + ndim])
    shown = index[0] if ndim == 1 else index
    return KernelIndexError(f"kernel {kernel!r} at {where}: index {shown} is out of bounds for array "
                            f"{array!r} of shape {shape}")
