"""Compile targets and the object code contract between kiln.codegen and the runtime's loader.

OBJECT_CONTRACT (what every object blob produced by `kiln.codegen.build_object` looks like):

- Format: ELF64 little-endian relocatable object (ET_REL), machine x86-64.
- Relocation model "pic", code model "small": the code is position independent and every
  reference inside the object is RIP-relative within +-2 GiB. All exported symbols and the
  runtime globals are `dso_local`, so kiln never goes through a GOT. Relocation types in practice:
  R_X86_64_PC32 (rodata constant pools, .data/.bss globals) and R_X86_64_PLT32 (calls, including
  calls to external libm/mem* functions; the loader must supply a stub/trampoline when the
  target is further than 2 GiB away). A loader should still accept R_X86_64_64 and the GOTPCREL
  family (LLVM may use them in future versions), but kiln's objects do not contain them today
  (tests/test_codegen.py checks PC32/PLT32 only).
- Every defined function carries `nounwind` and no `uwtable`: no .eh_frame is emitted.
- No static constructors/destructors (.init_array/.ctors), no TLS, no COMDAT groups.
- Sections: .text, .rela.text, .rodata.cst4/8/16/32 (constant pools), .data / .bss (the runtime
  globals below), .note.GNU-stack, .symtab, .strtab (and .rodata/.rela.rodata if LLVM ever emits
  a jump table).
- Exported (global, defined) symbols:
    * `kiln_kernel_<name>`: `int32_t (uint8_t *args)`, one per kernel (see kiln.abi);
    * `kiln_graph_<name>`: `int32_t (uint8_t *args)`, one per graph;
    * the runtime hooks, writable data the loader/runtime fills in after loading:
        `kiln_rt_gomp_parallel`       void* = NULL  (address of libgomp's GOMP_parallel)
        `kiln_rt_omp_get_thread_num`  void* = NULL  (address of omp_get_thread_num)
        `kiln_rt_omp_get_num_threads` void* = NULL  (address of omp_get_num_threads)
        `kiln_rt_num_threads`         int32 = 1     (team size asked of GOMP_parallel)
        `kiln_rt_min_parallel_iters`  int64 = 4096  (smaller loops run on the calling thread)
      With the pointers NULL or num_threads <= 1 every kernel runs serially; libgomp is never
      referenced by symbol, so the object links without it.
- Undefined (external) symbols: only those in ALLOWED_EXTERNAL_SYMBOLS: libm math functions,
  memset/memcpy/memmove, and the half-precision conversion helpers `__extendhfsf2` /
  `__truncsfhf2` (compiler-rt / libgcc), which LLVM calls only for f16 on targets without F16C
  (x86-64, x86-64-v2). On "host" (znver3) and x86-64-v3/v4, f16 conversion is inline
  (vcvtph2ps/vcvtps2ph). f64->f16 is done by kiln itself (round-to-odd through f32), so
  `__truncdfhf2` is never needed.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

from kiln.errors import TargetError

_LIBM_BASE = (
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "exp", "exp2",
    "exp10", "expm1", "log", "log2", "log10", "log1p", "pow", "sqrt", "cbrt", "fmod", "floor",
    "ceil", "trunc", "round", "roundeven", "rint", "nearbyint", "fabs", "fmin", "fmax", "ldexp",
    "frexp", "hypot", "sincos", "copysign",
)

#: every external symbol an object may reference (the loader resolves them from libm/libc or
#: provides them itself)
ALLOWED_EXTERNAL_SYMBOLS: frozenset[str] = frozenset(
    [n for b in _LIBM_BASE for n in (b, b + "f")]
    + ["memset", "memcpy", "memmove", "__extendhfsf2", "__truncsfhf2", "__gnu_h2f_ieee",
       "__gnu_f2h_ieee"]
)

OBJECT_CONTRACT = __doc__

#: names of the runtime hook globals every object defines
RUNTIME_GLOBALS: tuple[str, ...] = (
    "kiln_rt_gomp_parallel", "kiln_rt_omp_get_thread_num", "kiln_rt_omp_get_num_threads",
    "kiln_rt_num_threads", "kiln_rt_min_parallel_iters",
)

GENERIC_TRIPLE = "x86_64-unknown-linux-gnu"
NAMED_CPUS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")


@dataclass(frozen=True)
class TargetSpec:
    arch: str
    triple: str
    cpu: str
    features: str
    name: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, str]) -> TargetSpec:
        try:
            return cls(arch=d["arch"], triple=d["triple"], cpu=d["cpu"], features=d["features"],
                       name=d["name"])
        except (KeyError, TypeError) as e:
            raise TargetError(f"malformed target description {d!r}") from e


_initialized = False


def init_llvm() -> None:
    """Initialise llvmlite's native target once (lazily)."""
    global _initialized
    if not _initialized:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _initialized = True


def host_target() -> TargetSpec:
    import llvmlite.binding as llvm

    init_llvm()
    triple = llvm.get_process_triple()
    arch = triple.split("-", 1)[0]
    if arch not in ("x86_64", "amd64"):
        raise TargetError(f"kiln only generates x86-64 code; this host is {triple!r}")
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    return TargetSpec("x86_64", triple, llvm.get_host_cpu_name(), features, "host")


def named_target(name: str) -> TargetSpec:
    """"host" or a portable x86-64 micro-architecture level ("x86-64", "x86-64-v2/v3/v4")."""
    if name == "host":
        return host_target()
    if name in NAMED_CPUS:
        # record what the level implies, so a loader on an older CPU refuses the file clearly
        from kiln.runtime.hostcpu import level_feature_string
        return TargetSpec("x86_64", GENERIC_TRIPLE, name, level_feature_string(name), name)
    raise TargetError(f"unknown target {name!r}; expected one of {['host', *NAMED_CPUS]}")


def create_target_machine(spec: TargetSpec, opt_level: int = 3):  # -> llvm.TargetMachine
    import llvmlite.binding as llvm

    init_llvm()
    try:
        target = llvm.Target.from_triple(spec.triple)
        return target.create_target_machine(cpu=spec.cpu, features=spec.features,
                                            opt=max(0, min(3, opt_level)), reloc="pic",
                                            codemodel="small")
    except RuntimeError as e:
        raise TargetError(f"cannot create a target machine for {spec}: {e}") from e


# ---------------------------------------------------------------------------------------------
# A tiny ELF64 reader (enough to check the contract in tests and tools)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ElfSymbol:
    name: str
    bind: int          # 0 local, 1 global, 2 weak
    type: int          # 0 notype, 1 object, 2 func, 3 section, 4 file
    shndx: int         # 0 = undefined
    value: int
    size: int


def _elf_sections(blob: bytes) -> list[tuple[str, int, int, int, int, int]]:
    """(name, type, offset, size, link, entsize) per section."""
    if blob[:4] != b"\x7fELF" or blob[4] != 2 or blob[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    shoff, = struct.unpack_from("<Q", blob, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)
    raw = []
    for i in range(shnum):
        name, typ, _flags, _addr, off, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", blob, shoff + i * shentsize)
        raw.append((name, typ, off, size, link, entsize))
    stroff = raw[shstrndx][2]

    def cstr(off: int) -> str:
        end = blob.index(b"\0", off)
        return blob[off:end].decode()

    return [(cstr(stroff + n), t, o, s, lk, es) for n, t, o, s, lk, es in raw]


def elf_section_names(blob: bytes) -> list[str]:
    return [s[0] for s in _elf_sections(blob)]


def elf_symbols(blob: bytes) -> list[ElfSymbol]:
    secs = _elf_sections(blob)
    out: list[ElfSymbol] = []
    for _name, typ, off, size, link, entsize in secs:
        if typ != 2:  # SHT_SYMTAB
            continue
        stroff = secs[link][2]
        for k in range(size // entsize):
            st_name, st_info, _other, shndx, value, sz = struct.unpack_from(
                "<IBBHQQ", blob, off + k * entsize)
            end = blob.index(b"\0", stroff + st_name)
            out.append(ElfSymbol(blob[stroff + st_name:end].decode(), st_info >> 4, st_info & 15,
                                 shndx, value, sz))
    return out


def elf_relocation_types(blob: bytes) -> set[int]:
    secs = _elf_sections(blob)
    types: set[int] = set()
    for _name, typ, off, size, _link, entsize in secs:
        if typ == 4:  # SHT_RELA
            for k in range(size // entsize):
                _o, info, _a = struct.unpack_from("<QQq", blob, off + k * entsize)
                types.add(info & 0xFFFFFFFF)
    return types


def object_external_symbols(blob: bytes) -> set[str]:
    """Names of the undefined symbols an object blob references."""
    return {s.name for s in elf_symbols(blob) if s.shndx == 0 and s.name}


def object_exported_symbols(blob: bytes) -> set[str]:
    return {s.name for s in elf_symbols(blob) if s.shndx != 0 and s.bind in (1, 2) and s.name}
