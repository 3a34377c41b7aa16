"""Graphs: recording, semantics (order, shared args, constants, sequential), modules, run checks."""

from __future__ import annotations

import numpy as np
import pytest

import kiln as kl


@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def total(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]


@kl.kernel
def scale(x: kl.ndarray(kl.f32, ndim=1), k: kl.f32):
    for i in range(x.shape[0]):
        x[i] = x[i] * k


@kl.kernel
def add_index(x: kl.ndarray(kl.f32, ndim=1), step: kl.i32):
    for i in range(x.shape[0]):
        x[i] = x[i] + step


@kl.kernel
def fill_any(x: kl.ndarray(), v: kl.f64):
    for i in range(x.shape[0]):
        x[i] = v


X = kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",))
Y = kl.Arg("y", kl.ndarray(kl.f32, ndim=1), shape=("n",))
A = kl.Arg("a", kl.f32)
OUT = kl.Arg("out", kl.ndarray(kl.f64, ndim=1), shape=(1,))


def _data(n: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random(n, dtype=np.float32) + 0.5, rng.random(n, dtype=np.float32) - 0.5


def test_issue_example_saxpy_then_total() -> None:
    g = kl.GraphBuilder()
    g.dispatch(saxpy, A, X, Y)
    g.dispatch(total, Y, OUT)
    step = g.compile()
    xs, ys = _data()
    acc = np.zeros(1)
    ref_y = np.float32(2.0) * xs + ys
    step.run({"a": 2.0, "x": xs, "y": ys, "out": acc})
    np.testing.assert_allclose(ys, ref_y, rtol=1e-6)
    assert acc[0] == pytest.approx(ref_y.astype(np.float64).sum(), rel=1e-6)
    assert [a.name for a in step.args] == ["a", "x", "y", "out"]
    assert "shape=(n,)" in repr(step.args[1])


def test_dispatch_order_matters() -> None:
    # (x + 1) * 3 versus (x * 3) + 1: the graph must run dispatches in recorded order
    g1 = kl.GraphBuilder()
    g1.dispatch(add_index, X, 1)
    g1.dispatch(scale, X, 3.0)
    g2 = kl.GraphBuilder()
    g2.dispatch(scale, X, 3.0)
    g2.dispatch(add_index, X, 1)
    xs, _ = _data()
    a, b = xs.copy(), xs.copy()
    g1.compile().run({"x": a})
    g2.compile().run({"x": b})
    np.testing.assert_allclose(a, (xs + 1) * 3, rtol=1e-6)
    np.testing.assert_allclose(b, xs * 3 + 1, rtol=1e-6)


def test_same_kernel_many_times_with_constants_and_shared_args() -> None:
    g = kl.GraphBuilder()
    for k in range(1, 6):
        g.dispatch(scale, X, float(k))     # constants baked in per dispatch
        g.dispatch(saxpy, A, Y, X)         # the same Arg feeds several dispatches
    step = g.compile()
    xs, ys = _data()
    x_ref, y_ref = xs.copy(), ys.copy()
    for k in range(1, 6):
        x_ref = x_ref * np.float32(k)
        x_ref = np.float32(0.5) * y_ref + x_ref
    step.run({"x": xs, "y": ys, "a": 0.5})
    np.testing.assert_allclose(xs, x_ref, rtol=1e-5)
    assert len(step.info.dispatches) == 10


def test_sequential_appended_as_unit() -> None:
    g = kl.GraphBuilder()
    seq = g.create_sequential()
    seq.dispatch(scale, X, 2.0)
    seq.dispatch(add_index, X, 1)
    g.append(seq)
    g.append(seq)
    g.dispatch(scale, X, 0.5)
    xs, _ = _data()
    ref = ((xs * 2 + 1) * 2 + 1) * np.float32(0.5)
    g.compile().run({"x": xs})
    np.testing.assert_allclose(xs, ref, rtol=1e-6)


def test_generic_kernel_specialised_per_arg_type() -> None:
    xf = kl.Arg("xf", kl.ndarray(kl.f32, ndim=1))
    xi = kl.Arg("xi", kl.ndarray(kl.i16, ndim=1))
    g = kl.GraphBuilder()
    g.dispatch(fill_any, xf, 1.5)
    g.dispatch(fill_any, xi, 7.0)
    step = g.compile()
    a, b = np.zeros(10, np.float32), np.zeros(3, np.int16)
    step.run({"xf": a, "xi": b})
    assert (a == 1.5).all() and (b == 7).all()


def test_run_checks_leave_arrays_untouched() -> None:
    g = kl.GraphBuilder()
    g.dispatch(saxpy, A, X, Y)
    g.dispatch(total, Y, OUT)
    step = g.compile()
    xs, ys = _data()
    before = ys.copy()
    with pytest.raises(kl.ArgumentValueError, match="argument 'out': dimension 0 must be 1"):
        step.run({"a": 1.0, "x": xs, "y": ys, "out": np.zeros(2)})
    with pytest.raises(kl.ArgumentError, match="missing argument 'out'"):
        step.run({"a": 1.0, "x": xs, "y": ys})
    with pytest.raises(kl.ArgumentError, match="argument 'out': expected dtype f64"):
        step.run({"a": 1.0, "x": xs, "y": ys, "out": np.zeros(1, np.float32)})
    with pytest.raises(kl.ArgumentValueError, match="argument 'y': dimension 0 is 999"):
        step.run({"a": 1.0, "x": xs, "y": ys[:999].copy(), "out": np.zeros(1)})
    np.testing.assert_array_equal(ys, before)


def test_builder_errors() -> None:
    g = kl.GraphBuilder()
    with pytest.raises(kl.ArgumentError, match="parameter 'x': expects kl.ndarray\\(kl.f32, ndim=1\\)"):
        g.dispatch(saxpy, A, kl.Arg("x", kl.ndarray(kl.f64, ndim=1)), Y)
    with pytest.raises(kl.ArgumentError, match="takes 3 arguments"):
        g.dispatch(saxpy, A, X)
    with pytest.raises(kl.ArgumentError, match="needs a kl.Arg"):
        g.dispatch(saxpy, A, np.zeros(3, np.float32), Y)
    with pytest.raises(kl.ArgumentValueError, match="constant 300 is out of range"):
        g.dispatch(kl.kernel(_u8_kernel), X, 300)
    with pytest.raises(kl.ArgumentError, match="expects kl.f32, got constant 'a'"):
        g.dispatch(saxpy, "a", X, Y)
    with pytest.raises(ValueError, match="shape"):
        kl.Arg("z", kl.ndarray(kl.f32, ndim=2), shape=("n",))
    with pytest.raises(ValueError, match="need a dtype and ndim"):
        kl.Arg("z", kl.ndarray())


def _u8_kernel(x: kl.ndarray(kl.f32, ndim=1), k: kl.u8):
    for i in range(x.shape[0]):
        x[i] = x[i] + k


def test_conflicting_arg_definitions() -> None:
    g = kl.GraphBuilder()
    g.dispatch(scale, X, 2.0)
    g.dispatch(scale, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), 2.0)
    with pytest.raises(kl.ArgumentError, match="two different graph arguments are both named 'x'"):
        g.compile()


def test_module_with_graphs_and_kernels(tmp_path) -> None:
    init = kl.GraphBuilder()
    init.dispatch(fill_any, X, 1.0)
    step = kl.GraphBuilder()
    step.dispatch(saxpy, A, X, Y)
    m = kl.Module()
    m.add_graph("init", init)
    m.add_graph("step", step)
    m.add_kernel(saxpy)
    m.add_kernel(fill_any, kl.ndarray(kl.f64, ndim=1), kl.f64, name="fill_f64")
    path = tmp_path / "m.kiln"
    m.save(path)
    mod = kl.load_module(path)
    assert sorted(mod.graphs) == ["init", "step"] and sorted(mod.kernels) == ["fill_f64", "saxpy"]
    xs, ys = _data()
    mod.graphs["init"].run({"x": xs})
    mod.graphs["step"].run({"a": 3.0, "x": xs, "y": ys})
    ref = 3.0 + _data()[1]
    np.testing.assert_allclose(ys, ref, rtol=1e-6)
    mod.kernels["saxpy"](1.0, xs, ys)
    np.testing.assert_allclose(ys, ref + 1, rtol=1e-6)
    z = np.zeros(4)
    mod.kernels["fill_f64"].run({"x": z, "v": 2.5})
    assert (z == 2.5).all()
    with pytest.raises(kl.ArtifactError, match="holds 2 graphs"):
        kl.load(path)


def test_portable_target_and_save_roundtrip(tmp_path) -> None:
    g = kl.GraphBuilder()
    g.dispatch(saxpy, A, X, Y)
    step = g.compile(target="x86-64-v2")
    path = tmp_path / "p.kiln"
    step.save(path)
    loaded = kl.load(path)
    assert loaded._module.target.cpu == "x86-64-v2"
    xs, ys = _data()
    ref = np.float32(2) * xs + ys
    loaded.run({"a": 2.0, "x": xs, "y": ys})
    np.testing.assert_allclose(ys, ref, rtol=1e-6)
    with pytest.raises(kl.TargetError, match="unknown target"):
        g.compile(target="pentium3")


@kl.func
def _plus100(v: kl.f32) -> kl.f32:
    return v + 100.0


def _make_bumper(c: float):
    @kl.func
    def bump(v: kl.f32) -> kl.f32:
        return v + c

    @kl.kernel
    def bumper(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            x[i] = _plus100(bump(x[i]))
    return bumper


def test_closures_sharing_a_name_stay_distinct() -> None:
    # Two kernels (and funcs) made by one factory share their IR names but not their constants.
    k1, k2 = _make_bumper(1.0), _make_bumper(20.0)
    g = kl.GraphBuilder()
    g.dispatch(k1, X)
    g.dispatch(k2, X)
    g.dispatch(k1, X)
    step = g.compile()
    x = np.zeros(4, np.float32)
    step.run({"x": x})
    assert (x == 1 + 100 + 20 + 100 + 1 + 100).all()
    names = [d.kernel for d in step.info.dispatches]
    assert names[0] == names[2] != names[1]


def test_rename_pass_alone() -> None:
    from kiln.driver import lower_kernel
    from kiln.ir import nodes as N
    from kiln.ir.analysis import walk
    from kiln.passes import make_names_unique
    t = (kl.ndarray(kl.f32, ndim=1),)
    a, b = lower_kernel(_make_bumper(1.0), t), lower_kernel(_make_bumper(2.0), t)
    assert a.kernel.name == b.kernel.name and a != b
    ua, ub, ua2 = make_names_unique([a, b, a])
    assert ua is a and ua2 is a and ub.kernel.name == a.kernel.name + "_2"
    calls = {n.func for n in walk(ub.kernel.body) if isinstance(n, N.Call)}
    assert calls <= {f.name for f in ub.funcs}
    assert {f.name for f in ub.funcs} != {f.name for f in a.funcs}
