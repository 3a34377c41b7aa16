"""What a 5-point f32 stencil on this GPU needs to reach the copy limit: hand-written CUDA C
variants (through CuPy/NVRTC) beside copies of the same bytes, all in one table, so that a
change to kiln's stencil code generation is chosen from measurements, not guesses.

    PYTHONPATH=. python3 bench/stencil_probe.py [--side 8192] [--reps 20]

Rows (bandwidth = bytes an ideal kernel moves / GPU time, as in bench/gpu_bench.py):
- copies: torch `copy_` (the anchor), a scalar grid-stride copy, the same shifted by one element
  (every warp access straddles a 128-byte line, like a stencil's interior `j >= 1`), and a
  float4 copy;
- stencils with R rows per thread (register strips) that differ in one thing each: 64-bit vs
  32-bit index arithmetic, interior-first (`j = 1 + t`, misaligned) vs aligned threads (`j = t`,
  edge threads idle), loads of the whole group before the stores, float4 columns, and a
  flattened grid-stride loop with a capped grid (what kiln emits) vs a full 2-D grid.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import gpu_time

SRC = r"""
extern "C" __global__ void copy1(const float* __restrict__ a, float* __restrict__ b, int n, int off) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x + off; i < n; i += gridDim.x * blockDim.x) b[i] = a[i];
}
extern "C" __global__ void copy4(const float4* __restrict__ a, float4* __restrict__ b, int n4) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) b[i] = a[i];
}
// strips, 64-bit indices, interior-first threads (j = 1 + t): the gpu_bench reference
template <int R> __global__ void strip_l(const float* __restrict__ u, float* __restrict__ v, long n0, long n1) {
    long j = blockIdx.x * (long)blockDim.x + threadIdx.x + 1, i0 = blockIdx.y * (long)R + 1;
    if (j >= n1 - 1) return;
    float up = u[(i0 - 1) * n1 + j], mid = u[i0 * n1 + j];
    for (long i = i0; i < i0 + R && i < n0 - 1; ++i) {
        long c = i * n1 + j; float dn = u[c + n1];
        v[c] = 0.25f * (up + dn + u[c - 1] + u[c + 1]) - mid; up = mid; mid = dn; }
}
// same, 32-bit indices
template <int R> __global__ void strip_i(const float* __restrict__ u, float* __restrict__ v, int n0, int n1) {
    int j = blockIdx.x * blockDim.x + threadIdx.x + 1, i0 = blockIdx.y * R + 1;
    if (j >= n1 - 1) return;
    float up = u[(i0 - 1) * n1 + j], mid = u[i0 * n1 + j];
    for (int i = i0; i < i0 + R && i < n0 - 1; ++i) {
        int c = i * n1 + j; float dn = u[c + n1];
        v[c] = 0.25f * (up + dn + u[c - 1] + u[c + 1]) - mid; up = mid; mid = dn; }
}
// 32-bit, aligned threads: thread t runs column t, the edge columns idle
template <int R> __global__ void strip_a(const float* __restrict__ u, float* __restrict__ v, int n0, int n1) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, i0 = blockIdx.y * R + 1;
    if (j < 1 || j >= n1 - 1) return;
    float up = u[(i0 - 1) * n1 + j], mid = u[i0 * n1 + j];
    for (int i = i0; i < i0 + R && i < n0 - 1; ++i) {
        int c = i * n1 + j; float dn = u[c + n1];
        v[c] = 0.25f * (up + dn + u[c - 1] + u[c + 1]) - mid; up = mid; mid = dn; }
}
// a full group's loads first, then its stores (what kiln's coarsened loop emits); `lng`: 64-bit
template <int R, typename I> __device__ void group(const float* u, float* v, I i0, I j, I n1) {
    float c[R + 2], l[R], r[R];
#pragma unroll
    for (int k = 0; k < R + 2; ++k) c[k] = u[(i0 - 1 + k) * n1 + j];
#pragma unroll
    for (int k = 0; k < R; ++k) { l[k] = u[(i0 + k) * n1 + j - 1]; r[k] = u[(i0 + k) * n1 + j + 1]; }
#pragma unroll
    for (int k = 0; k < R; ++k) v[(i0 + k) * n1 + j] = 0.25f * (c[k] + c[k + 2] + l[k] + r[k]) - c[k + 1];
}
template <typename I> __device__ void tail(const float* u, float* v, I i0, I i1, I j, I n1) {
    for (I i = i0; i < i1; ++i) { I c = i * n1 + j; v[c] = 0.25f * (u[c - n1] + u[c + n1] + u[c - 1] + u[c + 1]) - u[c]; }
}
template <int R, int ALIGN> __global__ void group2d(const float* __restrict__ u, float* __restrict__ v, int n0, int n1) {
    int j = blockIdx.x * blockDim.x + threadIdx.x + (ALIGN ? 0 : 1), i0 = blockIdx.y * R + 1;
    if (j < 1 || j >= n1 - 1) return;
    if (i0 + R <= n0 - 1) group<R, int>(u, v, i0, j, n1); else tail<int>(u, v, i0, n0 - 1, j, n1);
}
// flattened grid-stride over (groups x columns) with a capped grid, like kiln
template <int R, int ALIGN, typename I> __global__ void group_gs(const float* __restrict__ u, float* __restrict__ v, I n0, I n1) {
    I cols = ALIGN ? n1 : n1 - 2, groups = (n0 - 2 + R - 1) / R, total = groups * cols;
    for (I f = blockIdx.x * (I)blockDim.x + threadIdx.x; f < total; f += (I)gridDim.x * blockDim.x) {
        I g = f / cols, j = f - g * cols + (ALIGN ? 0 : 1);
        I i0 = 1 + g * R;
        if (j < 1 || j >= n1 - 1) continue;
        if (i0 + R <= n0 - 1) group<R, I>(u, v, i0, j, n1); else tail<I>(u, v, i0, n0 - 1, j, n1);
    }
}
// float4 columns: thread t runs columns 4t..4t+3 of R rows (aligned), neighbours from L1
template <int R> __global__ void vec4(const float* __restrict__ u, float* __restrict__ v, int n0, int n1) {
    int j = 4 * (blockIdx.x * blockDim.x + threadIdx.x), i0 = blockIdx.y * R + 1;
    if (j >= n1) return;
    if (i0 + R > n0 - 1) { for (int q = j; q < j + 4; ++q) if (q >= 1 && q < n1 - 1) tail<int>(u, v, i0, n0 - 1, q, n1); return; }
    float4 c[R + 2]; float l[R], r[R];
#pragma unroll
    for (int k = 0; k < R + 2; ++k) c[k] = *(const float4*)&u[(i0 - 1 + k) * n1 + j];
#pragma unroll
    for (int k = 0; k < R; ++k) { l[k] = j > 0 ? u[(i0 + k) * n1 + j - 1] : 0.f; r[k] = j + 4 < n1 ? u[(i0 + k) * n1 + j + 4] : 0.f; }
#pragma unroll
    for (int k = 0; k < R; ++k) {
        float4 a = c[k], m = c[k + 1], b = c[k + 2], o;
        o.x = 0.25f * (a.x + b.x + l[k] + m.y) - m.x; o.y = 0.25f * (a.y + b.y + m.x + m.z) - m.y;
        o.z = 0.25f * (a.z + b.z + m.y + m.w) - m.z; o.w = 0.25f * (a.w + b.w + m.z + r[k]) - m.w;
        float* p = &v[(i0 + k) * n1 + j];
        if (j > 0 && j + 4 < n1) *(float4*)p = o;
        else { if (j > 0) p[0] = o.x; p[1] = o.y; p[2] = o.z; if (j + 4 < n1) p[3] = o.w; }
    }
}
"""

NAMES = ["strip_l<8>", "strip_l<16>", "strip_i<16>", "strip_a<8>", "strip_a<16>",
         "group2d<8,0>", "group2d<8,1>", "group2d<16,1>",
         "group_gs<8,0,long>", "group_gs<8,1,long>", "group_gs<8,1,int>", "group_gs<16,1,int>",
         "vec4<4>", "vec4<8>", "vec4<16>"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=20)
    opts = ap.parse_args()
    import cupy as cp
    import torch
    side, reps = opts.side, opts.reps
    assert side % 4 == 0, "float4 rows need a side divisible by 4"
    n = side * side
    u = torch.rand(side, side, device="cuda")
    v = torch.zeros(side, side, device="cuda")
    cu, cv = cp.asarray(u), cp.asarray(v)
    ref = torch.zeros_like(v)
    ref[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]) - u[1:-1, 1:-1]
    mod = cp.RawModule(code=SRC, options=("-std=c++17",), name_expressions=NAMES)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows: list[tuple[str, float]] = []
    bw = lambda nbytes, t: nbytes / t / 1e9
    t_copy = gpu_time(torch, lambda: v.copy_(u), reps)
    copy_bw = bw(2 * 4 * n, t_copy)
    rows.append(("copy torch copy_ (anchor)", copy_bw))
    c1, c4 = mod.get_function("copy1"), mod.get_function("copy4")
    grid = (sms * 8 * 4,)
    rows.append(("copy, 1 float/thread, grid-stride", bw(2 * 4 * n, gpu_time(torch, lambda: c1(grid, (256,), (cu, cv, cp.int32(n), cp.int32(0))), reps))))
    rows.append(("copy, 1 float/thread, shifted 1 element", bw(2 * 4 * n, gpu_time(torch, lambda: c1(grid, (256,), (cu, cv, cp.int32(n), cp.int32(1))), reps))))
    rows.append(("copy, float4/thread", bw(2 * 4 * n, gpu_time(torch, lambda: c4(grid, (256,), (cu, cv, cp.int32(n // 4))), reps))))
    sb = 2 * 4 * n
    for name in NAMES:
        f = mod.get_function(name)
        r = int(name.split("<")[1].split(",")[0].rstrip(">"))
        big = "long" in name or name.startswith("strip_l")
        i = (lambda x: cp.int64(x)) if big else (lambda x: cp.int32(x))
        args = (cu, cv, i(side), i(side))
        if name.startswith("group_gs"):
            runs = [(f"{name}, grid {w} waves", (sms * 8 * w,)) for w in (1, 4, 16)]
        elif name.startswith("vec4"):
            runs = [(name, ((side // 4 + 255) // 256, (side - 2 + r - 1) // r))]
        else:
            runs = [(name, ((side + 255) // 256, (side - 2 + r - 1) // r))]
        for label, g in runs:
            v.zero_()
            f(g, (256,), args)
            torch.cuda.synchronize()
            ok = torch.allclose(v, ref, atol=1e-5)
            t = gpu_time(torch, lambda f=f, g=g, args=args: f(g, (256,), args), reps)
            rows.append((f"stencil {label}{'' if ok else '  WRONG RESULT'}", bw(sb, t)))
    print(f"\n5-point stencil probe, {side}^2 f32, on {torch.cuda.get_device_name()}")
    for label, b in rows:
        print(f"{label:<44} {b:>8,.0f} GB/s  {100 * b / copy_bw:5.1f}% of copy")


if __name__ == "__main__":
    main()
