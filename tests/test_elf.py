"""kiln's own ELF object loader (kiln.runtime.elf), its MCJIT fallback and the loader selection.

Objects are generated here with llvmlite from hand-written LLVM IR, exactly as the code generator
emits them (PIC, small code model, opt=3), loaded, called through ctypes and compared with the
expected values and with the MCJIT fallback. Hostile inputs (truncated, bit-flipped, crafted
headers, forbidden constructs) must all raise ArtifactError; the fuzz loop runs in a subprocess
so that a crash would fail the test instead of killing pytest.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from kiln.errors import ArtifactError
from kiln.runtime import elf
from kiln.runtime.elf import ALLOWED_EXTERNAL_SYMBOLS, inspect_elf_object, load_elf_object
from kiln.runtime.native import get_global, load_object, make_entry, set_global

llvm = pytest.importorskip("llvmlite.binding")

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
    reason="kiln's ELF loader runs on Linux x86-64")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --------------------------------------------------------------------------------------------
# Object generation
# --------------------------------------------------------------------------------------------

KERNELS_IR = r"""
declare float @sinf(float)
declare double @atan2(double, double)

@kiln_rt_gomp_parallel = global ptr null
@kiln_rt_omp_get_thread_num = global ptr null
@kiln_rt_omp_get_num_threads = global ptr null
@kiln_rt_num_threads = global i32 1
@kiln_rt_min_parallel_iters = global i64 1000
@counter = global i32 0
@fnptr = global ptr @helper_mul3

define internal i32 @helper_mul3(i32 %x) noinline {
  %r = mul i32 %x, 3
  ret i32 %r
}

define i32 @kiln_kernel_add(i32 %a, i32 %b) {
  %r = add i32 %a, %b
  ret i32 %r
}

define i32 @kiln_kernel_calls(i32 %x) {
  %a = call i32 @helper_mul3(i32 %x)
  %b = call i32 @kiln_kernel_add(i32 %a, i32 1)
  ret i32 %b
}

define float @kiln_kernel_sinf(float %x) {
  %s = call float @sinf(float %x)
  ret float %s
}

define double @kiln_kernel_atan2(double %y, double %x) {
  %r = call double @atan2(double %y, double %x)
  ret double %r
}

define float @kiln_kernel_consts(float %x) {
  %a = fmul float %x, 3.25
  %b = fadd float %a, 0x3F50624DE0000000
  %c = fpext float %b to double
  %d = fmul double %c, 1.0e10
  %e = fptrunc double %d to float
  ret float %e
}

define internal i32 @c0(i32 %x) noinline { %r = add i32 %x, 11 ret i32 %r }
define internal i32 @c1(i32 %x) noinline { %r = mul i32 %x, 7 ret i32 %r }
define internal i32 @c2(i32 %x) noinline { %r = sub i32 %x, 5 ret i32 %r }
define internal i32 @c3(i32 %x) noinline { %r = xor i32 %x, 255 ret i32 %r }

define i32 @kiln_kernel_switch(i32 %k, i32 %x) {
entry:
  switch i32 %k, label %def [ i32 0, label %l0  i32 1, label %l1  i32 2, label %l2
                              i32 3, label %l3  i32 4, label %l4  i32 5, label %l5
                              i32 6, label %l6  i32 7, label %l7 ]
l0: %r0 = call i32 @c0(i32 %x)  br label %done
l1: %r1 = call i32 @c1(i32 %x)  br label %done
l2: %r2 = call i32 @c2(i32 %x)  br label %done
l3: %r3 = call i32 @c3(i32 %x)  br label %done
l4: %r4 = call i32 @c1(i32 %x)  %s4 = add i32 %r4, 1  br label %done
l5: %r5 = call i32 @c0(i32 %x)  %s5 = shl i32 %r5, 2  br label %done
l6: %r6 = call i32 @c2(i32 %x)  %s6 = mul i32 %r6, %r6  br label %done
l7: %r7 = call i32 @c3(i32 %x)  %s7 = or i32 %r7, 4096  br label %done
def: br label %done
done:
  %r = phi i32 [%r0, %l0], [%r1, %l1], [%r2, %l2], [%r3, %l3], [%s4, %l4], [%s5, %l5],
               [%s6, %l6], [%s7, %l7], [-1, %def]
  ret i32 %r
}

define i32 @kiln_kernel_bump() {
  %v = load i32, ptr @counter
  %w = add i32 %v, 1
  store i32 %w, ptr @counter
  ret i32 %w
}

define i32 @kiln_kernel_threads() {
  %v = load i32, ptr @kiln_rt_num_threads
  %m = load i64, ptr @kiln_rt_min_parallel_iters
  %t = trunc i64 %m to i32
  %r = add i32 %v, %t
  ret i32 %r
}

define i32 @kiln_kernel_fnptr(i32 %x) {
  %f = load ptr, ptr @fnptr
  %r = call i32 %f(i32 %x)
  ret i32 %r
}

; zero n bytes in a loop: O3 turns it into a call to memset
define void @kiln_kernel_zero(ptr %p, i64 %n) {
entry:
  %c = icmp sgt i64 %n, 0
  br i1 %c, label %loop, label %exit
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %q = getelementptr i8, ptr %p, i64 %i
  store i8 0, ptr %q
  %i1 = add i64 %i, 1
  %d = icmp eq i64 %i1, %n
  br i1 %d, label %exit, label %loop
exit:
  ret void
}

; entry ABI: int32 entry(uint8_t *args); args: f32 a | x data, x extent | y data, y extent
; y[i] += a * x[i], vectorized at O3
define i32 @kiln_kernel_saxpy(ptr %args) {
entry:
  %a = load float, ptr %args
  %xs = getelementptr i8, ptr %args, i64 8
  %x = load ptr, ptr %xs
  %ns = getelementptr i8, ptr %args, i64 16
  %n = load i64, ptr %ns
  %ys = getelementptr i8, ptr %args, i64 24
  %y = load ptr, ptr %ys
  %c = icmp sgt i64 %n, 0
  br i1 %c, label %loop, label %exit
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %px = getelementptr float, ptr %x, i64 %i
  %py = getelementptr float, ptr %y, i64 %i
  %vx = load float, ptr %px
  %vy = load float, ptr %py
  %m = fmul float %a, %vx
  %s = fadd float %m, %vy
  store float %s, ptr %py
  %i1 = add i64 %i, 1
  %d = icmp eq i64 %i1, %n
  br i1 %d, label %exit, label %loop
exit:
  ret i32 0
}
"""

_TM = None


def target_machine():
    global _TM
    if _TM is None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        _TM = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                           features=llvm.get_host_cpu_features().flatten(),
                                           opt=3, reloc="pic", codemodel="small")
    return _TM


def compile_ir(ir: str, optimize: bool = True) -> bytes:
    mod = llvm.parse_assembly(ir)
    mod.verify()
    tm = target_machine()
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    if optimize:
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)


@pytest.fixture(scope="module")
def kernels_obj() -> bytes:
    return compile_ir(KERNELS_IR)


def relocation_names(blob: bytes) -> set[str]:
    info = inspect_elf_object(blob)
    out = set()
    for r, _t in info.relocs:
        for _o, r_info, _a in struct.iter_unpack("<QQq", blob[r.offset:r.offset + r.size]):
            out.add(elf.RELOCATIONS[(info.machine, r_info & 0xFFFFFFFF)][0])
    return out


# --------------------------------------------------------------------------------------------
# Loading and calling
# --------------------------------------------------------------------------------------------

I32_II = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32, ctypes.c_int32)
I32_I = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)
I32_V = ctypes.CFUNCTYPE(ctypes.c_int32)
F_F = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_float)
D_DD = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double)
V_PN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)


def switch_ref(k: int, x: int) -> int:
    c0, c1, c2, c3 = x + 11, x * 7, x - 5, x ^ 255
    table = {0: c0, 1: c1, 2: c2, 3: c3, 4: c1 + 1, 5: c0 << 2, 6: c2 * c2, 7: c3 | 4096}
    return table.get(k, -1)


def check_kernels(obj) -> dict[str, object]:
    """Call every kernel of KERNELS_IR in a loaded object; returns the raw results."""
    res: dict[str, object] = {}
    addr = obj.address
    assert I32_II(addr("kiln_kernel_add"))(40, 2) == 42
    assert I32_I(addr("kiln_kernel_calls"))(5) == 16
    for x in (0.0, 0.5, 1.0, -2.5, 100.0):
        got = F_F(addr("kiln_kernel_sinf"))(x)
        assert got == pytest.approx(math.sin(x), rel=1e-6, abs=1e-6)
    res["atan2"] = D_DD(addr("kiln_kernel_atan2"))(1.0, -1.0)
    assert res["atan2"] == math.atan2(1.0, -1.0)
    res["consts"] = F_F(addr("kiln_kernel_consts"))(2.0)
    expect = float(np.float32(float(np.float32(np.float32(2.0) * np.float32(3.25)) + np.float32(0.001))
                              ) * 1.0e10)
    assert res["consts"] == pytest.approx(expect, rel=1e-6)
    sw = I32_II(addr("kiln_kernel_switch"))
    for k in range(-2, 10):
        assert sw(k, 123) == switch_ref(k, 123), k
    bump = I32_V(addr("kiln_kernel_bump"))
    first = bump()
    assert bump() == first + 1
    assert get_global(obj, "counter", ctypes.c_int32) == first + 1
    set_global(obj, "counter", ctypes.c_int32, 100)
    assert bump() == 101
    set_global(obj, "kiln_rt_num_threads", ctypes.c_int32, 8)
    set_global(obj, "kiln_rt_min_parallel_iters", ctypes.c_int64, 5000)
    assert I32_V(addr("kiln_kernel_threads"))() == 5008
    for name in ("kiln_rt_gomp_parallel", "kiln_rt_omp_get_thread_num", "kiln_rt_omp_get_num_threads"):
        assert get_global(obj, name, ctypes.c_void_p) is None
        set_global(obj, name, ctypes.c_void_p, 0x1234)
        assert get_global(obj, name, ctypes.c_void_p) == 0x1234
    assert I32_I(addr("kiln_kernel_fnptr"))(14) == 42
    buf = np.full(100_000, 0xAB, dtype=np.uint8)
    V_PN(addr("kiln_kernel_zero"))(buf.ctypes.data + 10, buf.size - 20)
    assert (buf[10:-10] == 0).all() and (buf[:10] == 0xAB).all() and (buf[-10:] == 0xAB).all()
    x = np.arange(1003, dtype=np.float32)
    y = np.linspace(-1, 1, 1003).astype(np.float32)
    expect_y = np.float32(2.5) * x + y
    args = struct.pack("<f4xQqQq", 2.5, x.ctypes.data, x.size, y.ctypes.data, y.size)
    block = ctypes.create_string_buffer(args, len(args))
    assert make_entry(addr("kiln_kernel_saxpy"))(ctypes.addressof(block)) == 0
    np.testing.assert_allclose(y, expect_y, rtol=1e-6)
    res["saxpy"] = y.copy()
    return res


def test_object_shape(kernels_obj):
    """The generated object exercises what the loader must handle."""
    names = relocation_names(kernels_obj)
    assert {"R_X86_64_PLT32", "R_X86_64_PC32", "R_X86_64_64"} <= names, names
    info = inspect_elf_object(kernels_obj)
    secnames = [s.name for s in info.sections]
    assert any(n.startswith(".rodata") for n in secnames), secnames
    assert {"sinf", "atan2", "memset"} <= set(info.externals), info.externals


def test_load_and_call(kernels_obj):
    obj = load_elf_object(kernels_obj)
    try:
        for name in ("kiln_kernel_add", "kiln_rt_num_threads", "kiln_rt_gomp_parallel", "counter"):
            assert name in obj.symbols
        check_kernels(obj)
        with pytest.raises(ArtifactError, match="kiln_kernel_nope"):
            obj.address("kiln_kernel_nope")
    finally:
        obj.close()
    assert obj.closed
    obj.close()   # idempotent


def test_vectorized(kernels_obj):
    """The saxpy loop is vectorized at O3 (packed SSE/AVX multiply in its code)."""
    asm = target_machine().emit_assembly(_optimized_module(KERNELS_IR))
    body = asm.split("kiln_kernel_saxpy:")[1].split(".Lfunc_end")[0]
    assert "ps" in body and ("vfmadd" in body or "mulps" in body), body[:2000]


def _optimized_module(ir: str):
    mod = llvm.parse_assembly(ir)
    tm = target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def test_matches_mcjit(kernels_obj):
    a = load_object(kernels_obj, loader="elf")
    b = load_object(kernels_obj, loader="mcjit")
    try:
        assert a.loader == "elf" and b.loader == "mcjit"
        assert set(a.symbols) == set(b.symbols)
        ra, rb = check_kernels(a), check_kernels(b)
        assert ra["atan2"] == rb["atan2"]
        assert ra["consts"] == rb["consts"]
        np.testing.assert_array_equal(ra["saxpy"], rb["saxpy"])
    finally:
        a.close()
        b.close()


def test_loader_choice(kernels_obj):
    from kiln import config
    from kiln.runtime import native
    with config.configured(loader=""):               # KILN_LOADER unset
        assert native.default_loader() == "elf"
    with config.configured(loader="mcjit"):
        assert native.default_loader() == "mcjit"
        obj = load_object(kernels_obj)
        assert obj.loader == "mcjit"
        obj.close()
    bogus = config.Config.from_environ({"KILN_LOADER": " Bogus "}).loader
    with config.configured(loader=bogus), pytest.raises(ArtifactError, match="KILN_LOADER"):
        native.default_loader()
    with pytest.raises(ArtifactError, match="loader"):
        load_object(kernels_obj, loader="dlopen")


def test_many_loads_are_independent(kernels_obj):
    objs = [load_elf_object(kernels_obj) for _ in range(20)]
    for i, o in enumerate(objs):
        set_global(o, "counter", ctypes.c_int32, i * 10)
    for i, o in enumerate(objs):
        assert I32_V(o.address("kiln_kernel_bump"))() == i * 10 + 1
    del objs   # finalizers unmap


def test_half_float_helpers():
    """Half-float conversions on a baseline CPU become libgcc/compiler-rt calls (__extendhfsf2)."""
    ir = r"""
    define float @kiln_kernel_h(i16 %b) {
      %h = bitcast i16 %b to half
      %f = fpext half %h to float
      %g = fmul float %f, 2.0
      ret float %g
    }
    define i16 @kiln_kernel_toh(float %f) {
      %h = fptrunc float %f to half
      %b = bitcast half %h to i16
      ret i16 %b
    }"""
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu="x86-64", features="", opt=3, reloc="pic", codemodel="small")
    mod = llvm.parse_assembly(ir)
    blob = tm.emit_object(mod)
    info = inspect_elf_object(blob)
    assert set(info.externals) & {"__extendhfsf2", "__truncsfhf2", "__gnu_h2f_ieee", "__gnu_f2h_ieee"}
    with load_elf_object(blob) as obj:
        f = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_uint16)(obj.address("kiln_kernel_h"))
        bits = int(np.array([1.5], dtype=np.float16).view(np.uint16)[0])
        assert f(bits) == 3.0
        t = ctypes.CFUNCTYPE(ctypes.c_uint16, ctypes.c_float)(obj.address("kiln_kernel_toh"))
        assert t(0.333) == int(np.array([0.333], dtype=np.float16).view(np.uint16)[0])


def test_allow_list_contents():
    for name in ("sinf", "sin", "atan2f", "atan2", "powf", "fmodf", "fmod", "tanhf", "expm1f",
                 "memset", "memcpy", "memmove", "__extendhfsf2", "__truncsfhf2", "__truncdfhf2"):
        assert name in ALLOWED_EXTERNAL_SYMBOLS
    for name in ("system", "dlopen", "mmap", "printf", "malloc", "exit", "fopen"):
        assert name not in ALLOWED_EXTERNAL_SYMBOLS
    # every allowed libm name that exists resolves
    for name in ("sinf", "cos", "atan2f", "memset", "__extendhfsf2"):
        assert elf.resolve_external(name)


def test_allow_list_covers_codegen():
    """Everything the code generator may reference, the loader accepts."""
    try:
        from kiln.codegen.target import ALLOWED_EXTERNAL_SYMBOLS as codegen_allowed
    except ImportError:
        pytest.skip("kiln.codegen not available")
    assert codegen_allowed <= ALLOWED_EXTERNAL_SYMBOLS, sorted(codegen_allowed - ALLOWED_EXTERNAL_SYMBOLS)


def test_load_time(kernels_obj):
    load_elf_object(kernels_obj).close()      # warm the libm lookups
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        obj = load_elf_object(kernels_obj)
        times.append(time.perf_counter() - t0)
        obj.close()
    times.sort()
    small = compile_ir("define i32 @kiln_kernel_add(i32 %a, i32 %b) {\n %r = add i32 %a, %b\n ret i32 %r\n}")
    stimes = []
    for _ in range(200):
        t0 = time.perf_counter()
        obj = load_elf_object(small)
        stimes.append(time.perf_counter() - t0)
        obj.close()
    stimes.sort()
    print(f"\nload_elf_object: kernels object ({len(kernels_obj)} bytes, {len(relocation_names(kernels_obj))}"
          f" reloc types): median {times[100] * 1e6:.0f} us, min {times[0] * 1e6:.0f} us; "
          f"tiny object ({len(small)} bytes): median {stimes[100] * 1e6:.0f} us")


# --------------------------------------------------------------------------------------------
# Forbidden constructs
# --------------------------------------------------------------------------------------------


def test_disallowed_external():
    blob = compile_ir("""
    declare i32 @system(ptr)
    @cmd = private constant [3 x i8] c"ls\\00"
    define i32 @kiln_kernel_evil() { %r = call i32 @system(ptr @cmd) ret i32 %r }""")
    with pytest.raises(ArtifactError, match="'system'.*allowed"):
        load_elf_object(blob)
    with pytest.raises(ArtifactError, match="'system'"):
        load_object(blob, loader="mcjit")


def test_static_constructors_refused():
    blob = compile_ir("""
    @x = global i32 0
    define internal void @init() { store i32 1, ptr @x ret void }
    @llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]
    define i32 @kiln_kernel_f() { %v = load i32, ptr @x ret i32 %v }""", optimize=False)
    with pytest.raises(ArtifactError, match="INIT_ARRAY|constructors"):
        load_elf_object(blob)


def test_tls_refused():
    blob = compile_ir("""
    @t = thread_local global i32 0
    define i32 @kiln_kernel_f() { %v = load i32, ptr @t %w = add i32 %v, 1 store i32 %w, ptr @t ret i32 %w }""")
    with pytest.raises(ArtifactError, match="TLS|thread-local"):
        load_elf_object(blob)


def test_comdat_refused():
    blob = compile_ir("""
    $f = comdat any
    define linkonce_odr i32 @kiln_kernel_f() comdat($f) { ret i32 1 }""", optimize=False)
    with pytest.raises(ArtifactError, match="COMDAT"):
        load_elf_object(blob)


def test_non_pic_absolute_relocation_overflows():
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(opt=2, reloc="static", codemodel="small")
    mod = llvm.parse_assembly("""
    @g = dso_local global i32 5
    define ptr @kiln_kernel_addr() { ret ptr @g }""")
    mod.triple = tm.triple
    blob = tm.emit_object(mod)
    assert "R_X86_64_32" in relocation_names(blob)
    with pytest.raises(ArtifactError, match="R_X86_64_32"):
        load_elf_object(blob)


# --------------------------------------------------------------------------------------------
# The external-symbol allow-list: binding, visibility, type and section-index tricks
# --------------------------------------------------------------------------------------------

PUTS_IR = """
declare i32 @puts(ptr)
declare float @sinf(float)
@msg = private constant [4 x i8] c"hi!\\00"
define i32 @kiln_kernel_evil() { %r = call i32 @puts(ptr @msg) ret i32 %r }
define float @kiln_kernel_ok(float %x) { %r = call float @sinf(float %x) ret float %r }"""


def _set_symbol(blob: bytes, name: str, *, bind: int | None = None, typ: int | None = None,
                other: int | None = None, shndx: int | None = None, value: int | None = None,
                index: int | None = None) -> bytes:
    """Rewrite fields of the symbol called `name` (or of symbol `index`, keeping `name`'s
    st_name: a way to give the null symbol a name)."""
    off = _raw_symbol_offset(blob, name)
    st_name, st_info, st_other, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", blob, off)
    if index is not None:
        off = _raw_symbol_offset(blob, "") + 24 * index     # symbol 0 is the first unnamed one
    st_info = ((st_info >> 4 if bind is None else bind) << 4) | (st_info & 15 if typ is None else typ)
    out = bytearray(blob)
    struct.pack_into("<IBBHQQ", out, off, st_name, st_info, st_other if other is None else other,
                     st_shndx if shndx is None else shndx, st_value if value is None else value, st_size)
    return bytes(out)


def _raw_symbol_offset(blob: bytes, name: str) -> int:
    """Like _symbol_offset, without the inspector (the object may reference 'puts')."""
    e_shoff, = struct.unpack_from("<Q", blob, 0x28)
    e_shnum, = struct.unpack_from("<H", blob, 0x3C)
    shdrs = [struct.unpack_from("<IIQQQQIIQQ", blob, e_shoff + 64 * i) for i in range(e_shnum)]
    for _nm, typ, _fl, _ad, off, size, link, _inf, _al, _es in shdrs:
        if typ == elf.SHT_SYMTAB:
            stroff = shdrs[link][4]
            for k in range(size // 24):
                st_name = struct.unpack_from("<I", blob, off + 24 * k)[0]
                if blob[stroff + st_name:blob.index(b"\0", stroff + st_name)].decode() == name:
                    return off + 24 * k
    raise AssertionError(name)


def _puts_obj() -> bytes:    # an object calling 'puts', which the allow-list refuses
    return compile_ir(PUTS_IR)


@pytest.mark.parametrize("loader", ["elf", "mcjit"])
def test_undefined_local_symbol_cannot_bypass_allow_list(loader):
    """An undefined symbol marked LOCAL used to be skipped by the allow-list check and then
    resolved by name from libc at relocation time."""
    blob = _set_symbol(_puts_obj(), "puts", bind=elf.STB_LOCAL)
    with pytest.raises(ArtifactError, match="undefined but LOCAL"):
        load_object(blob, loader=loader)


@pytest.mark.parametrize("loader", ["elf", "mcjit"])
def test_named_null_symbol_refused(loader):
    """Symbol 0 given the name of an external and GLOBAL binding: relocations with symbol index 0
    must not resolve it."""
    blob = _set_symbol(_puts_obj(), "puts", bind=elf.STB_GLOBAL, shndx=0, index=0)
    with pytest.raises(ArtifactError, match="null symbol"):
        load_object(blob, loader=loader)


@pytest.mark.parametrize("edit,pattern", [
    ({"bind": elf.STB_WEAK}, "'puts'.*allowed"),                 # weak external
    ({"other": 2}, "'puts'.*allowed"),                           # STV_HIDDEN
    ({"other": 3}, "'puts'.*allowed"),                           # STV_PROTECTED
    ({"bind": 10}, "unsupported binding 10"),                    # STB_GNU_UNIQUE
    ({"bind": 13}, "unsupported binding 13"),                    # processor-specific
    ({"typ": elf.STT_SECTION, "bind": elf.STB_LOCAL}, "undefined but LOCAL"),
    ({"typ": 7}, "unsupported type 7"),
    ({"shndx": 0xFF00}, "reserved index"),                       # SHN_LORESERVE
    ({"shndx": elf.SHN_COMMON}, "COMMON"),
    ({"shndx": elf.SHN_XINDEX}, "SHN_XINDEX"),
])
def test_symbol_tricks_refused(edit, pattern):
    blob = _set_symbol(_puts_obj(), "puts", **edit)
    with pytest.raises(ArtifactError, match=pattern):
        inspect_elf_object(blob)
    with pytest.raises(ArtifactError, match=pattern):
        inspect_elf_object(blob, machines=frozenset(elf.MACHINE_NAMES), strict=True)


def test_absolute_symbol_is_never_resolved_by_name():
    """SHN_ABS 'puts' is a constant (its st_value), never libc's puts."""
    blob = _set_symbol(_puts_obj(), "puts", shndx=elf.SHN_ABS, value=0x1234)
    info = inspect_elf_object(blob)
    assert "puts" not in info.externals and info.exports["puts"].value == 0x1234
    # the call's displacement to address 0x1234 does not fit: refused, never resolved by name
    with pytest.raises(ArtifactError, match="PLT32.*puts"):
        load_elf_object(blob)


def test_resolver_refuses_names_outside_the_allow_list():
    with pytest.raises(ArtifactError, match="'system'"):
        elf.resolve_external("system")
    assert elf.resolve_external("sinf")


def _rwx_mappings() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line.split()[0] for line in f if line.split()[1].startswith("rwx")]


def test_no_writable_executable_pages(kernels_obj):
    """Neither loader leaves a page both writable and executable: code is R-X, data RW-. (libffi
    may hold one rwx page for ctypes callbacks, created by `import llvmlite` itself: it must not
    be one of the loaders' and no load may add one.)"""
    before = set(_rwx_mappings())
    for loader in ("elf", "mcjit"):
        with load_object(kernels_obj, loader=loader) as obj:
            after = set(_rwx_mappings())
            assert after <= before, (loader, after - before)
            addrs = list(obj.symbols.values())
            with open("/proc/self/maps") as f:
                for line in f:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    perms = line.split()[1]
                    if any(lo <= a < hi for a in addrs):
                        assert not ("w" in perms and "x" in perms), (loader, line)


def test_mcjit_runs_only_inspected_objects():
    """Non-ELF blobs (Mach-O, COFF) cannot be inspected, so the fallback refuses them; MCJIT
    relocates unwind tables too, so their relocations are checked before it sees them."""
    with pytest.raises(ArtifactError, match="ELF"):
        load_object(b"\xcf\xfa\xed\xfe" + bytes(60), loader="mcjit")
    blob = compile_ir("define i32 @kiln_kernel_f(i32 %x) uwtable { %r = add i32 %x, 1 ret i32 %r }")
    _off, rela = _shdr(blob, ".rela.eh_frame")
    bad = _patch(blob, rela.offset, "<Q", 1 << 40)      # first entry's r_offset far outside
    with pytest.raises(ArtifactError, match="r_offset"):
        load_object(bad, loader="mcjit")
    with load_elf_object(bad) as obj:      # kiln's own loader neither loads nor relocates it
        assert make_entry(obj.address("kiln_kernel_f"))
    with load_object(blob, loader="mcjit") as obj:
        assert ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(obj.address("kiln_kernel_f"))(41) == 42


# --------------------------------------------------------------------------------------------
# Hostile inputs
# --------------------------------------------------------------------------------------------


def _patch(blob: bytes, off: int, fmt: str, value) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def _shdr(blob: bytes, name: str) -> tuple[int, elf.Section]:
    info = inspect_elf_object(blob)
    e_shoff = struct.unpack_from("<Q", blob, 0x28)[0]
    for s in info.sections:
        if s.name == name or (name.endswith("*") and s.name.startswith(name[:-1])):
            return e_shoff + 64 * s.index, s
    raise AssertionError(name)


def _symbol_offset(blob: bytes, symname: str) -> int:
    info = inspect_elf_object(blob)
    _, symtab = _shdr(blob, ".symtab")
    for sym in info.symbols:
        if sym.name == symname:
            return symtab.offset + 24 * sym.index
    raise AssertionError(symname)


def _cases(blob: bytes) -> list[tuple[str, bytes, str]]:
    """(description, mutated blob, regex the error message must match)."""
    cases = [
        ("empty", b"", "shorter than"),
        ("magic", _patch(blob, 0, "4s", b"\x7fELG"), "magic"),
        ("class32", _patch(blob, 4, "B", 1), "EI_CLASS"),
        ("big-endian", _patch(blob, 5, "B", 2), "EI_DATA"),
        ("ident version", _patch(blob, 6, "B", 0), "EI_VERSION"),
        ("ET_EXEC", _patch(blob, 0x10, "<H", 2), "e_type"),
        ("aarch64", _patch(blob, 0x12, "<H", elf.EM_AARCH64), "e_machine.*aarch64"),
        ("ppc", _patch(blob, 0x12, "<H", 21), "e_machine"),
        ("e_version", _patch(blob, 0x14, "<I", 7), "e_version"),
        ("e_shoff huge", _patch(blob, 0x28, "<Q", 1 << 62), "e_shoff"),
        ("e_shoff past end", _patch(blob, 0x28, "<Q", len(blob) - 10), "e_shoff"),
        ("e_ehsize", _patch(blob, 0x34, "<H", 52), "e_ehsize"),
        ("e_shentsize", _patch(blob, 0x3A, "<H", 40), "e_shentsize"),
        ("e_shnum 0", _patch(blob, 0x3C, "<H", 0), "e_shnum"),
        ("e_shnum huge", _patch(blob, 0x3C, "<H", 0xFFFF), "e_shnum"),
        ("e_shstrndx", _patch(blob, 0x3E, "<H", 0xFFF0), "e_shstrndx"),
        ("truncated", blob[: len(blob) // 2], "beyond end"),
    ]
    off, text = _shdr(blob, ".text*")
    cases += [
        ("text sh_offset", _patch(blob, off + 0x18, "<Q", 1 << 40), r"offset\+size .* beyond end of object"),
        ("text sh_size", _patch(blob, off + 0x20, "<Q", len(blob)), r"offset\+size"),
        ("text sh_name", _patch(blob, off, "<I", 0x7FFFFFFF), "sh_name"),
        ("text sh_link", _patch(blob, off + 0x28, "<I", 999), "sh_link"),
        ("text align", _patch(blob, off + 0x30, "<Q", 3), "sh_addralign"),
        ("text align huge", _patch(blob, off + 0x30, "<Q", 1 << 20), "sh_addralign"),
        ("text TLS flag", _patch(blob, off + 0x08, "<Q", text.flags | elf.SHF_TLS), "TLS"),
        ("text type", _patch(blob, off + 0x04, "<I", elf.SHT_INIT_ARRAY), "INIT_ARRAY"),
    ]
    off, symtab = _shdr(blob, ".symtab")
    cases += [
        ("symtab entsize", _patch(blob, off + 0x38, "<Q", 16), "sh_entsize"),
        ("symtab size", _patch(blob, off + 0x20, "<Q", symtab.size - 5), "sh_size|offset"),
        ("symtab link", _patch(blob, off + 0x28, "<I", symtab.index), "sh_link|string table"),
        ("symtab info", _patch(blob, off + 0x2C, "<I", 10**6), "sh_info"),
    ]
    so = _symbol_offset(blob, "kiln_kernel_add")
    cases += [
        ("st_name", _patch(blob, so, "<I", 0xFFFFFF), "st_name"),
        ("st_shndx", _patch(blob, so + 6, "<H", 0xF000), "st_shndx"),
        ("st_shndx reserved", _patch(blob, so + 6, "<H", 0xFF10), "st_shndx"),
        ("st_shndx xindex", _patch(blob, so + 6, "<H", 0xFFFF), "SHN_XINDEX"),
        ("st_value", _patch(blob, so + 8, "<Q", 1 << 50), "st_value"),
        ("STT_TLS", _patch(blob, so + 4, "B", (1 << 4) | elf.STT_TLS), "STT_TLS"),
        ("common", _patch(blob, so + 6, "<H", elf.SHN_COMMON), "COMMON"),
    ]
    so = _symbol_offset(blob, "sinf")
    strtab = inspect_elf_object(blob).sections[symtab.link]
    name_off = struct.unpack_from("<I", blob, so)[0]
    cases.append(("external renamed", bytes(bytearray(blob[:strtab.offset + name_off]) + b"exit"
                                            + blob[strtab.offset + name_off + 4:]), "'exit'.*allowed"))
    off, rela = _shdr(blob, ".rela.text*")
    cases += [
        ("rela entsize", _patch(blob, off + 0x38, "<Q", 16), "sh_entsize"),
        ("rela size", _patch(blob, off + 0x20, "<Q", rela.size - 8), "sh_size"),
        ("rela info", _patch(blob, off + 0x2C, "<I", 5000), "sh_info"),
        ("rela link", _patch(blob, off + 0x28, "<I", 1), "sh_link"),
        ("rela as REL", _patch(blob, off + 0x04, "<I", elf.SHT_REL), "SHT_REL"),
        ("r_offset", _patch(blob, rela.offset, "<Q", 1 << 33), "r_offset"),
        ("r_offset edge", _patch(blob, rela.offset, "<Q", text.size - 2), "r_offset"),
        ("r_sym", _patch(blob, rela.offset + 12, "<I", 10**6), "symbol index"),
        ("r_type", _patch(blob, rela.offset + 8, "<I", 37), "unknown relocation type 37"),
        ("r_type huge", _patch(blob, rela.offset + 8, "<I", 0xFFFFFFFF), "unknown relocation type"),
    ]
    return cases


def test_hostile_inputs(kernels_obj):
    for desc, blob, pattern in _cases(kernels_obj):
        with pytest.raises(ArtifactError, match=pattern) as ei:
            load_elf_object(blob)
        assert str(ei.value).startswith("ELF: "), (desc, str(ei.value))


FUZZ_SCRIPT = r"""
import json, random, sys
from kiln.errors import ArtifactError
from kiln.runtime.elf import load_elf_object, inspect_elf_object
blob = open(sys.argv[1], "rb").read()
info = inspect_elf_object(blob)
stats = {"truncated": 0, "truncated_ok": 0, "flips": 0, "loaded": 0, "refused": 0}
for cut in range(0, len(blob)):
    try:
        load_elf_object(blob[:cut]).close()
        stats["truncated_ok"] += 1
    except ArtifactError:
        stats["truncated"] += 1
# interesting regions: header, section table, symtab, relocations; plus a random sample
e_shoff = int.from_bytes(blob[0x28:0x30], "little")
offsets = list(range(64)) + list(range(e_shoff, len(blob)))
for s in info.sections:
    if s.type in (2, 4):
        offsets += list(range(s.offset, s.offset + s.size))
rng = random.Random(1234)
offsets += rng.sample(range(len(blob)), min(400, len(blob)))
for off in offsets:
    for mask in (0x01, 0x80, 0xFF):
        b = bytearray(blob)
        b[off] ^= mask
        stats["flips"] += 1
        try:
            load_elf_object(bytes(b)).close()
            stats["loaded"] += 1
        except ArtifactError:
            stats["refused"] += 1
# random multi-byte garbage
for i in range(300):
    b = bytearray(blob)
    for _ in range(rng.randint(1, 8)):
        off = rng.randrange(len(b))
        b[off:off + 8] = rng.randbytes(8)[: len(b) - off]
    stats["flips"] += 1
    try:
        load_elf_object(bytes(b)).close()
        stats["loaded"] += 1
    except ArtifactError:
        stats["refused"] += 1
print(json.dumps(stats))
"""


def test_fuzz_never_crashes(kernels_obj, tmp_path):
    """Truncations and byte flips either load or raise ArtifactError: no other exception, no crash
    (the loop runs in a subprocess, so a segfault shows up as a failed return code)."""
    path = tmp_path / "k.o"
    path.write_bytes(kernels_obj)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", FUZZ_SCRIPT, str(path)], capture_output=True,
                          text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nfuzz: {stats} in {time.perf_counter() - t0:.1f} s")
    assert stats["truncated_ok"] == 0          # every truncation is caught
    assert stats["refused"] > stats["flips"] // 4


def test_distinct_relocation_values_match_numpy_unique() -> None:
    """The loader's `np.unique` replacement (np.unique imports numpy.ma on first use)."""
    from kiln.runtime.elf import _distinct

    rng = np.random.default_rng(3)
    for values in (np.zeros(0, np.uint64), np.array([7], np.uint64), rng.integers(0, 9, 500).astype(np.uint64),
                   rng.integers(-5, 5, 100)):
        assert _distinct(values) == np.unique(values).tolist()
