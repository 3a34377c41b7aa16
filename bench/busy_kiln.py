"""kiln's kernels of bench/busy_bench.py's waterwave-like graph (module level: kiln evaluates the
annotations in the module's globals)."""

from busy_bench import AMP, DEPTH, DT, DX, GAMMA, INV_ETA2, KAPPA, LIGHT, RIPPLE_R2

import kiln as kl

F1 = kl.ndarray(kl.f32, ndim=1)
F2 = kl.ndarray(kl.f32, ndim=2)


@kl.kernel
def ripple(h: F2, cx: kl.f32, cy: kl.f32):
    for i, j in kl.ndrange((1, h.shape[0] - 1), (1, h.shape[1] - 1)):
        dx = kl.f32(i) - cx
        dy = kl.f32(j) - cy
        r2 = dx * dx + dy * dy
        if r2 < RIPPLE_R2:
            h[i, j] = h[i, j] + AMP * kl.exp(-0.02 * r2)


@kl.kernel
def accelerate(h: F2, v: F2, acc: F2):
    for i, j in kl.ndrange((1, h.shape[0] - 1), (1, h.shape[1] - 1)):
        lap = (h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - 4.0 * h[i, j]) / (4.0 * DX * DX)
        acc[i, j] = KAPPA * lap - GAMMA * v[i, j]


@kl.kernel
def integrate(h: F2, v: F2, acc: F2):
    for i, j in kl.ndrange((1, h.shape[0] - 1), (1, h.shape[1] - 1)):
        v[i, j] = v[i, j] + acc[i, j] * DT
        h[i, j] = h[i, j] + v[i, j] * DT


@kl.kernel
def shade(h: F2, bg: F2, px: F2):
    for i, j in kl.ndrange((1, h.shape[0] - 1), (1, h.shape[1] - 1)):
        gx = (h[i + 1, j] - h[i - 1, j]) * (0.5 / DX)
        gy = (h[i, j + 1] - h[i, j - 1]) * (0.5 / DX)
        cos_i = kl.rsqrt(1.0 + gx * gx + gy * gy)
        cos_o = kl.sqrt(1.0 - (1.0 - cos_i * cos_i) * INV_ETA2)
        fr = (1.0 - cos_i) * (1.0 - cos_i)
        k = kl.min(kl.max(int(kl.f32(i) + gx * cos_o * DEPTH), 0), h.shape[0] - 1)
        m = kl.min(kl.max(int(kl.f32(j) + gy * cos_o * DEPTH), 0), h.shape[1] - 1)
        px[i, j] = (1.0 - fr) * bg[k, m] + fr * LIGHT



@kl.kernel
def saxpy(a: kl.f32, x: F1, y: F1):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


def _tiny(c: float) -> kl.Kernel:
    @kl.kernel
    def step(y: F1):
        for i in range(y.shape[0]):
            y[i] = y[i] * 1.0001 + c
    return step


def tiny_kernels() -> list[kl.Kernel]:
    """Ten distinct tiny kernels of 16 elements (serial: below the parallel threshold)."""
    return [_tiny(0.1 * (c + 1)) for c in range(10)]


@kl.kernel
def blur(a: F2, b: F2):
    for i, j in kl.ndrange((1, a.shape[0] - 1), (1, a.shape[1] - 1)):
        b[i, j] = 0.2 * (a[i, j] + a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, j + 1])
