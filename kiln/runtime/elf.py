"""kiln's own loader for ELF64 relocatable objects (ET_REL), in pure Python (ctypes + libc mmap).

The code generator emits one relocatable object per target; a .kiln file stores it as a blob. At
run time this module maps the blob's allocatable sections into one anonymous mapping, resolves
its few external symbols (libm/libc/libgcc_s functions from an explicit allow-list), applies the
relocations and write-protects the result (W^X): code ends up R-X, constants and the GOT R--,
writable data RW-. No LLVM is needed. See docs/object-code.md for the contract.

The blob is treated as hostile: every header field, index, offset and size is checked before it
is used, and any violation raises `ArtifactError` naming the offending field. Nothing is written
outside the mapping this module allocated, and all work is linear in the blob size.

Relocation handling is table-driven, keyed by (e_machine, relocation type), so a table for
another machine (aarch64) can be added next to `_X86_64_RELOCS` without touching the loader.
"""

from __future__ import annotations

import collections
import ctypes
import struct
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from kiln._record import Record
from kiln.errors import ArtifactError
from kiln.runtime.elf_host import (
    ALLOWED_EXTERNAL_SYMBOLS,
    PROT_EXEC,
    PROT_READ,
    map_anonymous,
    protect,
    resolve_external,
    unmap,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ALLOWED_EXTERNAL_SYMBOLS", "SUPPORTED_MACHINES", "LoadedObject", "ObjectInfo",
           "inspect_elf_object", "load_elf_object"]

# --------------------------------------------------------------------------------------------
# ELF constants
# --------------------------------------------------------------------------------------------

ELFMAG = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_REL = 1
EM_X86_64 = 62
EM_AARCH64 = 183
MACHINE_NAMES = {EM_X86_64: "x86-64", EM_AARCH64: "aarch64"}

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_HASH, SHT_DYNAMIC, SHT_NOTE, SHT_NOBITS, SHT_REL = 5, 6, 7, 8, 9
SHT_SHLIB, SHT_DYNSYM = 10, 11
SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY, SHT_GROUP, SHT_SYMTAB_SHNDX = 14, 15, 16, 17, 18
SHT_X86_64_UNWIND = 0x70000001
SHT_LLVM_ADDRSIG = 0x6FFF4C03

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHF_GROUP, SHF_TLS = 0x200, 0x400

SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON, SHN_XINDEX = 0, 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF

STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STT_COMMON, STT_TLS, STT_GNU_IFUNC = 5, 6, 10

PAGE = 4096
MAX_ALIGN = PAGE
#: refuse objects whose loaded image would exceed this (keeps every PC32 displacement in range)
MAX_IMAGE_SIZE = 1 << 30

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")     # 64 bytes
_SHDR = struct.Struct("<IIQQQQIIQQ")           # 64 bytes
_SYM = struct.Struct("<IBBHQQ")                # 24 bytes
_RELA = struct.Struct("<QQq")                  # 24 bytes

_SECTION_TYPE_NAMES = {
    SHT_HASH: "SHT_HASH", SHT_DYNAMIC: "SHT_DYNAMIC", SHT_SHLIB: "SHT_SHLIB", SHT_DYNSYM: "SHT_DYNSYM",
    SHT_INIT_ARRAY: "SHT_INIT_ARRAY (static constructors)",
    SHT_FINI_ARRAY: "SHT_FINI_ARRAY (static destructors)",
    SHT_PREINIT_ARRAY: "SHT_PREINIT_ARRAY (static constructors)",
    SHT_GROUP: "SHT_GROUP (COMDAT groups)", SHT_SYMTAB_SHNDX: "SHT_SYMTAB_SHNDX (extended section indices)",
}
_CTOR_PREFIXES = (".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors", ".init", ".fini")
_TLS_PREFIXES = (".tdata", ".tbss")

# --------------------------------------------------------------------------------------------
# Relocation tables: (machine, type) -> (name, kind, width in bytes)
# --------------------------------------------------------------------------------------------
# kinds: "none"; "abs" (S+A, unsigned check); "abs_s" (S+A, signed check); "abs64" (S+A, wraps);
# "pc" (S+A-P); "plt" (S+A-P, through a call stub if S is external); "got" (G+GOT+A-P).

_X86_64_RELOCS: dict[int, tuple[str, str, int]] = {
    0: ("R_X86_64_NONE", "none", 0),
    1: ("R_X86_64_64", "abs64", 8),
    2: ("R_X86_64_PC32", "pc", 4),
    4: ("R_X86_64_PLT32", "plt", 4),
    9: ("R_X86_64_GOTPCREL", "got", 4),
    10: ("R_X86_64_32", "abs", 4),
    11: ("R_X86_64_32S", "abs_s", 4),
    24: ("R_X86_64_PC64", "pc", 8),
    41: ("R_X86_64_GOTPCRELX", "got", 4),
    42: ("R_X86_64_REX_GOTPCRELX", "got", 4),
}

#: (machine, relocation type) -> (name, kind, width). Add aarch64 entries here (see docs).
RELOCATIONS: dict[tuple[int, int], tuple[str, str, int]] = {
    (EM_X86_64, t): v for t, v in _X86_64_RELOCS.items()
}

#: machines load_elf_object can relocate for, with their call stub (an indirect jump through a
#: GOT slot; the displacement is patched in) and its size
_STUBS: dict[int, tuple[bytes, int]] = {
    EM_X86_64: (b"\xff\x25\x00\x00\x00\x00\xcc\xcc", 2),   # jmp *[rip+disp32]; int3 padding
}
SUPPORTED_MACHINES = frozenset(_STUBS)

# --------------------------------------------------------------------------------------------
# Parsing and validation (no memory is mapped here)
# --------------------------------------------------------------------------------------------


# collections.namedtuple, not typing.NamedTuple: with postponed annotations the latter compiles
# every field's annotation at import, which costs a millisecond of every process's start-up.
_SectionFields = collections.namedtuple(
    "_SectionFields", "index name type flags offset size link info align entsize")


class Section(_SectionFields):
    """One section header: index, name, type, flags, offset, size, link, info, align, entsize."""

    __slots__ = ()

    def label(self) -> str:
        return f"section {self.index} ({self.name})" if self.name else f"section {self.index}"


#: one symbol table entry: index, name, bind, type, shndx, value, size
Symbol = collections.namedtuple("Symbol", "index name bind type shndx value size")

_SYM_DTYPE = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                       ("value", "<u8"), ("size", "<u8")])


class SymbolTable:
    """The symbol table as a zero-copy numpy array; `Symbol` tuples are made on demand (objects
    of big programs hold hundreds of thousands of local symbols: constant-pool labels)."""

    def __init__(self, blob: bytes, entries: np.ndarray, strtab: Section | None) -> None:
        self.blob, self.entries, self.strtab = blob, entries, strtab
        self.shndx = entries["shndx"].astype(np.int64)
        self.value = entries["value"]

    def __len__(self) -> int:
        return len(self.entries)

    def name(self, k: int) -> str:
        off = int(self.entries["name"][k])
        if not off or self.strtab is None:
            return ""
        return _cstr(self.blob, self.strtab, off, f"symbol {k} st_name")

    def __getitem__(self, k: int) -> Symbol:
        if not 0 <= k < len(self.entries):
            raise IndexError(k)
        e = self.entries[k]
        info = int(e["info"])
        return Symbol(k, self.name(k), info >> 4, info & 0xF, int(e["shndx"]), int(e["value"]),
                      int(e["size"]))

    def __iter__(self) -> Iterator[Symbol]:
        return (self[k] for k in range(len(self.entries)))


class ObjectInfo(Record):
    """The validated structure of an ELF relocatable object (see `inspect_elf_object`)."""

    __slots__ = ("machine", "sections", "symbols", "exports", "externals", "relocs", "loaded")
    machine: int
    sections: list[Section]
    symbols: SymbolTable
    #: name -> Symbol for the defined global/weak symbols
    exports: dict[str, Symbol]
    #: names of the undefined global/weak symbols (all in ALLOWED_EXTERNAL_SYMBOLS)
    externals: list[str]
    #: relocation sections that apply to loaded sections: (rela section, target section index)
    relocs: list[tuple[Section, int]]
    #: indices of the sections that are loaded into memory
    loaded: list[int]


def _err(msg: str) -> ArtifactError:
    return ArtifactError("ELF: " + msg)


def _cstr(blob: bytes, strtab: Section, off: int, what: str) -> str:
    if off >= strtab.size:
        raise _err(f"{what} name offset {off:#x} beyond end of string table {strtab.label()} "
                   f"({strtab.size:#x} bytes)")
    start = strtab.offset + off
    end = blob.find(b"\0", start, strtab.offset + strtab.size)
    if end < 0:
        raise _err(f"{what} name at offset {off:#x} in string table {strtab.label()} "
                   "is not NUL-terminated")
    try:
        return blob[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _err(f"{what} name at offset {off:#x} in {strtab.label()} is not valid UTF-8") from None


def _symwhat(sym: Symbol) -> str:
    return f"symbol {sym.index} ({sym.name})" if sym.name else f"symbol {sym.index}"


def _check_special_symbol(sym: Symbol, e_shnum: int) -> None:
    """Refuse TLS, ifunc, COMMON and reserved section indices (SHN_ABS passes)."""
    what, typ, shndx = _symwhat(sym), sym.type, sym.shndx
    if typ == STT_TLS:
        raise _err(f"{what} is thread-local (STT_TLS), which kiln objects must not use")
    if typ == STT_GNU_IFUNC:
        raise _err(f"{what} is an indirect function (STT_GNU_IFUNC), which is unsupported")
    if shndx == SHN_COMMON or typ == STT_COMMON:
        raise _err(f"{what} is a COMMON symbol, which is unsupported")
    if shndx == SHN_XINDEX:
        raise _err(f"{what} st_shndx uses SHN_XINDEX, which is unsupported")
    if shndx != SHN_ABS and shndx >= SHN_LORESERVE:
        raise _err(f"{what} st_shndx {shndx:#x} is a reserved index, unsupported")
    if shndx != SHN_ABS and shndx >= e_shnum:   # pragma: no cover - reserved range above
        raise _err(f"{what} st_shndx {shndx} out of range (e_shnum {e_shnum})")


_RELA_DTYPE = np.dtype([("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")])


def _relocation_entries(blob: bytes, r: Section) -> np.ndarray:
    """The entries of a (bounds-checked) SHT_RELA section as a zero-copy structured array."""
    return np.frombuffer(blob, _RELA_DTYPE, r.size // _RELA.size, r.offset)


def _distinct(values: np.ndarray) -> list[int]:
    """The distinct values, ascending: `np.unique(values).tolist()` without numpy 2.x's first-use
    import of numpy.ma (~10 ms of every process's first load or compile)."""
    ordered = np.sort(values)
    keep = np.empty(len(ordered), bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep].tolist()


def _check_relocations(blob: bytes, r: Section, target: Section, machine: int, nsyms: int) -> None:
    """Every entry: a relocation type known for `machine` (when it has a table), a symbol index in
    range, and the patched bytes inside the target section. Vectorised: objects of big programs
    hold hundreds of thousands of relocations."""
    entries = _relocation_entries(blob, r)
    if not len(entries):
        return
    info = entries["info"]
    syms = info >> np.uint64(32)
    bad = np.flatnonzero(syms >= nsyms)
    if len(bad):
        j = int(bad[0])
        raise _err(f"{r.label()} relocation {j}: symbol index {int(syms[j])} out of range ({nsyms} symbols)")
    types = info & np.uint64(0xFFFFFFFF)
    has_table = any(m == machine for m, _t in RELOCATIONS)
    widths = np.ones(len(entries), np.uint64)   # without a table: the first byte must be inside
    for t in _distinct(types):
        desc = RELOCATIONS.get((machine, t))
        if desc is None:
            if not has_table:
                continue
            j = int(np.flatnonzero(types == t)[0])
            raise _err(f"{r.label()} relocation {j}: unknown relocation type {t} "
                       f"for {MACHINE_NAMES.get(machine, machine)}")
        widths[types == t] = desc[2]
    offsets = entries["offset"]
    # offset <= size - width, written so that no uint64 sum can wrap around
    bad = np.flatnonzero((widths > target.size) | (offsets > np.uint64(target.size) - widths))
    if len(bad):
        j = int(bad[0])
        raise _err(f"{r.label()} relocation {j}: r_offset {int(offsets[j]):#x} (+{int(widths[j])}) beyond "
                   f"end of target {target.label()} ({target.size:#x} bytes)")


def _read_symbols(blob: bytes, symtab: Section, sections: list[Section], loaded: set[int],
                  e_shnum: int) -> tuple[SymbolTable, dict[str, Symbol], list[str]]:
    """Validate the symbol table: (table, exports, externals). The plain local symbols (most of
    them) are checked with numpy; every other symbol is checked one by one."""
    if symtab.entsize != _SYM.size:
        raise _err(f"{symtab.label()} sh_entsize {symtab.entsize}, expected {_SYM.size}")
    if symtab.size % _SYM.size:
        raise _err(f"{symtab.label()} sh_size {symtab.size:#x} is not a multiple of {_SYM.size}")
    strtab = sections[symtab.link]
    if strtab.type != SHT_STRTAB:
        raise _err(f"{symtab.label()} sh_link {symtab.link} is not a string table")
    nsyms = symtab.size // _SYM.size
    if symtab.info > nsyms:
        raise _err(f"{symtab.label()} sh_info {symtab.info} beyond its {nsyms} symbols")
    table = SymbolTable(blob, np.frombuffer(blob, _SYM_DTYPE, nsyms, symtab.offset), strtab)
    entries = table.entries
    # every name offset inside the string table, which ends with a NUL: every name terminates
    if strtab.size and blob[strtab.offset + strtab.size - 1] != 0:
        raise _err(f"string table {strtab.label()} does not end with a NUL byte")
    bad = np.flatnonzero(entries["name"] >= max(strtab.size, 1))
    if len(bad):
        k = int(bad[0])
        raise _err(f"symbol {k} st_name name offset {int(entries['name'][k]):#x} beyond end of string "
                   f"table {strtab.label()} ({strtab.size:#x} bytes)")
    if nsyms and entries[:1].tobytes() != bytes(_SYM.size):
        # The null symbol is what relocations without a symbol use: a name or a binding here
        # would make them resolve an arbitrary external (past the allow-list).
        raise _err("symbol 0 (the null symbol) is not all zero")
    bind = entries["info"] >> 4
    typ = entries["info"] & 0xF
    shndx = table.shndx
    plain = (bind == STB_LOCAL) & (typ <= STT_FILE) & (shndx > SHN_UNDEF) & (shndx < e_shnum)
    plain[:1] = False
    # plain symbols in loaded sections: st_value at most the section's size
    sizes = np.full(e_shnum, np.iinfo(np.uint64).max, np.uint64)
    for i in loaded:
        sizes[i] = sections[i].size
    where = np.flatnonzero(plain)
    bad = where[table.value[where] > sizes[shndx[where]]]
    if len(bad):
        sym = table[int(bad[0])]
        raise _err(f"{_symwhat(sym)} st_value {sym.value:#x} beyond end of {sections[sym.shndx].label()} "
                   f"({sections[sym.shndx].size:#x} bytes)")
    exports: dict[str, Symbol] = {}
    externals: list[str] = []
    for k in np.flatnonzero(~plain)[1:].tolist() if nsyms else []:
        sym = table[k]
        _check_symbol(sym, sections, loaded, e_shnum, exports, externals)
    return table, exports, externals


def _check_symbol(sym: Symbol, sections: list[Section], loaded: set[int], e_shnum: int,
                  exports: dict[str, Symbol], externals: list[str]) -> None:
    """One symbol that is not a plain local one; adds it to `exports` or `externals`."""
    bind, typ, shndx, name = sym.bind, sym.type, sym.shndx, sym.name
    if bind not in (STB_LOCAL, STB_GLOBAL, STB_WEAK):
        raise _err(f"{_symwhat(sym)} has unsupported binding {bind}")
    if typ > STT_FILE and typ not in (STT_TLS, STT_GNU_IFUNC, STT_COMMON):
        raise _err(f"{_symwhat(sym)} has unsupported type {typ}")
    if typ in (STT_TLS, STT_GNU_IFUNC, STT_COMMON) or shndx >= SHN_LORESERVE:
        _check_special_symbol(sym, e_shnum)
        if shndx == SHN_ABS and bind != STB_LOCAL and name:
            exports[name] = sym
        return
    if shndx == SHN_UNDEF:
        # An undefined LOCAL symbol has no meaning in a relocatable object, and resolving it by
        # name would bypass the allow-list below: refuse it outright.
        if bind == STB_LOCAL:
            raise _err(f"{_symwhat(sym)} is undefined but LOCAL (an external reference must "
                       "be GLOBAL or WEAK)")
        if name not in ALLOWED_EXTERNAL_SYMBOLS:
            raise _err(f"external symbol {name!r} ({_symwhat(sym)}) is not in the allowed list "
                       "(ALLOWED_EXTERNAL_SYMBOLS: libm math, mem*, half-float helpers)")
        externals.append(name)
        return
    if shndx >= e_shnum:
        raise _err(f"{_symwhat(sym)} st_shndx {shndx} out of range (e_shnum {e_shnum})")
    if shndx in loaded and sym.value > sections[shndx].size:
        raise _err(f"{_symwhat(sym)} st_value {sym.value:#x} beyond end of {sections[shndx].label()} "
                   f"({sections[shndx].size:#x} bytes)")
    if bind != STB_LOCAL and name and typ <= STT_FUNC:
        exports[name] = sym


def inspect_elf_object(blob: bytes, *, machines: frozenset[int] | None = None,
                       strict: bool = False) -> ObjectInfo:
    """Parse and validate an ELF64 relocatable object without loading it.

    Checks the header, the section table, string tables, the symbol table (including the external
    symbol allow-list) and the relocation sections; raises ArtifactError naming the first bad field.
    `machines`: accepted e_machine values (default: those with a relocation table).
    `strict` (the MCJIT fallback, which relocates every section it sees, .eh_frame included):
    also check the relocation sections of sections this loader does not load.
    """
    if not isinstance(blob, bytes):
        blob = bytes(blob)
    n = len(blob)
    if n < _EHDR.size:
        raise _err(f"object is {n} bytes, shorter than the 64-byte ELF header")
    (ident, e_type, e_machine, e_version, _entry, _phoff, e_shoff, _flags, e_ehsize, _phentsize,
     _phnum, e_shentsize, e_shnum, e_shstrndx) = _EHDR.unpack_from(blob, 0)
    if ident[:4] != ELFMAG:
        raise _err(f"bad magic {ident[:4]!r} (e_ident[EI_MAG0..3]), not an ELF object")
    if ident[4] != ELFCLASS64:
        raise _err(f"e_ident[EI_CLASS] is {ident[4]}, expected 2 (ELFCLASS64)")
    if ident[5] != ELFDATA2LSB:
        raise _err(f"e_ident[EI_DATA] is {ident[5]}, expected 1 (little-endian)")
    if ident[6] != EV_CURRENT:
        raise _err(f"e_ident[EI_VERSION] is {ident[6]}, expected 1")
    if e_version != EV_CURRENT:
        raise _err(f"e_version is {e_version}, expected 1")
    if e_type != ET_REL:
        raise _err(f"e_type is {e_type}, expected 1 (ET_REL, a relocatable object)")
    accepted = SUPPORTED_MACHINES if machines is None else machines
    if e_machine not in accepted:
        name = MACHINE_NAMES.get(e_machine, "unknown")
        raise _err(f"e_machine is {e_machine} ({name}); this loader relocates only "
                   + ", ".join(f"{m} ({MACHINE_NAMES[m]})" for m in sorted(accepted)))
    if e_ehsize != _EHDR.size:
        raise _err(f"e_ehsize is {e_ehsize}, expected 64")
    if e_shentsize != _SHDR.size:
        raise _err(f"e_shentsize is {e_shentsize}, expected 64")
    if e_shnum == 0:
        raise _err("e_shnum is 0 (no section table, or an extended count, which is unsupported)")
    if e_shoff < _EHDR.size or e_shoff + e_shnum * _SHDR.size > n:
        raise _err(f"section header table (e_shoff {e_shoff:#x}, e_shnum {e_shnum}) "
                   f"beyond end of object ({n:#x} bytes)")
    if e_shstrndx == SHN_UNDEF or e_shstrndx >= e_shnum:
        raise _err(f"e_shstrndx {e_shstrndx} out of range (e_shnum {e_shnum})")

    raw = [_SHDR.unpack_from(blob, e_shoff + i * _SHDR.size) for i in range(e_shnum)]
    if raw[0][1] != SHT_NULL:
        raise _err("section 0 is not SHT_NULL")
    # offsets/sizes first (names need the string table in bounds)
    for i, (_nm, typ, _fl, _addr, off, size, link, _info, align, _es) in enumerate(raw):
        if i == 0:
            continue
        if typ != SHT_NOBITS and off + size > n:
            raise _err(f"section {i} offset+size {off + size:#x} beyond end of object ({n:#x} bytes)")
        if link >= e_shnum:
            raise _err(f"section {i} sh_link {link} out of range (e_shnum {e_shnum})")
        if align & (align - 1):
            raise _err(f"section {i} sh_addralign {align} is not a power of two")
    shstr_raw = raw[e_shstrndx]
    if shstr_raw[1] != SHT_STRTAB:
        raise _err(f"e_shstrndx {e_shstrndx} is not a string table (sh_type {shstr_raw[1]})")
    shstr = Section(e_shstrndx, "", shstr_raw[1], shstr_raw[2], *shstr_raw[4:])
    sections = [Section(0, "", raw[0][1], raw[0][2], *raw[0][4:])]
    for i in range(1, e_shnum):
        r = raw[i]
        sections.append(Section(i, _cstr(blob, shstr, r[0], f"section {i} sh_name"), r[1], r[2], *r[4:]))

    symtab: Section | None = None
    loaded: list[int] = []
    rela_secs: list[Section] = []
    for s in sections[1:]:
        if s.flags & SHF_TLS or s.name.startswith(_TLS_PREFIXES):
            raise _err(f"{s.label()} holds thread-local storage (TLS), which kiln objects must not use")
        if s.type in _SECTION_TYPE_NAMES:
            raise _err(f"{s.label()} has sh_type {_SECTION_TYPE_NAMES[s.type]}, which is unsupported")
        if s.name.startswith(_CTOR_PREFIXES) and s.flags & SHF_ALLOC:
            raise _err(f"{s.label()}: static constructors/destructors are not supported")
        if s.flags & SHF_GROUP:
            raise _err(f"{s.label()} is in a section group (COMDAT), which is unsupported")
        if s.type == SHT_SYMTAB:
            if symtab is not None:
                raise _err(f"{s.label()} is a second symbol table")
            symtab = s
        elif s.type in (SHT_RELA, SHT_REL):
            rela_secs.append(s)
        elif s.flags & SHF_ALLOC:
            if s.type in (SHT_PROGBITS, SHT_NOBITS):
                if s.name.startswith(".eh_frame"):
                    continue      # unwind tables are not registered: skip them
                if s.align > MAX_ALIGN:
                    raise _err(f"{s.label()} sh_addralign {s.align} exceeds the page size {MAX_ALIGN}")
                loaded.append(s.index)
            elif s.type in (SHT_X86_64_UNWIND, SHT_NOTE, SHT_LLVM_ADDRSIG):
                continue
            else:
                raise _err(f"{s.label()} is allocatable with unsupported sh_type {s.type:#x}")

    symbols = SymbolTable(blob, np.zeros(0, _SYM_DTYPE), None)
    exports: dict[str, Symbol] = {}
    externals: list[str] = []
    if symtab is not None:
        symbols, exports, externals = _read_symbols(blob, symtab, sections, set(loaded), e_shnum)

    relocs: list[tuple[Section, int]] = []
    loaded_set = set(loaded)
    for r in rela_secs:
        if r.info == 0 or r.info >= e_shnum:
            raise _err(f"{r.label()} sh_info {r.info} (target section) out of range (e_shnum {e_shnum})")
        applied = r.info in loaded_set
        if not (applied or strict):
            continue        # relocations for debug info, .eh_frame...: not loaded, not applied
        if r.type == SHT_REL:
            raise _err(f"{r.label()} is SHT_REL; only SHT_RELA relocations are supported")
        if symtab is None or r.link != symtab.index:
            raise _err(f"{r.label()} sh_link {r.link} is not the symbol table")
        if r.entsize != _RELA.size:
            raise _err(f"{r.label()} sh_entsize {r.entsize}, expected {_RELA.size}")
        if r.size % _RELA.size:
            raise _err(f"{r.label()} sh_size {r.size:#x} is not a multiple of {_RELA.size}")
        _check_relocations(blob, r, sections[r.info], e_machine, len(symbols))
        if applied:
            relocs.append((r, r.info))
    return ObjectInfo(e_machine, sections, symbols, exports, externals, relocs, loaded)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _align(x: int, a: int) -> int:
    return (x + a - 1) & -a


class LoadedObject:
    """An object loaded into memory. Keeps its mapping alive until `close()` or garbage collection.

    `symbols`: exported (global/weak, defined) symbol name -> absolute address.
    """

    def __init__(self, base: int, size: int, symbols: dict[str, int], loader: str = "elf") -> None:
        self.base = base
        self.size = size
        self.symbols = symbols
        self.loader = loader
        #: absolute [start, end) of the executable and of the writable parts of the image
        self.code_range = (base, base)
        self.data_range = (base, base)
        self._finalizer = weakref.finalize(self, unmap, base, size) if size else None

    def address(self, symbol: str) -> int:
        try:
            return self.symbols[symbol]
        except KeyError:
            raise ArtifactError(f"symbol {symbol!r} is not defined by the loaded object") from None

    def code_address(self, symbol: str) -> int:
        """Address of a function symbol, checked to lie in the executable part of the image
        (a damaged symbol table must not turn into a jump into data)."""
        addr = self.address(symbol)
        if not self.code_range[0] <= addr < self.code_range[1]:
            raise ArtifactError(f"ELF: symbol {symbol!r} is not in the object's code")
        return addr

    def data_address(self, symbol: str, size: int) -> int:
        """Address of a writable global of `size` bytes, checked to lie in the writable part of
        the image (the runtime writes the kiln_rt_* globals through it)."""
        addr = self.address(symbol)
        if not (self.data_range[0] <= addr and addr + size <= self.data_range[1]):
            raise ArtifactError(f"ELF: symbol {symbol!r} is not a writable {size}-byte global")
        return addr

    def close(self) -> None:
        """Unmap the object. Any function pointer into it becomes invalid."""
        if self._finalizer is not None:
            self._finalizer()
        self.symbols = {}

    @property
    def closed(self) -> bool:
        return self._finalizer is None or not self._finalizer.alive

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LoadedObject {self.loader} at {self.base:#x}, {self.size} bytes, {len(self.symbols)} symbols>"


def load_elf_object(blob: bytes) -> LoadedObject:
    """Validate, map, relocate and protect an ELF64 relocatable object; see the module doc."""
    if not isinstance(blob, bytes):
        blob = bytes(blob)
    info = inspect_elf_object(blob)
    machine = info.machine
    sections = info.sections
    symbols = info.symbols

    # ---- collect relocations and the GOT slots / call stubs they need -----------------------
    # (vectorised: the per-entry work is numpy's; Python touches each distinct symbol once)
    tables: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Section]] = []
    got_syms: dict[int, int] = {}       # symbol index -> slot number
    stub_syms: dict[int, int] = {}
    for r, target in info.relocs:
        entries = _relocation_entries(blob, r)
        syms = (entries["info"] >> np.uint64(32)).astype(np.int64)
        types = (entries["info"] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        kinds = {t: RELOCATIONS[(machine, t)][1] for t in _distinct(types)}
        for t, kind in kinds.items():
            if kind not in ("got", "plt"):
                continue
            for k in _distinct(syms[types == t]):
                if kind == "got" and k not in got_syms:
                    got_syms[k] = len(got_syms)
                elif kind == "plt" and symbols[k].shndx == SHN_UNDEF and k not in stub_syms:
                    stub_syms[k] = len(stub_syms)
                    if k not in got_syms:
                        got_syms[k] = len(got_syms)
        tables.append((entries["offset"].astype(np.int64), syms, types, entries["addend"],
                       sections[target]))

    # ---- layout: [text | stubs] [rodata | GOT] [data | bss], each group page-aligned ----------
    stub_code, stub_disp_at = _STUBS[machine]
    offsets: dict[int, int] = {}
    groups: list[list[Section]] = [[], [], []]
    for idx in info.loaded:
        s = sections[idx]
        g = 0 if s.flags & SHF_EXECINSTR else (2 if s.flags & SHF_WRITE else 1)
        groups[g].append(s)
    pos = 0
    bounds: list[tuple[int, int]] = []
    stub_base = got_base = 0
    for g, secs in enumerate(groups):
        start = pos
        for s in secs:
            pos = _align(pos, max(s.align, 1))
            offsets[s.index] = pos
            pos += s.size
            if pos > MAX_IMAGE_SIZE:
                raise _err(f"{s.label()} sh_size {s.size:#x}: image exceeds {MAX_IMAGE_SIZE:#x} bytes")
        if g == 0 and stub_syms:
            pos = _align(pos, 16)
            stub_base = pos
            pos += len(stub_code) * len(stub_syms)
        if g == 1 and got_syms:
            pos = _align(pos, 8)
            got_base = pos
            pos += 8 * len(got_syms)
        pos = _align(pos, PAGE)
        bounds.append((start, pos))
    total = pos
    if total == 0:
        return LoadedObject(0, 0, {}, "elf")

    # ---- map, copy, relocate, protect -------------------------------------------------------
    base = map_anonymous(total)
    obj = LoadedObject(base, total, {}, "elf")     # owns the mapping from here on (finalizer)
    try:
        image = _Image(blob, base, total, info, offsets, got_syms, stub_syms, stub_code,
                       stub_disp_at, stub_base, got_base)
        image.fill()
        for table in tables:
            image.relocate(*table)
        obj.symbols = {name: image.symbol_address(sym.index) for name, sym in info.exports.items()
                       if sym.shndx == SHN_ABS or sym.shndx in offsets}
        (t0, t1), (r0, r1), (d0, d1) = bounds
        obj.code_range = (base + t0, base + t1)
        obj.data_range = (base + d0, base + d1)
        protect(base + t0, t1 - t0, PROT_READ | PROT_EXEC)
        protect(base + r0, r1 - r0, PROT_READ)
    except BaseException:
        obj.close()
        raise
    return obj


_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_U64 = (1 << 64) - 1


class _Image:
    """The mapped image being built: section contents, GOT, call stubs and relocations."""

    def __init__(self, blob: bytes, base: int, total: int, info: ObjectInfo, offsets: dict[int, int],
                 got_syms: dict[int, int], stub_syms: dict[int, int], stub_code: bytes,
                 stub_disp_at: int, stub_base: int, got_base: int) -> None:
        self.blob, self.base, self.info, self.offsets = blob, base, info, offsets
        self.got_syms, self.stub_syms = got_syms, stub_syms
        self.stub_code, self.stub_disp_at = stub_code, stub_disp_at
        self.stub_base, self.got_base = stub_base, got_base
        self.bytes = np.ctypeslib.as_array((ctypes.c_uint8 * total).from_address(base))
        self.addresses: dict[int, int] = {}
        #: image offset of each section, -1 where not loaded
        self.section_base = np.full(len(info.sections), -1, np.int64)
        for idx, off in offsets.items():
            self.section_base[idx] = off

    def symbol_address(self, k: int) -> int:
        addr = self.addresses.get(k)
        if addr is None:
            addr = self.addresses[k] = self._resolve(k)
        return addr

    def _resolve(self, k: int) -> int:
        sym = self.info.symbols[k]
        if sym.shndx == SHN_UNDEF:
            if not sym.name or sym.bind == STB_LOCAL:   # refused by the inspector already
                raise _err(f"relocation against undefined symbol {k} ({sym.name!r})")
            addr = resolve_external(sym.name)
            if addr is None:
                if sym.bind == STB_WEAK:
                    return 0
                raise _err(f"external symbol {sym.name!r} not found in libm/libc/libgcc_s")
            return addr
        if sym.shndx == SHN_ABS:
            return sym.value
        off = self.offsets.get(sym.shndx)
        if off is None:
            raise _err(f"symbol {k} ({sym.name}) lives in {self.info.sections[sym.shndx].label()}, "
                       "which is not loaded")
        return self.base + off + sym.value

    def fill(self) -> None:
        """Copy the sections' bytes in, then write the GOT slots and the call stubs."""
        src = ctypes.cast(ctypes.c_char_p(self.blob), ctypes.c_void_p).value or 0
        for idx, off in self.offsets.items():
            s = self.info.sections[idx]
            if s.type != SHT_NOBITS and s.size:
                ctypes.memmove(self.base + off, src + s.offset, s.size)
        out = self.bytes
        for k, slot in self.got_syms.items():
            at = self.got_base + 8 * slot
            out[at:at + 8] = np.frombuffer(struct.pack("<Q", self.symbol_address(k) & _U64), np.uint8)
        n = len(self.stub_code)
        for k, i in self.stub_syms.items():
            at = self.stub_base + i * n
            disp = (self.got_base + 8 * self.got_syms[k]) - (at + self.stub_disp_at + 4)
            code = bytearray(self.stub_code)
            struct.pack_into("<i", code, self.stub_disp_at, disp)
            out[at:at + n] = np.frombuffer(bytes(code), np.uint8)

    def _targets(self, syms: np.ndarray, kind: str) -> np.ndarray:
        """S per entry as int64 (two's complement): the symbol's address, a call stub for external
        plt targets, the GOT slot for got kinds. Symbols in loaded sections are computed with
        numpy; the few others (externals, absolute symbols, stubs, GOT slots) one by one."""
        table = self.info.symbols
        shndx = table.shndx[syms]
        section_base = self.section_base[np.minimum(shndx, len(self.section_base) - 1)]
        in_image = (shndx > SHN_UNDEF) & (shndx < SHN_LORESERVE) & (section_base >= 0)
        if kind == "got":
            in_image[:] = False
        elif kind == "plt" and self.stub_syms:
            in_image &= ~np.isin(syms, np.fromiter(self.stub_syms, np.int64))
        values = np.zeros(len(syms), np.int64)
        values[in_image] = (self.base + section_base[in_image]
                            + table.value[syms[in_image]].astype(np.int64))
        others = ~in_image
        if others.any():
            uniq, inverse = np.unique(syms[others], return_inverse=True)
            special = []
            for k in uniq.tolist():
                if kind == "got":
                    v = self.base + self.got_base + 8 * self.got_syms[k]
                elif kind == "plt" and k in self.stub_syms:
                    v = self.base + self.stub_base + self.stub_syms[k] * len(self.stub_code)
                else:
                    v = self.symbol_address(k)
                special.append(v - (1 << 64) if v >= 1 << 63 else v)
            values[others] = np.asarray(special, np.int64)[inverse.reshape(-1)]
        return values

    def relocate(self, offsets: np.ndarray, syms: np.ndarray, types: np.ndarray, addends: np.ndarray,
                 tsec: Section) -> None:
        machine = self.info.machine
        at0 = self.offsets[tsec.index]
        for t in _distinct(types):
            rname, kind, width = RELOCATIONS[(machine, t)]
            if kind == "none":
                continue
            sel = types == t
            at = offsets[sel] + at0
            with np.errstate(over="ignore"):      # int64 arithmetic wraps like the machine's
                v = self._targets(syms[sel], kind) + addends[sel]
                if kind in ("pc", "plt", "got"):
                    v = v - (at + self.base)
            if kind == "abs":
                bad = (v < 0) | (v > 0xFFFFFFFF)
                what = "does not fit in 32 bits unsigned (non-PIC code?)"
            elif width == 4:
                bad = (v < _INT32_MIN) | (v > _INT32_MAX)
                what = ("does not fit in 32 bits signed (non-PIC code?)" if kind == "abs_s"
                        else "displacement does not fit in 32 bits")
            else:
                bad = None
            if bad is not None and bad.any():
                j = int(np.flatnonzero(bad)[0])
                k = int(syms[sel][j])
                raise _err(f"{rname} at {tsec.label()}+{int(offsets[sel][j]):#x}: value {int(v[j]):#x} "
                           f"to symbol {k} ({self.info.symbols[k].name}) {what}")
            raw = v.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :width]
            self.bytes[at[:, None] + np.arange(width)] = raw
