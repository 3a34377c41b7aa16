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
import sys
import threading
import weakref
from typing import TYPE_CHECKING

from kiln._record import Record
from kiln.errors import ArtifactError

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
# External symbols
# --------------------------------------------------------------------------------------------

_LIBM_F64 = [
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "exp", "exp2", "expm1", "exp10", "log", "log2", "log10", "log1p", "logb", "ilogb", "pow",
    "sqrt", "cbrt", "hypot", "fmod", "remainder", "remquo", "fabs", "floor", "ceil", "trunc", "round",
    "roundeven", "rint", "nearbyint", "lround", "llround", "lrint", "llrint", "fmin", "fmax", "fdim",
    "fma", "copysign", "nextafter", "nexttoward", "erf", "erfc", "tgamma", "lgamma", "frexp", "ldexp",
    "scalbn", "scalbln", "modf", "nan", "significand", "sincos",
]
_LIBM_EXTRA = ["__sincos", "__sincosf", "__exp_finite", "__expf_finite", "__log_finite",
               "__logf_finite", "__pow_finite", "__powf_finite", "__sin_finite", "__cos_finite"]
_MEM = ["memset", "memcpy", "memmove", "memcmp", "bzero"]
_HALF = ["__extendhfsf2", "__truncsfhf2", "__truncdfhf2", "__extendhfdf2", "__gnu_h2f_ieee",
         "__gnu_f2h_ieee", "__truncsfbf2", "__truncdfbf2", "__extendbfsf2"]
_COMPILER_RT = ["__divti3", "__udivti3", "__modti3", "__umodti3", "__muloti4", "__popcountdi2",
                "__powisf2", "__powidf2", "__fixsfti", "__fixdfti", "__fixunssfti", "__fixunsdfti",
                "__floattisf", "__floattidf", "__floatuntisf", "__floatuntidf"]

#: every external (undefined) symbol an object may reference; anything else is refused
ALLOWED_EXTERNAL_SYMBOLS: frozenset[str] = frozenset(
    [n for n in _LIBM_F64] + [n + "f" for n in _LIBM_F64] + _LIBM_EXTRA + _MEM + _HALF + _COMPILER_RT
)

_LIB_NAMES = {
    "linux": ("libm.so.6", "libc.so.6", "libgcc_s.so.1"),
    "darwin": ("libm.dylib", "libc.dylib", "libgcc_s.1.dylib"),
}
_libs: list[ctypes.CDLL] | None = None
_resolved: dict[str, int] = {}
_lock = threading.Lock()


def _load_libs() -> list[ctypes.CDLL]:
    global _libs
    if _libs is None:
        libs: list[ctypes.CDLL] = []
        names = _LIB_NAMES.get(sys.platform, _LIB_NAMES["linux"])
        for name in names:
            try:
                libs.append(ctypes.CDLL(name))
            except OSError:
                from ctypes import util  # only on unusual systems: it imports subprocess

                found = util.find_library(name.split(".")[0].removeprefix("lib"))
                if found:
                    try:
                        libs.append(ctypes.CDLL(found))
                    except OSError:
                        pass
        _libs = libs
    return _libs


def resolve_external(name: str) -> int | None:
    """Address of an allowed external symbol in libm/libc/libgcc_s (cached), None if absent."""
    addr = _resolved.get(name)
    if addr is not None:
        return addr
    with _lock:
        for lib in _load_libs():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                continue
            addr = ctypes.cast(fn, ctypes.c_void_p).value
            if addr:
                _resolved[name] = addr
                return addr
    return None


# --------------------------------------------------------------------------------------------
# libc memory management
# --------------------------------------------------------------------------------------------

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
_libc: ctypes.CDLL | None = None


def _libc_funcs() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mprotect.restype = ctypes.c_int
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc = libc
    return _libc


def _map(size: int) -> int:
    libc = _libc_funcs()
    addr = libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise ArtifactError(f"ELF: cannot map {size} bytes for the object image (errno {err})")
    return addr


def _unmap(addr: int, size: int) -> None:
    _libc_funcs().munmap(addr, size)


def _protect(addr: int, size: int, prot: int) -> None:
    if size and _libc_funcs().mprotect(addr, size, prot) != 0:
        raise ArtifactError(f"ELF: mprotect({addr:#x}, {size:#x}, {prot}) failed "
                            f"(errno {ctypes.get_errno()})")


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


class ObjectInfo(Record):
    """The validated structure of an ELF relocatable object (see `inspect_elf_object`)."""

    __slots__ = ("machine", "sections", "symbols", "exports", "externals", "relocs", "loaded")
    machine: int
    sections: list[Section]
    symbols: list[Symbol]
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


def inspect_elf_object(blob: bytes, *, machines: frozenset[int] | None = None) -> ObjectInfo:
    """Parse and validate an ELF64 relocatable object without loading it.

    Checks the header, the section table, string tables, the symbol table (including the external
    symbol allow-list) and the relocation sections; raises ArtifactError naming the first bad field.
    `machines`: accepted e_machine values (default: those with a relocation table).
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

    symbols: list[Symbol] = []
    exports: dict[str, Symbol] = {}
    externals: list[str] = []
    if symtab is not None:
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
        off = symtab.offset
        loaded_set = set(loaded)
        str_lo, str_hi = strtab.offset, strtab.offset + strtab.size
        find = blob.find
        bad_types = (STT_TLS, STT_GNU_IFUNC, STT_COMMON)
        for k, (st_name, st_info, _other, shndx, value, size) in enumerate(
                _SYM.iter_unpack(blob[off:off + symtab.size])):
            bind, typ = st_info >> 4, st_info & 0xF
            name = ""
            if st_name:
                start = str_lo + st_name
                end = find(b"\0", start, str_hi) if start < str_hi else -1
                if end < 0:
                    name = _cstr(blob, strtab, st_name, f"symbol {k} st_name")   # raises
                name = blob[start:end].decode("utf-8", "replace")
            sym = Symbol(k, name, bind, typ, shndx, value, size)
            symbols.append(sym)
            if k == 0:
                continue
            if typ in bad_types or shndx >= SHN_LORESERVE:
                _check_special_symbol(sym, e_shnum)
                if shndx == SHN_ABS and bind != STB_LOCAL and name:
                    exports[name] = sym
                continue
            if shndx == SHN_UNDEF:
                if bind == STB_LOCAL:
                    continue
                if bind not in (STB_GLOBAL, STB_WEAK):
                    raise _err(f"{_symwhat(sym)} has unsupported binding {bind}")
                if name not in ALLOWED_EXTERNAL_SYMBOLS:
                    raise _err(f"external symbol {name!r} ({_symwhat(sym)}) is not in the allowed list "
                               "(ALLOWED_EXTERNAL_SYMBOLS: libm math, mem*, half-float helpers)")
                externals.append(name)
                continue
            if shndx >= e_shnum:
                raise _err(f"{_symwhat(sym)} st_shndx {shndx} out of range (e_shnum {e_shnum})")
            if shndx in loaded_set and value > sections[shndx].size:
                raise _err(f"{_symwhat(sym)} st_value {value:#x} beyond end of {sections[shndx].label()} "
                           f"({sections[shndx].size:#x} bytes)")
            if bind != STB_LOCAL and name and typ <= STT_FUNC:
                if bind not in (STB_GLOBAL, STB_WEAK):
                    raise _err(f"{_symwhat(sym)} has unsupported binding {bind}")
                exports[name] = sym

    relocs: list[tuple[Section, int]] = []
    loaded_set = set(loaded)
    for r in rela_secs:
        if r.info == 0 or r.info >= e_shnum:
            raise _err(f"{r.label()} sh_info {r.info} (target section) out of range (e_shnum {e_shnum})")
        if r.info not in loaded_set:
            continue        # relocations for debug info, .eh_frame...: not loaded, not applied
        if r.type == SHT_REL:
            raise _err(f"{r.label()} is SHT_REL; only SHT_RELA relocations are supported")
        if symtab is None or r.link != symtab.index:
            raise _err(f"{r.label()} sh_link {r.link} is not the symbol table")
        if r.entsize != _RELA.size:
            raise _err(f"{r.label()} sh_entsize {r.entsize}, expected {_RELA.size}")
        if r.size % _RELA.size:
            raise _err(f"{r.label()} sh_size {r.size:#x} is not a multiple of {_RELA.size}")
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
        self._finalizer = weakref.finalize(self, _unmap, base, size) if size else None

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
    nsyms = len(symbols)

    # ---- collect relocations and the GOT slots / call stubs they need -----------------------
    rel_entries: list[tuple[int, tuple[str, str, int], int, int, Section]] = []
    got_syms: dict[int, int] = {}       # symbol index -> slot number
    stub_syms: dict[int, int] = {}
    for r, target in info.relocs:
        tsec = sections[target]
        for j, (r_offset, r_info, addend) in enumerate(_RELA.iter_unpack(blob[r.offset:r.offset + r.size])):
            sym, typ = r_info >> 32, r_info & 0xFFFFFFFF
            desc = RELOCATIONS.get((machine, typ))
            if desc is None:
                raise _err(f"{r.label()} relocation {j}: unknown relocation type {typ} "
                           f"for {MACHINE_NAMES[machine]}")
            if sym >= nsyms:
                raise _err(f"{r.label()} relocation {j}: symbol index {sym} out of range "
                           f"({nsyms} symbols)")
            width = desc[2]
            if r_offset + width > tsec.size:
                raise _err(f"{r.label()} relocation {j}: r_offset {r_offset:#x} (+{width}) beyond "
                           f"end of target {tsec.label()} ({tsec.size:#x} bytes)")
            kind = desc[1]
            if kind == "got" and sym not in got_syms:
                got_syms[sym] = len(got_syms)
            elif kind == "plt" and symbols[sym].shndx == SHN_UNDEF and sym not in stub_syms:
                stub_syms[sym] = len(stub_syms)
                if sym not in got_syms:
                    got_syms[sym] = len(got_syms)
            rel_entries.append((r_offset, desc, sym, addend, tsec))

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

    # ---- resolve symbol addresses -----------------------------------------------------------
    base = _map(total)
    obj = LoadedObject(base, total, {}, "elf")     # owns the mapping from here on (finalizer)
    try:
        _populate(blob, base, total, info, offsets, rel_entries, got_syms, stub_syms,
                  stub_code, stub_disp_at, stub_base, got_base, obj)
        (t0, t1), (r0, r1), (d0, d1) = bounds
        obj.code_range = (base + t0, base + t1)
        obj.data_range = (base + d0, base + d1)
        _protect(base + t0, t1 - t0, PROT_READ | PROT_EXEC)
        _protect(base + r0, r1 - r0, PROT_READ)
    except BaseException:
        obj.close()
        raise
    return obj


def _populate(blob: bytes, base: int, total: int, info: ObjectInfo, offsets: dict[int, int],
              rel_entries: list, got_syms: dict[int, int], stub_syms: dict[int, int],
              stub_code: bytes, stub_disp_at: int, stub_base: int, got_base: int,
              obj: LoadedObject) -> None:
    sections = info.sections
    buf = (ctypes.c_char * total).from_address(base)
    src = ctypes.cast(ctypes.c_char_p(blob), ctypes.c_void_p).value or 0
    for idx, off in offsets.items():
        s = sections[idx]
        if s.type != SHT_NOBITS and s.size:
            ctypes.memmove(base + off, src + s.offset, s.size)

    def sym_addr(k: int) -> int:
        sym = info.symbols[k]
        if sym.shndx == SHN_UNDEF:
            if not sym.name:
                raise _err(f"relocation against undefined unnamed symbol {k}")
            addr = resolve_external(sym.name)
            if addr is None:
                if sym.bind == STB_WEAK:
                    return 0
                raise _err(f"external symbol {sym.name!r} not found in libm/libc/libgcc_s")
            return addr
        if sym.shndx == SHN_ABS:
            return sym.value
        off = offsets.get(sym.shndx)
        if off is None:
            raise _err(f"symbol {k} ({sym.name}) lives in {sections[sym.shndx].label()}, "
                       "which is not loaded")
        return base + off + sym.value

    addr_cache: dict[int, int] = {}
    for k in got_syms.keys() | stub_syms.keys():
        addr_cache[k] = sym_addr(k)
    for k, slot in got_syms.items():
        struct.pack_into("<Q", buf, got_base + 8 * slot, addr_cache[k] & 0xFFFFFFFFFFFFFFFF)
    for k, n in stub_syms.items():
        at = stub_base + n * len(stub_code)
        buf[at:at + len(stub_code)] = stub_code
        disp = (base + got_base + 8 * got_syms[k]) - (base + at + stub_disp_at + 4)
        struct.pack_into("<i", buf, at + stub_disp_at, disp)

    pack_into = struct.pack_into
    for r_offset, (rname, kind, width), k, addend, tsec in rel_entries:
        if kind == "none":
            continue
        at = offsets[tsec.index] + r_offset
        p = base + at
        s = addr_cache.get(k)
        if s is None:
            s = addr_cache[k] = sym_addr(k)
        if kind == "pc":
            v = s + addend - p
        elif kind == "plt":
            if k in stub_syms:
                s = base + stub_base + stub_syms[k] * len(stub_code)
            v = s + addend - p
        elif kind == "got":
            v = base + got_base + 8 * got_syms[k] + addend - p
        elif kind == "abs64":
            pack_into("<Q", buf, at, (s + addend) & 0xFFFFFFFFFFFFFFFF)
            continue
        elif kind == "abs":
            v = s + addend
            if not 0 <= v < (1 << 32):
                raise _err(f"{rname} at {tsec.label()}+{r_offset:#x}: value {v:#x} does not fit "
                           "in 32 bits unsigned (non-PIC code?)")
            pack_into("<I", buf, at, v)
            continue
        elif kind == "abs_s":
            v = s + addend
            if not -(1 << 31) <= v < (1 << 31):
                raise _err(f"{rname} at {tsec.label()}+{r_offset:#x}: value {v:#x} does not fit "
                           "in 32 bits signed (non-PIC code?)")
            pack_into("<i", buf, at, v)
            continue
        else:   # pragma: no cover - table and code out of sync
            raise _err(f"{rname}: unhandled relocation kind {kind}")
        if width == 8:
            pack_into("<q", buf, at, v)
        elif -(1 << 31) <= v < (1 << 31):
            pack_into("<i", buf, at, v)
        else:
            raise _err(f"{rname} at {tsec.label()}+{r_offset:#x}: displacement {v:#x} to symbol "
                       f"{k} ({info.symbols[k].name}) does not fit in 32 bits")

    obj.symbols = {name: sym_addr(sym.index) for name, sym in info.exports.items()
                   if sym.shndx == SHN_ABS or sym.shndx in offsets}
