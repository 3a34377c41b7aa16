"""Fallback object loader through LLVM's MCJIT (llvmlite), for machines kiln's own ELF loader
does not relocate yet (aarch64 Linux). It loads only ELF objects that pass the same inspector.

Memory: MCJIT's section memory manager maps code RW while relocating and makes it R-X on
`finalize_object`, so no page of the loaded object stays writable and executable. (Importing
llvmlite makes ctypes/libffi allocate one RWX trampoline page for its callbacks; that page is
libffi's, not the object's, and the kiln ELF loader path never imports llvmlite.)

llvmlite is imported lazily, inside `load_mcjit_object`, so a runtime-only install never needs it
unless this fallback is actually used. The returned object has the same interface as
`kiln.runtime.elf.LoadedObject`: `address(name)`, `symbols`, `close()`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import ArtifactError
from kiln.runtime.elf import (
    MACHINE_NAMES,
    MAX_ALIGN,
    MAX_IMAGE_SIZE,
    RELOCATIONS,
    SHF_ALLOC,
    SHN_ABS,
    SHN_LORESERVE,
    SHN_UNDEF,
    SHT_NOBITS,
    SHT_RELA,
    STT_SECTION,
    ObjectInfo,
    Section,
    _err,
    _relocation_entries,
    _symwhat,
    inspect_elf_object,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["MCJITObject", "load_mcjit_object"]

_lock = threading.Lock()
_initialized = False


def _llvm() -> Any:
    from kiln._extras import require
    return require("llvmlite.binding", extra="compile", purpose="the MCJIT object loader")


def _host_target_machine(llvm: Any) -> Any:
    """A fresh host target machine: each MCJIT engine takes ownership of the one it is given."""
    global _initialized
    if not _initialized:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _initialized = True
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten())


class MCJITObject:
    """An object file loaded by MCJIT; keeps its execution engine alive."""

    loader = "mcjit"

    def __init__(self, engine: Any, names: list[str]) -> None:
        self._engine = engine
        self._names = names
        self._symbols: dict[str, int] | None = None

    @property
    def symbols(self) -> dict[str, int]:
        """Exported symbol -> address (names known from the ELF symbol table; on other object
        formats only the names looked up through `address` so far)."""
        if self._symbols is None:
            out: dict[str, int] = {}
            for name in self._names:
                addr = self._lookup(name)
                if addr:
                    out[name] = addr
            self._symbols = out
        return self._symbols

    def _lookup(self, name: str) -> int:
        if self._engine is None:
            return 0
        with _lock:
            addr = self._engine.get_global_value_address(name)
            if not addr:
                addr = self._engine.get_function_address(name)
        return int(addr or 0)

    def address(self, symbol: str) -> int:
        if self._symbols is not None and symbol in self._symbols:
            return self._symbols[symbol]
        addr = self._lookup(symbol)
        if not addr:
            raise ArtifactError(f"symbol {symbol!r} is not defined by the loaded object")
        return addr

    # MCJIT lays the image out itself and offers no section ranges; the ELF blob was validated
    # (inspect_elf_object) before LLVM saw it.
    def code_address(self, symbol: str) -> int:
        return self.address(symbol)

    def data_address(self, symbol: str, size: int) -> int:
        return self.address(symbol)

    def close(self) -> None:
        # The engine owns the code: dropping it frees the memory (never call into it afterwards).
        self._engine = None
        self._symbols = {}

    @property
    def closed(self) -> bool:
        return self._engine is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_mcjit_object(blob: bytes) -> MCJITObject:
    """Load an ELF relocatable object for the host through llvmlite's MCJIT.

    Only objects that pass the native loader's inspector (`inspect_elf_object`, strict: every
    relocation section checked, no unwind tables) reach LLVM, so the same external-symbol
    allow-list applies; any ELF machine is accepted since MCJIT does the relocating. Other object
    formats (Mach-O, COFF) cannot be inspected and are refused.
    """
    blob = bytes(blob)
    if blob[:4] != b"\x7fELF":
        raise ArtifactError("MCJIT loader: not an ELF object (only ELF objects, which kiln's "
                            "inspector can check, are loaded)")
    info = inspect_elf_object(blob, machines=frozenset(MACHINE_NAMES), strict=True)
    _check_for_runtime_dyld(blob, info)
    loaded = set(info.loaded)
    names = [n for n, s in info.exports.items() if s.shndx in loaded or s.shndx == SHN_ABS]
    externals = info.externals
    llvm = _llvm()
    if externals:
        # make the allowed helpers visible to MCJIT's resolver even when their library
        # (libgcc_s for the half-float helpers) is not loaded into the process yet
        from kiln.runtime.elf_host import resolve_external
        for name in externals:
            addr = resolve_external(name)
            if addr:
                llvm.add_symbol(name, addr)
    with _lock:
        tm = _host_target_machine(llvm)
        try:
            module = llvm.parse_assembly("")
            module.triple = tm.triple
            engine = llvm.create_mcjit_compiler(module, tm)
            engine.add_object_file(llvm.ObjectFileRef.from_data(blob))
            engine.finalize_object()
        except Exception as e:   # llvmlite raises RuntimeError for malformed objects
            raise ArtifactError(f"MCJIT could not load the object: {e}") from e
    return MCJITObject(engine, names)


def _placeholders(blob: bytes, target: Section, offsets: np.ndarray) -> np.ndarray:
    """The signed 32-bit values at `offsets` (checked in range) in a section's file bytes."""
    if target.type == SHT_NOBITS or not len(offsets):
        return np.zeros(len(offsets), np.int64)
    data = np.frombuffer(blob, np.uint8, target.size, target.offset)
    at = offsets.astype(np.int64)[:, None] + np.arange(4)
    return data[at].copy().view("<i4").reshape(-1).astype(np.int64)


#: how far (bytes) a 32-bit PC-relative target may lie outside its symbol's section in strict mode
_PC_SLACK = 1 << 16


def _empty_names(blob: bytes, symbols: Any) -> np.ndarray:
    """Per symbol, whether its name is empty: no name (st_name 0), or a name offset that points
    at a NUL byte of the string table (a one-byte edit of the string table does that to a name;
    RuntimeDyld then looks the symbol up by "" and aborts on the out-of-reach address 0)."""
    offsets = symbols.entries["name"].astype(np.int64)
    strtab = symbols.strtab
    if strtab is None or strtab.size == 0:
        return np.ones(len(offsets), bool)
    table = np.frombuffer(blob, np.uint8, count=strtab.size, offset=strtab.offset)
    first = table[np.clip(offsets, 0, strtab.size - 1)]
    return (offsets == 0) | (offsets >= strtab.size) | (first == 0)


def _check_for_runtime_dyld(blob: bytes, info: ObjectInfo) -> None:
    """Constructs LLVM's RuntimeDyld is known to abort the process on (it asserts, or calls
    report_fatal_error): oversized or over-aligned sections, symbols past their section,
    relocations of unallocated sections, 32-bit absolute relocations (kiln's code is PIC), and
    32-bit PC-relative relocations that could not reach their target. Not a proof: RuntimeDyld
    is not hardened, and some objects that pass still abort it (docs/guarantees.md)."""
    sections, symbols, machine = info.sections, info.symbols, info.machine
    rela_secs = [s for s in sections if s.type == SHT_RELA]
    total = 0
    for s in sections[1:]:
        if s.flags & SHF_ALLOC:
            if s.align > MAX_ALIGN:
                raise _err(f"{s.label()} sh_addralign {s.align} exceeds the page size {MAX_ALIGN}")
            total += -(-s.size // max(s.align, 1)) * max(s.align, 1)
    if total > MAX_IMAGE_SIZE:
        raise _err(f"allocatable sections total {total:#x} bytes, more than {MAX_IMAGE_SIZE:#x}")
    sizes = np.array([s.size for s in sections], np.uint64)
    alloc = np.array([bool(s.flags & SHF_ALLOC) for s in sections])
    shndx = symbols.shndx
    defined = np.flatnonzero((shndx > SHN_UNDEF) & (shndx < len(sections)))
    bad = defined[symbols.value[defined] > sizes[shndx[defined]]]
    if len(bad):
        sym = symbols[int(bad[0])]
        raise _err(f"{_symwhat(sym)} st_value {sym.value:#x} beyond end of "
                   f"{sections[sym.shndx].label()}")
    for r in rela_secs:
        target = sections[r.info]
        if not target.flags & SHF_ALLOC:
            raise _err(f"{r.label()} relocates {target.label()}, which is not allocatable")
        entries = _relocation_entries(blob, r)
        syms = (entries["info"] >> np.uint64(32)).astype(np.int64)
        types = (entries["info"] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        sym_sections = shndx[syms]
        defined = (sym_sections > SHN_UNDEF) & (sym_sections < len(sections))
        if (defined & ~alloc[np.minimum(sym_sections, len(sections) - 1)]).any():
            # RuntimeDyld would load that section anywhere, out of a 32-bit displacement's reach
            raise _err(f"{r.label()}: a relocation refers to a symbol in a section that is not "
                       "allocatable")
        unnamed = (_empty_names(blob, symbols)[syms]
                   & ((symbols.entries["info"][syms] & 0xF) != STT_SECTION) & (types != 0))
        if unnamed.any():     # RuntimeDyld resolves it by its (empty) name, to address 0
            raise _err(f"{r.label()}: a relocation refers to an unnamed symbol that is not a section")
        for t in np.unique(types).tolist():
            desc = RELOCATIONS.get((machine, t))
            if desc is None or desc[2] != 4:
                continue
            if desc[1] in ("abs", "abs_s"):
                raise _err(f"{r.label()}: {desc[0]} (32-bit absolute) relocations are not loaded "
                           "by MCJIT")
            sel = types == t
            k, addend = syms[sel], entries["addend"][sel]
            if desc[1] == "pc":
                # RuntimeDyld adds the 32 bits already at the place to a PC32 addend
                addend = addend + _placeholders(blob, target, entries["offset"][sel])
            sk = shndx[k]
            if ((sk == SHN_UNDEF) & (desc[1] == "pc")).any():
                raise _err(f"{r.label()}: {desc[0]} against an external or null symbol (MCJIT "
                           "makes no call stub for it)")
            in_section = (sk > SHN_UNDEF) & (sk < len(sections))
            lo = np.where(in_section, -symbols.value[k].astype(np.int64), 0) - _PC_SLACK
            hi = np.where(in_section, (sizes[np.minimum(sk, len(sections) - 1)] - symbols.value[k]).astype(
                np.int64), 0) + _PC_SLACK
            bad = np.flatnonzero((sk == SHN_ABS) | (sk >= SHN_LORESERVE) | (addend < lo) | (addend > hi))
            if len(bad):
                j = int(bad[0])
                raise _err(f"{r.label()}: {desc[0]} against symbol {int(k[j])} with addend "
                           f"{int(addend[j])} "
                           "cannot reach its target")
