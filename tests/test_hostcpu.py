"""Host CPU feature detection without LLVM (kiln.runtime.hostcpu)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import kiln as kl
from kiln.errors import ArtifactError
from kiln.runtime import hostcpu
from kiln.runtime.hostcpu import host_arch, host_features, missing_features, parse_cpuinfo

CPUINFO_X86 = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Some CPU
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse \
sse2 ht syscall nx lm constant_tsc pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx \
f16c rdrand lahf_lm abm 3dnowprefetch bmi1 avx2 bmi2 erms adx sha_ni
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu
"""

CPUINFO_ARM = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""

HASWELL = ("+64bit,+cmov,+cx8,+fxsr,+mmx,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,"
           "+f16c,+bmi,+bmi2,+lzcnt,+movbe,+aes,+pclmul,+xsave,+cx16,+sahf,+rdrnd,+crc32")


def test_parse_cpuinfo_first_processor():
    flags = parse_cpuinfo(CPUINFO_X86)
    assert "avx2" in flags and "sha_ni" in flags and "fpu" in flags
    assert parse_cpuinfo("nothing here") == frozenset()
    arm = parse_cpuinfo(CPUINFO_ARM)
    assert "asimd" in arm and "atomics" in arm


def test_missing_features_x86():
    flags = parse_cpuinfo(CPUINFO_X86)
    assert missing_features(HASWELL, arch="x86_64", flags=flags) == []
    feats = HASWELL + ",+avx512f,-avx512bw,+avx512vl,+gfni,+evex512,+someunknownfeature,-sse4a"
    assert missing_features(feats, arch="x86_64", flags=flags) == ["avx512f", "avx512vl", "gfni"]
    # lzcnt maps to the abm flag, sse3 to pni, bmi to bmi1
    no_abm = flags - {"abm", "pni", "bmi1"}
    assert missing_features("+lzcnt,+sse3,+bmi", arch="x86_64", flags=no_abm) == ["lzcnt", "sse3", "bmi"]
    # '-' features and empty items are never required
    assert missing_features("-avx512f,,  ,-amx-tile", arch="x86_64", flags=frozenset()) == []


def test_missing_features_aarch64():
    flags = parse_cpuinfo(CPUINFO_ARM)
    assert missing_features("+neon,+fp-armv8,+crc,+lse,+dotprod,+rdm,+aes,+sha2", arch="aarch64",
                            flags=flags) == []
    assert missing_features("+neon,+sve,+i8mm,+v8.2a", arch="aarch64", flags=flags) == ["sve", "i8mm"]


def test_unknown_arch_checks_nothing():
    assert missing_features("+avx512f", arch="riscv64", flags=frozenset()) == []


def test_host_arch():
    assert host_arch() in ("x86_64", "aarch64") or host_arch() == os.uname().machine.lower()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo")
def test_host_features_cached():
    a = host_features()
    assert a is not None and len(a) > 5
    assert host_features() is a   # parsed once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo")
def test_agrees_with_llvm():
    """Everything LLVM says this host has, cpuinfo says too; a feature LLVM says it lacks and that
    the tables map is reported missing (at least the first few)."""
    llvm = pytest.importorskip("llvmlite.binding")
    llvm.initialize_native_target()
    feats = llvm.get_host_cpu_features()
    assert missing_features(feats.flatten()) == []
    table = hostcpu.X86_FEATURE_FLAGS if host_arch() == "x86_64" else hostcpu.AARCH64_FEATURE_FLAGS
    absent = [name for name, on in feats.items() if not on and name in table]
    if absent:
        required = ",".join("+" + n for n in absent)
        missing = missing_features(required)
        # the kernel may list a flag LLVM does not enable (e.g. disabled by XCR0); most must match
        assert len(missing) >= len(absent) // 2, (absent, missing)


# ---------------------------------------------------------------------------------------------
# Portable levels: the features they imply are recorded and checked at load
# ---------------------------------------------------------------------------------------------

NEHALEM_FLAGS = frozenset(["fpu", "cx8", "cmov", "mmx", "fxsr", "sse", "sse2", "lm", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm"])


def test_levels_imply_their_features():
    from kiln.runtime.hostcpu import LEVEL_FEATURES, X86_FEATURE_FLAGS, level_feature_string
    assert level_feature_string("x86-64") == ""
    v3 = level_feature_string("x86-64-v3").split(",")
    assert {"+avx2", "+fma", "+bmi", "+bmi2", "+lzcnt", "+movbe", "+f16c", "+xsave", "+sse4.2"} <= set(v3)
    assert set(LEVEL_FEATURES["x86-64-v4"]) - set(LEVEL_FEATURES["x86-64-v3"]) == {
        "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    for level in LEVEL_FEATURES.values():      # every one can be checked against cpuinfo
        assert all(f in X86_FEATURE_FLAGS for f in level)


def test_named_targets_record_level_features():
    from kiln.codegen.target import named_target
    from kiln.runtime.hostcpu import level_feature_string
    for level in ("x86-64-v2", "x86-64-v3", "x86-64-v4"):
        spec = named_target(level)
        assert spec.features == level_feature_string(level) and spec.features


def test_level_checked_even_without_recorded_features():
    """Files written before levels recorded their features (features == "") are still checked."""
    assert missing_features("", cpu="x86-64-v2", arch="x86_64", flags=NEHALEM_FLAGS) == []
    missing = missing_features("", cpu="x86-64-v3", arch="x86_64", flags=NEHALEM_FLAGS)
    assert missing == ["avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"]
    both = missing_features("+avx2,+aes", cpu="x86-64-v3", arch="x86_64", flags=NEHALEM_FLAGS)
    assert both.count("avx2") == 1 and "aes" in both


@kl.kernel
def inc(x: kl.ndarray(kl.i32, ndim=1)):
    for i in range(x.shape[0]):
        x[i] += 1


def test_load_refuses_level_this_cpu_lacks(monkeypatch):
    """A v4 file on a CPU without AVX-512 is refused naming the missing features (it would
    otherwise die with an illegal instruction)."""
    from kiln.runtime.compiled import load_bytes

    g = kl.GraphBuilder()
    g.dispatch(inc, kl.Arg("x", kl.ndarray(kl.i32, ndim=1)))
    data = g.compile(target="x86-64-v4")._module.to_bytes()
    real = hostcpu.missing_features

    def on_old_cpu(features: str, *, cpu: str = "", **_kw: object) -> list[str]:
        return real(features, cpu=cpu, arch="x86_64", flags=NEHALEM_FLAGS)

    monkeypatch.setattr(hostcpu, "missing_features", on_old_cpu)
    with pytest.raises(ArtifactError, match="lacks: .*avx2.*avx512f.*avx512vl"):
        load_bytes(data)
    monkeypatch.undo()
    if not real("", cpu="x86-64-v4"):      # this machine has AVX-512: the file runs
        x = np.zeros(4, np.int32)
        load_bytes(data).graphs["main"].run({"x": x})
        assert (x == 1).all()
