"""Front-end constructs that the literal ports of the Taichi programs (examples/, issue 13) need,
each checked against numpy on a small case: kernel return values, `len()` of captured lists,
`kl.grouped` indices as integer vectors, vector fields read and written as vectors, struct-for
over an ndarray of vectors, vector parameters reassigned in generic funcs, lists of vectors,
vector locals of inlined funcs kept apart from the caller's, `kl.ndarray(dtype, shape=...)`."""

from __future__ import annotations

import numpy as np
import pytest

import kiln as kl
from kiln.errors import KernelTypeError

offsets = [kl.Vector([1, 0]), kl.Vector([0, 1]), kl.Vector([-1, 0])]
pos = kl.Vector.field(2, kl.f32, shape=4, name="tc_pos")
total = kl.field(kl.f32, shape=(), name="tc_total")


@kl.kernel
def sum_squares() -> kl.f32:
    total[None] = 0.0
    for i in pos:
        total[None] += pos[i].norm_sqr()
    return total[None] * 2.0


@kl.kernel
def count_offsets(out: kl.ndarray(kl.i32, ndim=2)):
    for I in kl.grouped(out):
        n = 0
        for k in kl.static(range(len(offsets))):
            J = I + offsets[k]                       # an ivec2 plus a captured vector
            if 0 <= J[0] < out.shape[0] and 0 <= J[1] < out.shape[1]:
                n += 1
        out[I] = n


def test_kernel_return_value_and_len_of_a_captured_list() -> None:
    pos.from_numpy(np.arange(8, dtype=np.float32).reshape(4, 2))
    assert sum_squares() == pytest.approx(2.0 * float((np.arange(8.0) ** 2).sum()))
    out = np.zeros((3, 4), np.int32)
    count_offsets(out)
    i, j = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    want = sum(((0 <= i + a) & (i + a < 3) & (0 <= j + b) & (j + b < 4)).astype(np.int32)
               for a, b in ((1, 0), (0, 1), (-1, 0)))
    np.testing.assert_array_equal(out, want)


def test_kernel_return_in_a_compiled_graph_is_a_field() -> None:
    g = kl.GraphBuilder()
    g.dispatch(sum_squares)
    cg = g.compile()
    cg.run({})
    assert float(cg.fields[sum_squares.result_field.name]) == pytest.approx(2.0 * float((np.arange(8.0) ** 2).sum()))


def test_kernel_return_without_annotation_is_a_type_error() -> None:
    @kl.kernel
    def bad(x: kl.ndarray(kl.f32, ndim=1)):
        return x[0]

    with pytest.raises(KernelTypeError, match="no return type annotation"):
        bad(np.zeros(2, np.float32))


@kl.func
def doubled_twice(z, c):
    z = z * 2.0 + c                                   # a vector parameter reassigned
    z.y += 1.0                                        # and a component of it
    return z


@kl.func
def weights(fx):
    d = fx * 3.0                                      # a vector local, also named d in the caller
    return [d, fx - 1.0]                              # a list of vectors


@kl.kernel
def vectors(x: kl.ndarray(kl.vec2, ndim=1), y: kl.ndarray(kl.vec3, ndim=1)):
    for p in x:                                       # struct-for over an ndarray of vectors
        d = y[p]
        z = doubled_twice(x[p], kl.vec2(1.0, 0.0))
        w = weights(x[p])
        x[p] = z + w[0] + w[1]
        y[p] = d * 2.0


def test_vector_params_lists_and_inlined_locals() -> None:
    x0 = np.arange(6, dtype=np.float32).reshape(3, 2)
    y0 = np.ones((3, 3), np.float32)
    x, y = x0.copy(), y0.copy()
    vectors(x, y)
    z = x0 * 2 + [1, 0] + [0, 1]
    np.testing.assert_allclose(x, z + 3 * x0 + (x0 - 1))
    np.testing.assert_array_equal(y, 2 * y0)      # the func's `d` did not overwrite the caller's


def test_host_ndarray_with_shape() -> None:
    a = kl.ndarray(kl.vec2, shape=5)
    assert a.shape == (5, 2) and a.dtype == np.float32 and not a.any()
    assert kl.ndarray(kl.i32, shape=(2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="without ndim"):
        kl.ndarray(kl.f32, ndim=1, shape=3)


@kl.kernel
def unpacked(out: kl.ndarray(kl.f32, ndim=2)):
    for I in kl.grouped(out):
        i, j = I                                      # a vector unpacks into its components
        a, b = kl.vec2(j, i)
        a, b = kl.vec2(b, a)                          # the right side is read before any assignment
        out[I] = 10.0 * a + b


def test_vector_unpacking() -> None:
    out = np.zeros((2, 3), np.float32)
    unpacked(out)
    i, j = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    np.testing.assert_array_equal(out, 10.0 * i + j)
