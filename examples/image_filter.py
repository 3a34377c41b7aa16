"""An image-filter pipeline (Taichi AOT demo style): separable Gaussian blur, Sobel edges, and a
threshold into a u8 mask, as one kiln graph saved to a file and run on numpy images.

    python examples/image_filter.py
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import kiln as kl

IMG = kl.ndarray(kl.f32, ndim=2)


@kl.func
def at(img: kl.ndarray(kl.f32, ndim=2), i: kl.i64, j: kl.i64) -> kl.f32:
    # clamp-to-edge sampling
    ii = kl.min(kl.max(i, 0), img.shape[0] - 1)
    jj = kl.min(kl.max(j, 0), img.shape[1] - 1)
    return img[ii, jj]


@kl.kernel
def blur_rows(src: IMG, dst: IMG):
    for i, j in kl.ndrange(src.shape[0], src.shape[1]):
        dst[i, j] = (0.0625 * at(src, i, j - 2) + 0.25 * at(src, i, j - 1) + 0.375 * src[i, j]
                     + 0.25 * at(src, i, j + 1) + 0.0625 * at(src, i, j + 2))


@kl.kernel
def blur_cols(src: IMG, dst: IMG):
    for i, j in kl.ndrange(src.shape[0], src.shape[1]):
        dst[i, j] = (0.0625 * at(src, i - 2, j) + 0.25 * at(src, i - 1, j) + 0.375 * src[i, j]
                     + 0.25 * at(src, i + 1, j) + 0.0625 * at(src, i + 2, j))


@kl.kernel
def sobel_mask(src: IMG, mask: kl.ndarray(kl.u8, ndim=2), threshold: kl.f32, edges: kl.ndarray(kl.i64, ndim=1)):
    for i, j in kl.ndrange(src.shape[0], src.shape[1]):
        gx = (at(src, i - 1, j + 1) + 2.0 * at(src, i, j + 1) + at(src, i + 1, j + 1)
              - at(src, i - 1, j - 1) - 2.0 * at(src, i, j - 1) - at(src, i + 1, j - 1))
        gy = (at(src, i + 1, j - 1) + 2.0 * at(src, i + 1, j) + at(src, i + 1, j + 1)
              - at(src, i - 1, j - 1) - 2.0 * at(src, i - 1, j) - at(src, i - 1, j + 1))
        edge = kl.sqrt(gx * gx + gy * gy) > threshold
        mask[i, j] = 255 if edge else 0
        if edge:
            edges[0] += 1


def build() -> kl.GraphBuilder:
    image = kl.Arg("image", IMG, shape=("h", "w"))
    tmp = kl.Arg("tmp", IMG, shape=("h", "w"))
    smooth = kl.Arg("smooth", IMG, shape=("h", "w"))
    g = kl.GraphBuilder()
    g.dispatch(blur_rows, image, tmp)
    g.dispatch(blur_cols, tmp, smooth)
    g.dispatch(sobel_mask, smooth, kl.Arg("mask", kl.ndarray(kl.u8, ndim=2), shape=("h", "w")),
               kl.Arg("threshold", kl.f32), kl.Arg("edges", kl.ndarray(kl.i64, ndim=1), shape=(1,)))
    return g


def reference(image: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    f = np.float32
    w = [f(0.0625), f(0.25), f(0.375), f(0.25), f(0.0625)]

    def blur(a: np.ndarray, axis: int) -> np.ndarray:
        pad = [(0, 0), (0, 0)]
        pad[axis] = (2, 2)
        p = np.pad(a, pad, mode="edge")
        n = a.shape[axis]
        take = [p.take(range(k, k + n), axis=axis) for k in range(5)]
        return w[0] * take[0] + w[1] * take[1] + w[2] * a + w[3] * take[3] + w[4] * take[4]

    s = blur(blur(image, 1), 0)
    p = np.pad(s, 1, mode="edge")
    h, wd = s.shape

    def sh(di: int, dj: int) -> np.ndarray:
        return p[1 + di:1 + di + h, 1 + dj:1 + dj + wd]

    gx = sh(-1, 1) + f(2) * sh(0, 1) + sh(1, 1) - sh(-1, -1) - f(2) * sh(0, -1) - sh(1, -1)
    gy = sh(1, -1) + f(2) * sh(1, 0) + sh(1, 1) - sh(-1, -1) - f(2) * sh(-1, 0) - sh(-1, 1)
    return s, np.where(np.sqrt(gx * gx + gy * gy) > f(threshold), 255, 0).astype(np.uint8)


def main(h: int = 720, w: int = 1280) -> int:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = ((np.sin(xx / 37.0) * np.cos(yy / 23.0) > 0).astype(np.float32)
             + 0.1 * rng.random((h, w), dtype=np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "filter.kiln")
        build().compile().save(path)
        pipeline = kl.load(path)
    args = {"image": image, "tmp": np.empty_like(image), "smooth": np.empty_like(image),
            "mask": np.empty((h, w), np.uint8), "threshold": 0.5, "edges": np.zeros(1, np.int64)}
    pipeline.run(args)
    ref_smooth, ref_mask = reference(image, 0.5)
    smooth_err = float(np.abs(args["smooth"] - ref_smooth).max())
    mask_diff = int((args["mask"] != ref_mask).sum())
    print(f"image_filter: {h}x{w} image, {int(args['edges'][0])} edge pixels "
          f"({int((ref_mask == 255).sum())} in numpy); max |blur - numpy| = {smooth_err:.1e}, "
          f"mask pixels differing: {mask_diff}")
    # float rounding may flip a pixel sitting exactly at the threshold; nothing more
    ok = smooth_err < 1e-5 and mask_diff <= 0.0001 * h * w and int(args["edges"][0]) == int((args["mask"] == 255).sum())
    print("image_filter: OK" if ok else "image_filter: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
