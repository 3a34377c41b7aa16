"""GPU atomics that LLVM's NVPTX backend would lower to compare-and-swap loops, written with
native integer atomics instead (kiln.codegen.nvptx uses them where a reduction flushes)."""

from __future__ import annotations

from llvmlite import ir

from kiln.codegen.llvm_util import DOUBLE


def float_minmax_atomic(b: ir.IRBuilder, is_max: bool, ptr: ir.Value, val: ir.Value) -> None:
    """Atomic max (or min) of the f32/f64 `val` into `*ptr` with ONE native integer atomic: LLVM
    lowers a float `atomicrmw fmax` on NVPTX to a compare-and-swap loop, which retries under
    contention (every block's leader flushes to one address at the end of a reduction). Floats
    with the sign bit clear order as signed integers, and above every float with it set; those
    order as unsigned integers, reversed. So max(old, v) is a signed max when v's sign bit is
    clear, else an unsigned min (min: signed min, else unsigned max). A NaN `val` changes
    nothing (the `maxnum` rule of the float atomics); a NaN already stored stays (unlike
    `maxnum`), which only a NaN written into the result before the kernel can meet."""
    ity = ir.IntType(64 if val.type == DOUBLE else 32)
    fn = b.function
    bits = b.bitcast(val, ity)
    is_num = b.fcmp_ordered("ord", val, val)
    positive_bb, negative_bb, done_bb = (fn.append_basic_block(f"fminmax.{n}") for n in ("pos", "neg", "done"))
    check_bb = fn.append_basic_block("fminmax.sign")
    b.cbranch(is_num, check_bb, done_bb)
    b.position_at_end(check_bb)
    b.cbranch(b.icmp_signed(">=", bits, ir.Constant(ity, 0)), positive_bb, negative_bb)
    for bb, op in ((positive_bb, "max" if is_max else "min"), (negative_bb, "umin" if is_max else "umax")):
        b.position_at_end(bb)
        b.atomic_rmw(op, ptr, bits, "monotonic")
        b.branch(done_bb)
    b.position_at_end(done_bb)
