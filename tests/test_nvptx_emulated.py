"""The NVPTX code generator's loops run on the CPU: the module kiln.codegen.nvptx emits, with the
GPU's special registers (thread/block index and size) turned into globals, compiled for the host
with MCJIT and run thread by thread, for any grid. This checks the generated control flow
(grid-stride loops, coarsened stencil loops with shared loads and their partial groups) against
numpy without a GPU; tests/test_cuda.py runs the same kernels on a real one."""

from __future__ import annotations

import ctypes
import re
import struct

import numpy as np
import pytest

import kiln as kl

try:
    from kiln.codegen.nvptx import nvptx_available
    NVPTX_REASON = nvptx_available()
except ImportError as e:  # pragma: no cover - llvmlite missing
    NVPTX_REASON = str(e)

pytestmark = pytest.mark.skipif(NVPTX_REASON is not None, reason=f"no NVPTX target: {NVPTX_REASON}")

SREGS = ("tid", "ntid", "ctaid", "nctaid")


class EmulatedKernel:
    """One planned kernel's PTX entries, compiled for the host; `run(*arrays_and_scalars,
    block=..., grid=...)` runs every launch phase over a grid of `grid` blocks of `block` threads."""

    def __init__(self, kernel, types, force_vector: bool | None = None) -> None:
        import llvmlite.binding as llvm

        from kiln.codegen.nvptx import NvptxModuleEmitter
        from kiln.driver import lower_kernel
        self.kir = lower_kernel(kernel, types)
        me = NvptxModuleEmitter(triple="", libdevice=False)
        me.add_kernels([self.kir])
        self.launches = me.launches[self.kir.kernel.name]
        text = str(me.module).replace("llvm.nvvm.read.ptx.sreg.", "kiln_emu_sreg.").replace("ptx_kernel ", "")
        defs = []
        for r in SREGS:
            text = re.sub(rf'declare i32 @"kiln_emu_sreg\.{r}\.x"\(\)[^\n]*\n', "", text)
            defs.append(f'@"kiln_emu_{r}" = global i32 0\n'
                        f'define i32 @"kiln_emu_sreg.{r}.x"() {{\n  %v = load i32, ptr @"kiln_emu_{r}"\n  ret i32 %v\n}}\n')
        # count the launches that took the vector path (kiln.ir.Vectorization); `force_vector`
        # takes it (True) or the plain one (False) whatever the arrays' alignment, so both paths
        # are checked on any input (x86 does not fault on the alignment the vector path claims)
        text = text.replace("\nvec.aligned:\n", "\nvec.aligned:\n  %emu.v = load i32, ptr @kiln_emu_vector\n"
                            "  %emu.v1 = add i32 %emu.v, 1\n  store i32 %emu.v1, ptr @kiln_emu_vector\n")
        if force_vector is not None:
            text = re.sub(r'br i1 %"[^"]+", label %"vec\.aligned", label %"vec\.plain"',
                          f'br i1 {"true" if force_vector else "false"}, label %"vec.aligned", label %"vec.plain"', text)
        defs.append('@"kiln_emu_vector" = global i32 0\n')
        mod = llvm.parse_assembly(text + "\n".join(defs))
        mod.verify()
        tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
        self.engine = llvm.create_mcjit_compiler(mod, tm)
        self.engine.finalize_object()
        self.regs = {r: ctypes.c_int32.from_address(self.engine.get_global_value_address(f"kiln_emu_{r}"))
                     for r in SREGS}
        self.vector_runs = ctypes.c_int32.from_address(self.engine.get_global_value_address("kiln_emu_vector"))
        self.entries = []
        for ln in self.launches:
            nslots = len(me.module.get_global(ln.entry).args)
            fty = ctypes.CFUNCTYPE(None, *([ctypes.c_uint64] * nslots))
            self.entries.append((ln, fty(self.engine.get_function_address(ln.entry))))

    def run(self, *args, block: int = 32, grid: int = 3, block_in_memory: bool = False) -> None:
        """`block_in_memory`: pass the argument block by its address, the slots zero (how CUDA
        graph nodes launch, kiln.runtime.cuda_graph), instead of in the slots."""
        slots: list[int] = []
        for a in args:
            if isinstance(a, np.ndarray):
                slots.append(a.ctypes.data)
                slots += list(a.shape)
                slots += [s // a.itemsize for s in a.strides]     # element strides (kiln.abi)
            elif isinstance(a, _Raw):
                slots.append(int(a))
            else:
                slots.append(struct.unpack("<Q", struct.pack("<d" if isinstance(a, float) else "<q", a))[0])
        held = np.array(slots, np.uint64)
        params = [0] * len(slots) + [held.ctypes.data] if block_in_memory else slots + [0]
        for ln, fn in self.entries:
            nblocks = 1 if ln.mode == "single" else grid
            nthreads = 1 if ln.mode == "single" else block
            self.regs["ntid"].value = nthreads
            self.regs["nctaid"].value = nblocks
            for bi in range(nblocks):
                self.regs["ctaid"].value = bi
                for ti in range(nthreads):
                    self.regs["tid"].value = ti
                    fn(*params)


@kl.kernel
def stencil5(u: kl.ndarray(kl.f64, ndim=2), v: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange((1, u.shape[0] - 1), (1, u.shape[1] - 1)):
        v[i, j] = 0.25 * (u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]) - u[i, j]


@kl.kernel
def stencil_locals(u: kl.ndarray(kl.f64, ndim=2), w: kl.ndarray(kl.f64, ndim=1), v: kl.ndarray(kl.f64, ndim=2)):
    # a local per row, a wider window (i - 2 .. i + 1), a column weight, a conditional read
    for i, j in kl.ndrange((2, u.shape[0] - 1), u.shape[1]):
        up = u[i - 2, j] + u[i - 1, j]
        down = u[i + 1, j] if j > 0 else u[i, j]
        v[i, j] = w[j] * (up - 2.0 * u[i, j] + down)


@kl.kernel
def stencil3d(u: kl.ndarray(kl.f64, ndim=3), v: kl.ndarray(kl.f64, ndim=3)):
    for k, i, j in kl.ndrange((1, u.shape[0] - 1), (1, u.shape[1] - 1), (1, u.shape[2] - 1)):
        v[k, i, j] = (u[k - 1, i, j] + u[k + 1, i, j] + u[k, i - 1, j] + u[k, i + 1, j]
                      + u[k, i, j - 1] + u[k, i, j + 1] - 6.0 * u[k, i, j])


def _ref5(u):
    v = np.zeros_like(u)
    v[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]) - u[1:-1, 1:-1]
    return v


A2 = kl.ndarray(kl.f64, ndim=2)


def test_stencils_are_planned_coarsened():
    e = EmulatedKernel(stencil5, (A2, A2))
    co = e.kir.kernel.body[0].plan.coarsen
    assert co is not None and co.dim == 0 and co.factor >= 2 and co.reuse == ("u",)
    assert e.launches[0].coarsen == (0, co.factor)
    assert e.launches[0].to_json()["count"][0][2] == ["const", co.factor]    # groups of rows
    assert e.launches[0].to_json()["count"][1][2] == ["const", e.kir.kernel.body[0].plan.vector.width]  # lanes


@pytest.mark.parametrize("shape", [(3, 3), (10, 7), (11, 40), (2 + 8 * 3, 5), (37, 29)])
@pytest.mark.parametrize("block,grid", [(32, 1), (7, 3), (64, 8)])
def test_coarsened_stencil_matches_numpy(shape, block, grid):
    e = EmulatedKernel(stencil5, (A2, A2))
    u = np.random.default_rng(1).random(shape)
    v = np.zeros_like(u)
    e.run(u, v, block=block, grid=grid)
    np.testing.assert_array_equal(v, _ref5(u))


@pytest.mark.parametrize("shape", [(4, 3), (12, 9), (21, 33)])
def test_coarsened_stencil_with_locals_and_lazy_reads(shape):
    e = EmulatedKernel(stencil_locals, (A2, kl.ndarray(kl.f64, ndim=1), A2))
    assert e.kir.kernel.body[0].plan.coarsen is not None
    rng = np.random.default_rng(2)
    u = rng.random(shape)
    w = rng.random(shape[1])
    v = np.zeros_like(u)
    e.run(u, w, v, block=16, grid=2)
    np.testing.assert_allclose(v, _ref_locals(u, w), rtol=0, atol=1e-15)


def _ref_locals(u, w):
    ref = np.zeros_like(u)
    for i in range(2, u.shape[0] - 1):
        for j in range(u.shape[1]):
            down = u[i + 1, j] if j > 0 else u[i, j]
            ref[i, j] = w[j] * (u[i - 2, j] + u[i - 1, j] - 2.0 * u[i, j] + down)
    return ref


def test_coarsened_3d_stencil():
    A3 = kl.ndarray(kl.f64, ndim=3)
    e = EmulatedKernel(stencil3d, (A3, A3))
    assert e.kir.kernel.body[0].plan.coarsen is not None
    u = np.random.default_rng(3).random((13, 6, 7))
    v = np.zeros_like(u)
    e.run(u, v, block=32, grid=2)
    ref = np.zeros_like(u)
    c = u[1:-1, 1:-1, 1:-1]
    ref[1:-1, 1:-1, 1:-1] = (u[:-2, 1:-1, 1:-1] + u[2:, 1:-1, 1:-1] + u[1:-1, :-2, 1:-1] + u[1:-1, 2:, 1:-1]
                             + u[1:-1, 1:-1, :-2] + u[1:-1, 1:-1, 2:] - 6.0 * c)
    np.testing.assert_allclose(v, ref, rtol=0, atol=1e-14)


@kl.kernel
def in_place_rows(u: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange((1, u.shape[0]), u.shape[1]):
        u[i, j] = u[i, j] + u[i - 1, j] * 0.0 + 1.0


@kl.kernel
def strided_rows(u: kl.ndarray(kl.f64, ndim=2), v: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange((1, u.shape[0] - 1, 2), u.shape[1]):
        v[i, j] = u[i - 1, j] + u[i + 1, j]


@kl.kernel
def one_offset(u: kl.ndarray(kl.f64, ndim=2), v: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange(u.shape[0], (1, u.shape[1] - 1)):
        v[i, j] = u[i, j - 1] + u[i, j + 1]


@kl.kernel
def shifted_rows(u: kl.ndarray(kl.f64, ndim=2), v: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange((1, u.shape[0] - 2), u.shape[1]):
        i = i + kl.i64(u[0, j] > 0.5)          # a row that depends on the data
        v[i, j] = u[i - 1, j] + u[i + 1, j]


@pytest.mark.parametrize("kernel", [in_place_rows, strided_rows, one_offset, shifted_rows])
def test_loops_without_row_reuse_are_not_coarsened(kernel):
    # written arrays are never shared (in_place_rows), step != 1 (strided_rows), neighbours
    # only along the fast dim need no register window (one_offset), and a reassigned row
    # variable would make rows of one window read different offsets (shifted_rows)
    e = EmulatedKernel(kernel, (A2,) * len(kernel.annotations))
    assert e.kir.kernel.body[0].plan.coarsen is None
    assert e.launches[0].coarsen is None


def test_emulated_grid_stride_loop_without_coarsening():
    e = EmulatedKernel(strided_rows, (A2, A2))
    u = np.random.default_rng(4).random((9, 5))
    v = np.zeros_like(u)
    e.run(u, v, block=8, grid=2)
    ref = np.zeros_like(u)
    ref[1:-1:2] = u[0:-2:2] + u[2::2]
    np.testing.assert_array_equal(v, ref)


@kl.kernel
def scaled_flags(a: kl.f32, k: kl.i32, on: kl.i32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + kl.f32(k) if on else x[i]


@pytest.mark.parametrize("block_in_memory", [False, True])
def test_entries_read_their_block_from_the_slots_or_from_memory(block_in_memory):
    """Every entry takes its argument block's address after the slots: 0 means "the slots are the
    block" (plain launches), anything else "read it there" (CUDA graph nodes, whose block a copy
    refreshes between replays): both give the same results, scalars of every width included."""
    e = EmulatedKernel(scaled_flags, (kl.f32, kl.i32, kl.i32, kl.ndarray(kl.f32, ndim=1), kl.ndarray(kl.f32, ndim=1)))
    assert all(ln.block_ptr for ln in e.launches)
    x = np.arange(70, dtype=np.float32)
    for a, k, on in [(2.5, -3, 1), (0.5, 7, 0)]:
        y = np.zeros_like(x)
        a_bits = struct.unpack("<I", struct.pack("<f", a))[0]
        e.run(_Raw(a_bits), k, on, x, y, block=16, grid=2, block_in_memory=block_in_memory)
        np.testing.assert_array_equal(y, np.float32(a) * x + np.float32(k) if on else x)
    ss = EmulatedKernel(stencil5, (A2, A2))
    u = np.random.default_rng(5).random((19, 6))
    v = np.zeros_like(u)
    ss.run(u, v, block=8, grid=2, block_in_memory=block_in_memory)
    np.testing.assert_array_equal(v, _ref5(u))


@kl.kernel
def mark_scale_mark(b: kl.f64, x: kl.ndarray(kl.f64, ndim=1), o: kl.ndarray(kl.f64, ndim=1)):
    o[0] = b
    for i in range(x.shape[0]):
        x[i] = x[i] * b
    o[1] = o[0] + 1.0


@pytest.mark.parametrize("block_in_memory", [False, True])
def test_every_launch_phase_reads_the_block_the_same_way(block_in_memory):
    e = EmulatedKernel(mark_scale_mark, (kl.f64, kl.ndarray(kl.f64, ndim=1), kl.ndarray(kl.f64, ndim=1)))
    assert [ln.mode for ln in e.launches] == ["single", "loop", "single"]
    x, o = np.arange(9.0), np.zeros(2)
    e.run(3.0, x, o, block=4, grid=2, block_in_memory=block_in_memory)
    np.testing.assert_array_equal(x, np.arange(9.0) * 3.0)
    assert o.tolist() == [3.0, 4.0]


class _Raw(int):
    """A slot value passed as is (an f32's bits)."""


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("is_max", [True, False])
def test_float_min_max_flush_through_integer_atomics(dtype, is_max):
    """The reductions' float min/max flush (one native integer atomic instead of a compare-and-
    swap loop), compiled for the host: the same result as numpy's fmax/fmin (NaN values ignored)
    over every sign, zero, infinity and magnitude, from any stored start value."""
    import llvmlite.binding as llvm
    from llvmlite import ir

    from kiln.codegen.llvm_util import DOUBLE, FLOAT, PTR, VOID
    from kiln.codegen.nvptx_atomics import float_minmax_atomic

    fty = FLOAT if dtype == np.float32 else DOUBLE
    mod = ir.Module(name="fminmax")
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, fty]), name="update")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    float_minmax_atomic(b, is_max, fn.args[0], fn.args[1])
    b.ret_void()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(mod)),
                                        llvm.Target.from_default_triple().create_target_machine())
    engine.finalize_object()
    ctype = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    update = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctype), ctype)(engine.get_function_address("update"))
    rng = np.random.default_rng(7)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 3.5, -3.5], dtype)
    combine = np.fmax if is_max else np.fmin
    for trial in range(40):
        values = np.concatenate([rng.choice(special, 5), (rng.standard_normal(20) * 10.0 ** rng.integers(-30, 30))
                                 .astype(dtype)])
        rng.shuffle(values)
        start = dtype(-np.inf if is_max else np.inf) if trial % 2 else dtype(rng.standard_normal() * 100)
        cell = ctype(start)
        for v in values:
            update(ctypes.byref(cell), ctype(v))
        want = combine.reduce(np.concatenate([[start], values]))
        assert dtype(cell.value) == want or (want == 0 and cell.value == 0), (trial, cell.value, want)


# ---------------------------------------------------------------------------------------------
# Vector access along the innermost dimension (kiln.ir.Vectorization)
# ---------------------------------------------------------------------------------------------

def at_offset(shape, dtype, elems: int) -> np.ndarray:
    """A C-ordered array whose data pointer is `elems` elements past a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    n = int(np.prod(shape))
    raw = np.zeros(n * itemsize + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + elems * itemsize
    return raw[start:start + n * itemsize].view(dtype).reshape(shape)


@kl.kernel
def vsaxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def vshifted(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    # lanes read x two elements back, from a start that is not a multiple of the width
    for i in range(3, y.shape[0]):
        y[i] = x[i - 2] * 2.0 + x[i - 3]


@kl.kernel
def vnegative(x: kl.ndarray(kl.f64, ndim=1), y: kl.ndarray(kl.f64, ndim=1)):
    for i in range(-5, y.shape[0] - 5):
        y[i + 5] = x[i + 5] + 1.0


F1 = kl.ndarray(kl.f32, ndim=1)


def _f32(v: float) -> _Raw:
    return _Raw(struct.unpack("<I", struct.pack("<f", v))[0])


def test_vector_plan_is_chosen_from_the_access_pattern_and_shown_in_the_ir():
    from kiln.driver import lower_kernel
    from kiln.ir.printer import format_ir
    e = EmulatedKernel(vsaxpy, (kl.f32, F1, F1))
    loop = e.kir.kernel.body[0]
    assert loop.plan.vector is not None and loop.plan.vector.width >= 2
    assert set(loop.plan.vector.arrays) == {"x", "y"}
    assert "gpu vector x" in format_ir(e.kir)
    # loops with reductions keep more loads in flight (they run one wave of blocks); lowered
    # only: the emulator cannot run block reductions
    red = lower_kernel(total_of, (F1, F1)).kernel.body[0].plan
    assert red.reductions and red.vector.width > loop.plan.vector.width
    s5 = EmulatedKernel(stencil5, (A2, A2)).kir
    assert "gpu coarsen dim 0 x" in format_ir(s5) and "gpu vector x" in format_ir(s5)
    # neither a strided last dimension nor a transposed access gives adjacent lanes, and a body
    # that reassigns the variable would move its lanes away from the alignment they claim
    for kernel in (strided_cols, transposed):
        assert EmulatedKernel(kernel, (A2, A2)).kir.kernel.body[0].plan.vector is None
    assert EmulatedKernel(reassigned, (F1,)).kir.kernel.body[0].plan.vector is None


@kl.kernel
def reassigned(x: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0] - 1):
        i = i + 1
        x[i] = 1.0


@kl.kernel
def total_of(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]


@kl.kernel
def strided_cols(u: kl.ndarray(kl.f64, ndim=2), v: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange(u.shape[0], (0, u.shape[1], 2)):
        v[i, j] = u[i, j]


@kl.kernel
def transposed(u: kl.ndarray(kl.f64, ndim=2), v: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange(u.shape[0], u.shape[1]):
        v[j, i] = u[j, i]


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 8, 13, 64, 67])
@pytest.mark.parametrize("force", [True, False])
def test_vector_lanes_and_partial_groups_1d(n, force):
    rng = np.random.default_rng(n)
    x, y = at_offset(n, np.float32, 0), at_offset(n, np.float32, 0)
    x[:], y[:] = rng.random(n), rng.random(n)
    want = np.float32(1.5) * x + y
    EmulatedKernel(vsaxpy, (kl.f32, F1, F1), force_vector=force).run(_f32(1.5), x, y, block=3, grid=2)
    np.testing.assert_array_equal(y, want)
    want = y.copy()
    want[3:] = x[1:-2] * np.float32(2.0) + x[:-3]       # (empty for n <= 3)
    EmulatedKernel(vshifted, (F1, F1), force_vector=force).run(x, y, block=3, grid=2)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("n", [0, 2, 5, 9, 16])
def test_vector_loop_with_a_negative_start(n):
    e = EmulatedKernel(vnegative, (kl.ndarray(kl.f64, ndim=1),) * 2, force_vector=True)
    x = at_offset(n, np.float64, 0)
    x[:] = np.arange(n)
    y = at_offset(n, np.float64, 0)
    e.run(x, y, block=2, grid=2)
    np.testing.assert_array_equal(y, np.arange(n) + 1.0)


def test_vector_path_runs_only_for_aligned_arrays():
    e = EmulatedKernel(vsaxpy, (kl.f32, F1, F1))
    cases = [(at_offset(40, np.float32, 0), at_offset(40, np.float32, 0), 1),   # aligned: vector
             (at_offset(41, np.float32, 1)[:40], at_offset(40, np.float32, 0), 0),   # x 4 bytes off
             (at_offset(80, np.float32, 0)[::2], at_offset(40, np.float32, 0), 0)]   # x strided
    for x, y, vector in cases:
        x[:] = np.arange(40)
        y[:] = 1.0
        before = e.vector_runs.value
        e.run(_f32(2.0), x, y, block=4, grid=1)
        np.testing.assert_array_equal(y, 2.0 * np.arange(40, dtype=np.float32) + 1.0)
        assert e.vector_runs.value - before == (4 if vector else 0)      # every thread of the grid


@pytest.mark.parametrize("shape", [(3, 3), (10, 8), (11, 40), (26, 12), (37, 29), (9, 5)])
@pytest.mark.parametrize("force", [True, False])
def test_vectorised_coarsened_stencil_matches_numpy(shape, force):
    e = EmulatedKernel(stencil5, (A2, A2), force_vector=force)
    u = at_offset(shape, np.float64, 0)
    u[:] = np.random.default_rng(7).random(shape)
    v = at_offset(shape, np.float64, 0)
    e.run(u, v, block=5, grid=3)
    np.testing.assert_array_equal(v, _ref5(u))


def test_vectorised_locals_and_lazy_reads_match_numpy():
    e = EmulatedKernel(stencil_locals, (A2, kl.ndarray(kl.f64, ndim=1), A2), force_vector=True)
    assert e.kir.kernel.body[0].plan.vector is not None
    shape = (21, 16)
    rng = np.random.default_rng(8)
    u = at_offset(shape, np.float64, 0)
    u[:] = rng.random(shape)
    w = at_offset(shape[1], np.float64, 0)
    w[:] = rng.random(shape[1])
    v = at_offset(shape, np.float64, 0)
    e.run(u, w, v, block=4, grid=3)
    np.testing.assert_allclose(v, _ref_locals(u, w), rtol=0, atol=1e-15)
