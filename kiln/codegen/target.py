"""Compile targets and the object code contract between kiln.codegen and the runtime's loader.

OBJECT_CONTRACT (what every object blob produced by `kiln.codegen.build_object` looks like):

- Format: ELF64 little-endian relocatable object (ET_REL), machine x86-64 or aarch64
  (docs/object-code.md documents both; `CONTRACT_RELOCATION_TYPES` lists, per machine, the
  relocation types kiln's objects contain).
- Relocation model "pic", code model "small": the code is position independent and every
  reference inside the object is PC-relative (x86-64: RIP-relative within +-2 GiB; aarch64:
  adrp/add pairs within +-4 GiB, calls within +-128 MiB). All exported symbols and the
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
    * `<entry symbol>_abi`: 32 bytes of writable data per entry, the SHA-256 that binds the
      manifest's description of that entry to the code (kiln.runtime.abi_digest);
    * debug builds only: `kiln_debug_record`, `kiln_debug_kernel`, `kiln_debug_table` and
      `kiln_debug_table_len` (writable data, kiln.runtime.debug_record);
    * modules whose kernels print only: `kiln_print_state`, `kiln_print_buffer`,
      `kiln_print_table` and `kiln_print_table_len` (writable data, kiln.runtime.print_buffer).
- Undefined (external) symbols: only those in ALLOWED_EXTERNAL_SYMBOLS: libm math functions,
  memset/memcpy/memmove, and the half-precision conversion helpers `__extendhfsf2` /
  `__truncsfhf2` (compiler-rt / libgcc), which LLVM calls only for f16 on targets without F16C
  (x86-64, x86-64-v2). On "host" (znver3) and x86-64-v3/v4, f16 conversion is inline
  (vcvtph2ps/vcvtps2ph). f64->f16 is done by kiln itself (round-to-odd through f32), so
  `__truncdfhf2` is never needed.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import asdict, dataclass

import llvmlite.binding as llvm

from kiln.abi import EMITTED_EXTERNAL_SYMBOLS
from kiln.errors import TargetError
from kiln.runtime.elf import ObjectInfo, inspect_elf_object
from kiln.runtime.hostcpu import level_feature_string

#: every external symbol an object may reference (the loader resolves them from libm/libc or
#: provides them itself; kiln.abi keeps it beside the loader's wider allow-list)
ALLOWED_EXTERNAL_SYMBOLS: frozenset[str] = EMITTED_EXTERNAL_SYMBOLS

OBJECT_CONTRACT = __doc__

#: names of the runtime hook globals every object defines
RUNTIME_GLOBALS: tuple[str, ...] = (
    "kiln_rt_gomp_parallel", "kiln_rt_omp_get_thread_num", "kiln_rt_omp_get_num_threads",
    "kiln_rt_num_threads", "kiln_rt_min_parallel_iters",
)

GENERIC_TRIPLE = "x86_64-unknown-linux-gnu"
NAMED_CPUS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")

AARCH64_TRIPLE = "aarch64-unknown-linux-gnu"
#: aarch64 target names -> (LLVM cpu, LLVM features). The features are what the CPU name implies
#: that the runtime can check against /proc/cpuinfo (kiln.runtime.hostcpu.AARCH64_FEATURE_FLAGS),
#: recorded in the manifest so that a loader refuses code this core cannot run.
AARCH64_CPUS: dict[str, tuple[str, str]] = {
    "aarch64": ("generic", "+neon"),
    "aarch64-generic": ("generic", "+neon"),
    "cortex-a53": ("cortex-a53", "+neon,+crc"),
    "cortex-a72": ("cortex-a72", "+neon,+crc"),
    "cortex-a76": ("cortex-a76", "+neon,+crc,+lse,+rdm,+rcpc,+dotprod,+fullfp16"),
    "neoverse-n1": ("neoverse-n1", "+neon,+crc,+lse,+rdm,+rcpc,+dotprod,+fullfp16"),
    "neoverse-v1": ("neoverse-v1", "+neon,+crc,+lse,+rdm,+rcpc,+dotprod,+fullfp16,+sve"),
    "apple-m1": ("apple-m1", "+neon,+crc,+lse,+rdm,+rcpc,+dotprod,+fullfp16"),
}

#: ELF e_machine -> relocation types kiln's objects contain (the suite checks every object it
#: compiles against this; the loaders accept more, see docs/object-code.md)
EM_X86_64, EM_AARCH64 = 62, 183
CONTRACT_RELOCATION_TYPES: dict[int, frozenset[int]] = {
    EM_X86_64: frozenset({2, 4}),                   # R_X86_64_PC32, R_X86_64_PLT32
    # ABS64, PREL32, ADR_PREL_PG_HI21, ADD_ABS_LO12_NC, LDST8/16/32/64/128_ABS_LO12_NC, JUMP26,
    # CALL26
    EM_AARCH64: frozenset({257, 261, 275, 277, 278, 284, 285, 286, 299, 282, 283}),
}


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


_native_ready = False
_all_ready = False


def init_llvm(triple: str | None = None) -> None:
    """Initialise the LLVM targets a compile for `triple` needs, once per process: the native
    target only (what direct calls and host graphs use), and every target llvmlite ships (AArch64
    for cross-compiling, NVPTX) only when another triple is asked for. Initialising all of them
    up front cost ~1 ms of every process's first compile, for targets it rarely uses."""
    global _native_ready, _all_ready
    if not _native_ready:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _native_ready = True
    if triple is not None and not _all_ready and triple.split("-", 1)[0] != _native_arch():
        try:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
        except (AttributeError, RuntimeError):  # pragma: no cover - a native-only llvmlite build
            pass
        _all_ready = True


@functools.lru_cache(maxsize=1)
def _native_arch() -> str:
    return str(llvm.get_process_triple()).split("-", 1)[0]


@functools.lru_cache(maxsize=1)
def host_target() -> TargetSpec:
    """This machine's target (asked of LLVM once per process: the CPU feature query costs ~0.5 ms)."""
    init_llvm()
    triple = llvm.get_process_triple()
    arch = triple.split("-", 1)[0]
    if arch in ("x86_64", "amd64"):
        arch = "x86_64"
    elif arch in ("aarch64", "arm64"):
        arch = "aarch64"
    else:
        raise TargetError(f"kiln only generates x86-64 and aarch64 code; this host is {triple!r}")
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    return TargetSpec(arch, triple, llvm.get_host_cpu_name(), features, "host")


def named_target(name: str) -> TargetSpec:
    """"host", a portable x86-64 micro-architecture level ("x86-64", "x86-64-v2/v3/v4"), or an
    aarch64 target: "aarch64" / "aarch64-generic" (any ARMv8-A core with NEON) or a named core
    (`AARCH64_CPUS`, e.g. "cortex-a76", "neoverse-n1")."""
    if name == "host":
        return host_target()
    if name in NAMED_CPUS:
        # record what the level implies, so a loader on an older CPU refuses the file clearly
        return TargetSpec("x86_64", GENERIC_TRIPLE, name, level_feature_string(name), name)
    if name in AARCH64_CPUS:
        cpu, features = AARCH64_CPUS[name]
        return TargetSpec("aarch64", AARCH64_TRIPLE, cpu, features, name)
    raise TargetError(f"unknown target {name!r}; expected one of {['host', *NAMED_CPUS, *AARCH64_CPUS]}")


def create_target_machine(spec: TargetSpec, opt_level: int = 3) -> llvm.TargetMachine:
    init_llvm(spec.triple)
    try:
        target = llvm.Target.from_triple(spec.triple)
        return target.create_target_machine(cpu=spec.cpu, features=spec.features,
                                            opt=max(0, min(3, opt_level)), reloc="pic",
                                            codemodel="small")
    except RuntimeError as e:
        raise TargetError(f"cannot create a target machine for {spec}: {e}") from e


# ---------------------------------------------------------------------------------------------
# Contract checks over an object, through the runtime loader's own ELF inspector (one reader)
# ---------------------------------------------------------------------------------------------

_SHT_RELA = 4
_RELA_INFO = struct.Struct("<8xQ8x")       # r_offset, r_info, r_addend: only r_info is read


def _inspect(blob: bytes) -> ObjectInfo:
    """The runtime's inspector (the one ELF reader), for objects of any architecture kiln emits."""
    return inspect_elf_object(blob, machines=frozenset(CONTRACT_RELOCATION_TYPES))


def elf_section_names(blob: bytes) -> list[str]:
    return [s.name for s in _inspect(blob).sections]


def elf_relocation_types(blob: bytes) -> set[int]:
    """The relocation types used by every RELA section of the object."""
    types: set[int] = set()
    for sec in _inspect(blob).sections:
        if sec.type == _SHT_RELA:
            for (info,) in _RELA_INFO.iter_unpack(blob[sec.offset:sec.offset + sec.size]):
                types.add(info & 0xFFFFFFFF)
    return types


def object_external_symbols(blob: bytes) -> set[str]:
    """Names of the undefined symbols an object blob references (ArtifactError if the inspector
    refuses the object, e.g. for a symbol outside ALLOWED_EXTERNAL_SYMBOLS)."""
    return set(_inspect(blob).externals)


def object_exported_symbols(blob: bytes) -> set[str]:
    return set(_inspect(blob).exports)
