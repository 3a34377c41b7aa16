"""Micro-benchmark for kiln's CPU threading strategy (see bench/NOTES.md): `python bench/threads_micro.py`.

Built with llvmlite directly (no kiln): a saxpy body `void body(ptr ctx, i64 lo, i64 hi)`, an empty
body, and a driver `run_parallel(fn, ctx, n, nthreads)` that calls GOMP_parallel(trampoline, data,
nthreads, 0) through a function-pointer global set from ctypes (libgomp.so.1); the trampoline splits
[0, n) with omp_get_thread_num / omp_get_num_threads, also called through pointer globals. Compared:
  - GOMP, called from Python through ctypes (what a Python-side graph runner pays per kernel),
  - GOMP, called in a native loop (`bench_loop`: what a native graph runner pays per kernel),
  - a persistent pool of Python threads calling the native body through ctypes (GIL released),
  - a serial ctypes call of the body.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time

import llvmlite.binding as llvm
import numpy as np

IR = r"""
@gomp_parallel_ptr = global ptr null
@omp_thread_num_ptr = global ptr null
@omp_num_threads_ptr = global ptr null

define void @saxpy_body(ptr %ctx, i64 %lo, i64 %hi) {
entry:
  %px = load ptr, ptr %ctx
  %py.addr = getelementptr inbounds ptr, ptr %ctx, i64 1
  %py = load ptr, ptr %py.addr
  %pa.addr = getelementptr inbounds ptr, ptr %ctx, i64 2
  %a = load float, ptr %pa.addr
  %empty = icmp sge i64 %lo, %hi
  br i1 %empty, label %exit, label %loop
loop:
  %i = phi i64 [ %lo, %entry ], [ %i.next, %loop ]
  %xp = getelementptr inbounds float, ptr %px, i64 %i
  %yp = getelementptr inbounds float, ptr %py, i64 %i
  %xv = load float, ptr %xp
  %yv = load float, ptr %yp
  %m = fmul float %a, %xv
  %r = fadd float %m, %yv
  store float %r, ptr %yp
  %i.next = add nsw i64 %i, 1
  %done = icmp sge i64 %i.next, %hi
  br i1 %done, label %exit, label %loop
exit:
  ret void
}

define void @empty_body(ptr %ctx, i64 %lo, i64 %hi) {
  ret void
}

; data = { ptr fn, ptr ctx, i64 n }
define internal void @trampoline(ptr %data) {
entry:
  %fn = load ptr, ptr %data
  %ctx.addr = getelementptr inbounds ptr, ptr %data, i64 1
  %ctx = load ptr, ptr %ctx.addr
  %n.addr = getelementptr inbounds ptr, ptr %data, i64 2
  %n = load i64, ptr %n.addr
  %tnf = load ptr, ptr @omp_thread_num_ptr
  %ntf = load ptr, ptr @omp_num_threads_ptr
  %tid32 = call i32 %tnf()
  %nt32 = call i32 %ntf()
  %tid = sext i32 %tid32 to i64
  %nt = sext i32 %nt32 to i64
  %ntm1 = sub i64 %nt, 1
  %np = add i64 %n, %ntm1
  %chunk = sdiv i64 %np, %nt
  %lo = mul i64 %tid, %chunk
  %hi0 = add i64 %lo, %chunk
  %c = icmp slt i64 %hi0, %n
  %hi = select i1 %c, i64 %hi0, i64 %n
  %has = icmp slt i64 %lo, %hi
  br i1 %has, label %work, label %exit
work:
  call void %fn(ptr %ctx, i64 %lo, i64 %hi)
  br label %exit
exit:
  ret void
}

define void @run_parallel(ptr %fn, ptr %ctx, i64 %n, i32 %nthreads) {
entry:
  %data = alloca [3 x i64], align 8
  store ptr %fn, ptr %data
  %c.addr = getelementptr inbounds ptr, ptr %data, i64 1
  store ptr %ctx, ptr %c.addr
  %n.addr = getelementptr inbounds ptr, ptr %data, i64 2
  store i64 %n, ptr %n.addr
  %gp = load ptr, ptr @gomp_parallel_ptr
  %null = icmp eq ptr %gp, null
  br i1 %null, label %serial, label %par
par:
  call void %gp(ptr @trampoline, ptr %data, i32 %nthreads, i32 0)
  ret void
serial:
  call void %fn(ptr %ctx, i64 0, i64 %n)
  ret void
}

define void @bench_loop(ptr %fn, ptr %ctx, i64 %n, i32 %nthreads, i64 %iters) {
entry:
  %z = icmp sle i64 %iters, 0
  br i1 %z, label %exit, label %loop
loop:
  %k = phi i64 [ 0, %entry ], [ %k.next, %loop ]
  call void @run_parallel(ptr %fn, ptr %ctx, i64 %n, i32 %nthreads)
  %k.next = add i64 %k, 1
  %d = icmp sge i64 %k.next, %iters
  br i1 %d, label %exit, label %loop
exit:
  ret void
}
"""

BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)
LOOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int64)


def build():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    mod = llvm.parse_assembly(IR)
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    return engine


class PyPool:
    """A persistent pool of Python threads; each calls the native body through ctypes for its chunk."""

    def __init__(self, nthreads: int, body_addr: int):
        self.nthreads = nthreads
        self.body = BODY(body_addr)
        self.start = [threading.Semaphore(0) for _ in range(nthreads)]
        self.done = threading.Semaphore(0)
        self.job: tuple[int, int] = (0, 0)
        self.alive = True
        self.threads = [threading.Thread(target=self._worker, args=(t,), daemon=True) for t in range(nthreads)]
        for th in self.threads:
            th.start()

    def _worker(self, t: int) -> None:
        while True:
            self.start[t].acquire()
            if not self.alive:
                return
            ctx, n = self.job
            chunk = (n + self.nthreads - 1) // self.nthreads
            lo, hi = t * chunk, min(n, (t + 1) * chunk)
            if lo < hi:
                self.body(ctx, lo, hi)  # ctypes releases the GIL during the call
            self.done.release()

    def run(self, ctx: int, n: int) -> None:
        self.job = (ctx, n)
        for s in self.start:
            s.release()
        for _ in range(self.nthreads):
            self.done.acquire()

    def close(self) -> None:
        self.alive = False
        for s in self.start:
            s.release()
        for th in self.threads:
            th.join()


def best_us(fn, reps: int, rounds: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / reps / 1e3)
    return best


def idle_us(fn, reps: int = 40, gap_s: float = 0.005) -> float:
    """Median latency of one call made after `gap_s` of idleness (workers asleep, not spinning)."""
    fn()
    ts = []
    for _ in range(reps):
        time.sleep(gap_s)
        t0 = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e3


def median_ms(fn, reps: int = 10) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e6


def main() -> None:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    engine = build()
    addr = {name: engine.get_function_address(name) for name in ("saxpy_body", "empty_body", "run_parallel",
                                                                  "bench_loop")}
    try:
        gomp = ctypes.CDLL("libgomp.so.1")
        for glob, sym in (("gomp_parallel_ptr", "GOMP_parallel"), ("omp_thread_num_ptr", "omp_get_thread_num"),
                          ("omp_num_threads_ptr", "omp_get_num_threads")):
            ctypes.c_void_p.from_address(engine.get_global_value_address(glob)).value = \
                ctypes.cast(getattr(gomp, sym), ctypes.c_void_p).value
        gomp_note = "libgomp.so.1 loaded"
    except OSError as e:
        gomp = None
        gomp_note = f"libgomp missing ({e}); run_parallel falls back to a serial call"
    run_parallel = RUN(addr["run_parallel"])
    bench_loop = LOOP(addr["bench_loop"])
    body = BODY(addr["saxpy_body"])

    n = 1 << 24
    x = np.random.default_rng(0).random(n, dtype=np.float32)
    y = np.random.default_rng(1).random(n, dtype=np.float32)
    y_ref = np.float32(2.0) * x + y
    ctx_arr = (ctypes.c_uint64 * 3)(x.ctypes.data, y.ctypes.data, 0)
    ctypes.c_float.from_address(ctypes.addressof(ctx_arr) + 16).value = 2.0
    ctx = ctypes.addressof(ctx_arr)
    run_parallel(addr["saxpy_body"], ctx, n, nproc)
    assert np.allclose(y, y_ref), "saxpy body gave a wrong result"
    nbytes = 12 * n
    empty, saxpy = addr["empty_body"], addr["saxpy_body"]
    tiny = 16
    reps = 20000
    native_iters = 50000

    def native_us(nt: int) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter_ns()
            bench_loop(empty, ctx, tiny, nt, native_iters)
            best = min(best, (time.perf_counter_ns() - t0) / native_iters / 1e3)
        return best

    rows = []
    for nt in sorted({1, nproc}):
        label = f"(i/ii) GOMP_parallel via pointer global, {nt} thread(s)"
        lat_py = best_us(lambda nt=nt: run_parallel(empty, ctx, tiny, nt), reps)
        lat_nat = native_us(nt)
        lat_idle = idle_us(lambda nt=nt: run_parallel(empty, ctx, tiny, nt))
        ms = median_ms(lambda nt=nt: run_parallel(saxpy, ctx, n, nt))
        rows.append([label, f"{lat_py:.2f}", f"{lat_nat:.3f}", f"{lat_idle:.1f}", f"{nbytes / ms / 1e6:.1f}"])
    pool = PyPool(nproc, empty)
    lat_py = best_us(lambda: pool.run(ctx, tiny), reps // 4)
    lat_idle = idle_us(lambda: pool.run(ctx, tiny))
    pool.close()
    pool = PyPool(nproc, saxpy)
    ms = median_ms(lambda: pool.run(ctx, n))
    pool.close()
    rows.append([f"(iii) persistent pool of {nproc} Python threads + ctypes body", f"{lat_py:.2f}", "-",
                 f"{lat_idle:.1f}", f"{nbytes / ms / 1e6:.1f}"])
    empty_fn = BODY(empty)
    lat_py = best_us(lambda: empty_fn(ctx, 0, tiny), reps)
    ms = median_ms(lambda: body(ctx, 0, n))
    rows.append(["(iv) serial ctypes call of the body", f"{lat_py:.2f}", "-", "-", f"{nbytes / ms / 1e6:.1f}"])

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# threads_micro: {nproc} usable cores, load average {load}, {gomp_note}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')!r}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '')!r}\n")
    print("| strategy | empty region from Python, us | empty region, native loop, us | after 5 ms idle, us "
          "| saxpy 2**24 f32, GB/s (12 B/elem) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nempty region: n={tiny}; from Python: best of 5 means of {reps} ctypes calls (pool: {reps // 4}); "
          f"native loop: best of 5 means of {native_iters} calls inside bench_loop; idle: median of 40 calls "
          f"each after time.sleep(0.005); saxpy: median of 10 after warm-up.")


if __name__ == "__main__":
    main()
