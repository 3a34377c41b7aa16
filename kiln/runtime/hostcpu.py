"""Host CPU feature detection without LLVM.

A .kiln file records the LLVM feature string its machine code was compiled for (for example
"+avx2,+fma,-avx512f,..."). Before loading it, the runtime calls `missing_features(features)`
to refuse code that would die with SIGILL on this host.

On Linux the host's features come from the `flags` (x86-64) or `Features` (aarch64) line of
/proc/cpuinfo, parsed once and cached. LLVM feature names are mapped to cpuinfo flag names by the
tables below. Features the tables cannot map (LLVM tuning pseudo-features like "+evex512",
"+64bit" on aarch64, brand-new extensions, or supervisor-only features such as "+shstk" whose
kernel flag depends on the kernel version) are IGNORED: they are never reported as missing.
On hosts where /proc/cpuinfo is unavailable (macOS, Windows), nothing can be checked and
`missing_features` returns [] (`host_features()` returns None).
"""

from __future__ import annotations

import functools
import platform

__all__ = ["AARCH64_FEATURE_FLAGS", "LEVEL_FEATURES", "X86_FEATURE_FLAGS", "host_arch", "host_features",
           "level_feature_string", "missing_features", "parse_cpuinfo"]

#: LLVM features each portable x86-64 micro-architecture level implies (x86-64 psABI levels).
#: The code generator records them for files built for a level (kiln.codegen.target), and the
#: loader checks them even for files that recorded none (those written before it did).
LEVEL_FEATURES: dict[str, tuple[str, ...]] = {"x86-64": ()}
LEVEL_FEATURES["x86-64-v2"] = ("cx16", "sahf", "popcnt", "sse3", "ssse3", "sse4.1", "sse4.2")
LEVEL_FEATURES["x86-64-v3"] = LEVEL_FEATURES["x86-64-v2"] + (
    "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave")
LEVEL_FEATURES["x86-64-v4"] = LEVEL_FEATURES["x86-64-v3"] + (
    "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")


def level_feature_string(level: str) -> str:
    """The LLVM feature string a level implies ("+cx16,+sahf,..."); "" for unknown names."""
    return ",".join("+" + f for f in LEVEL_FEATURES.get(level, ()))

#: LLVM x86 feature name -> cpuinfo flags (all of them must be present)
X86_FEATURE_FLAGS: dict[str, tuple[str, ...]] = {
    "64bit": ("lm",), "cmov": ("cmov",), "cx8": ("cx8",), "cx16": ("cx16",), "fxsr": ("fxsr",),
    "mmx": ("mmx",), "x87": ("fpu",), "sse": ("sse",), "sse2": ("sse2",), "sse3": ("pni",),
    "ssse3": ("ssse3",), "sse4.1": ("sse4_1",), "sse4.2": ("sse4_2",), "sse4a": ("sse4a",),
    "crc32": ("sse4_2",), "popcnt": ("popcnt",), "sahf": ("lahf_lm",), "prfchw": ("3dnowprefetch",),
    "avx": ("avx",), "avx2": ("avx2",), "fma": ("fma",), "fma4": ("fma4",), "xop": ("xop",),
    "f16c": ("f16c",), "bmi": ("bmi1",), "bmi2": ("bmi2",), "lzcnt": ("abm",), "tbm": ("tbm",),
    "movbe": ("movbe",), "aes": ("aes",), "pclmul": ("pclmulqdq",), "vaes": ("vaes",),
    "vpclmulqdq": ("vpclmulqdq",), "gfni": ("gfni",), "sha": ("sha_ni",), "adx": ("adx",),
    "rdrnd": ("rdrand",), "rdseed": ("rdseed",), "rdpid": ("rdpid",), "fsgsbase": ("fsgsbase",),
    "xsave": ("xsave",), "xsaveopt": ("xsaveopt",), "xsavec": ("xsavec",), "xsaves": ("xsaves",),
    "clflushopt": ("clflushopt",), "clwb": ("clwb",), "clzero": ("clzero",), "wbnoinvd": ("wbnoinvd",),
    "invpcid": ("invpcid",), "pku": ("pku",), "mwaitx": ("mwaitx",), "rtm": ("rtm",),
    "movdiri": ("movdiri",), "movdir64b": ("movdir64b",), "waitpkg": ("waitpkg",),
    "serialize": ("serialize",), "tsxldtrk": ("tsxldtrk",), "cldemote": ("cldemote",),
    "enqcmd": ("enqcmd",), "uintr": ("uintr",), "sgx": ("sgx",),
    "avx512f": ("avx512f",), "avx512bw": ("avx512bw",), "avx512cd": ("avx512cd",),
    "avx512dq": ("avx512dq",), "avx512vl": ("avx512vl",), "avx512ifma": ("avx512ifma",),
    "avx512vbmi": ("avx512vbmi",), "avx512vbmi2": ("avx512_vbmi2",), "avx512vnni": ("avx512_vnni",),
    "avx512bitalg": ("avx512_bitalg",), "avx512vpopcntdq": ("avx512_vpopcntdq",),
    "avx512bf16": ("avx512_bf16",), "avx512fp16": ("avx512_fp16",),
    "avx512vp2intersect": ("avx512_vp2intersect",), "avxvnni": ("avx_vnni",),
    "amx-tile": ("amx_tile",), "amx-int8": ("amx_int8",), "amx-bf16": ("amx_bf16",),
}

#: LLVM aarch64 feature name -> /proc/cpuinfo Features names
AARCH64_FEATURE_FLAGS: dict[str, tuple[str, ...]] = {
    "fp-armv8": ("fp",), "neon": ("asimd",), "crc": ("crc32",), "lse": ("atomics",),
    "aes": ("aes", "pmull"), "sha2": ("sha1", "sha2"), "sha3": ("sha3",), "sm4": ("sm3", "sm4"),
    "fullfp16": ("fphp", "asimdhp"), "rdm": ("asimdrdm",), "dotprod": ("asimddp",),
    "fp16fml": ("asimdfhm",), "rcpc": ("lrcpc",), "jsconv": ("jscvt",), "complxnum": ("fcma",),
    "sve": ("sve",), "sve2": ("sve2",), "i8mm": ("i8mm",), "bf16": ("bf16",), "flagm": ("flagm",),
    "ssbs": ("ssbs",), "sb": ("sb",), "dit": ("dit",), "ccpp": ("dcpop",), "mte": ("mte",),
}


def host_arch() -> str:
    """The host machine as "x86_64" or "aarch64" (other names returned as platform reports them)."""
    m = platform.machine().lower()
    if m in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    return m


def parse_cpuinfo(text: str) -> frozenset[str]:
    """The feature flags of the first processor listed in /proc/cpuinfo text."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def host_features() -> frozenset[str] | None:
    """The host's cpuinfo flags (cached), or None when they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = parse_cpuinfo(f.read())
    except OSError:
        return None
    return flags or None


def missing_features(feature_string: str, *, cpu: str = "", arch: str | None = None,
                     flags: frozenset[str] | None = None) -> list[str]:
    """The required ('+') LLVM features of `feature_string`, plus those the named level `cpu`
    implies (LEVEL_FEATURES), that this host lacks, in order.

    `arch`/`flags` default to the host's (they are parameters for tests). Unmappable features are
    ignored; if the host's flags cannot be read, returns [].
    """
    implied = level_feature_string(cpu)
    if implied:
        feature_string = f"{implied},{feature_string}" if feature_string else implied
    if arch is None and flags is None:
        return list(_host_missing(feature_string))
    arch = arch or host_arch()
    if flags is None:
        flags = host_features()
        if flags is None:
            return []
    return _missing(feature_string, arch, flags)


@functools.lru_cache(maxsize=64)
def _host_missing(feature_string: str) -> tuple[str, ...]:
    # Every load of a file checks its target's features; the answer for this host never changes.
    flags = host_features()
    return tuple(_missing(feature_string, host_arch(), flags)) if flags is not None else ()


def _missing(feature_string: str, arch: str, flags: frozenset[str]) -> list[str]:
    table = X86_FEATURE_FLAGS if arch == "x86_64" else AARCH64_FEATURE_FLAGS if arch == "aarch64" else {}
    missing: list[str] = []
    for item in feature_string.split(","):
        item = item.strip()
        if not item.startswith("+"):
            continue
        name = item[1:]
        need = table.get(name)
        if need is not None and not all(f in flags for f in need) and name not in missing:
            missing.append(name)
    return missing
