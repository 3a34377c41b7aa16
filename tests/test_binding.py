"""Argument checks of the runtime binder, without compiling anything."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kiln.abi import ParamLayout, layout_params
from kiln.artifact.manifest import ParamInfo
from kiln.errors import ArgumentError, ArgumentValueError
from kiln.runtime.binding import ArgBinder, data_pointer
from kiln.types import NdArrayType, f32, f64, i32, u8
from kiln.types import bool_ as kbool


def _binder(shape_x=("n",), shape_y=("n",)) -> ArgBinder:
    lay = layout_params([("a", f32), ("x", NdArrayType(f32, 1)), ("y", NdArrayType(f32, 1)), ("k", u8),
                         ("flag", kbool), ("n2", i32), ("img", NdArrayType(f64, 2))])
    access = {"x": "read", "y": "write", "img": "readwrite"}
    shapes = {"x": shape_x, "y": shape_y, "img": (None, 3)}
    return ArgBinder(tuple(ParamInfo(p, access.get(p.name, "read"), shapes.get(p.name)) for p in lay), "graph 'g'")


def _args(**over):
    base = {"a": 2.0, "x": np.ones(5, np.float32), "y": np.zeros(5, np.float32), "k": 7, "flag": True, "n2": -4,
            "img": np.zeros((2, 3))}
    base.update(over)
    return base


def test_pack_layout() -> None:
    args = _args()
    block = _binder().pack(args)
    vals = struct.unpack("<f4xQqqQqqB7x?7xi4xQqqqq", block)   # arrays: data, extents, element strides
    assert vals[0] == 2.0
    assert vals[1] == data_pointer(args["x"]) == args["x"].ctypes.data
    assert vals[2:4] == (5, 1) and vals[5:7] == (5, 1)
    assert vals[7:10] == (7, True, -4)
    assert vals[11:] == (2, 3, 3, 1)


def test_data_pointer_of_views() -> None:
    a = np.arange(100, dtype=np.float32)
    for v in (a, a[10:], a[::1][3:50], a.reshape(10, 10)[4]):
        assert data_pointer(v) == v.ctypes.data


@pytest.mark.parametrize("over,exc,msg", [
    ({"x": np.ones(5, np.float64)}, ArgumentError, "argument 'x': expected dtype f32, got float64"),
    ({"x": np.ones((5, 1), np.float32)}, ArgumentError, "argument 'x': expected a 1-D array, got 2-D"),
    ({"x": [1.0, 2.0]}, ArgumentError, "argument 'x': expected a numpy.ndarray .*of f32 with ndim=1, got list"),
    ({"y": np.broadcast_to(np.zeros(1, np.float32), (5,))}, ArgumentValueError, "argument 'y': array is read-only"),
    ({"y": np.ones(6, np.float32)}, ArgumentValueError, "argument 'y': dimension 0 is 6 but shape symbol 'n' is 5"),
    ({"img": np.zeros((2, 4))}, ArgumentValueError, "argument 'img': dimension 1 must be 3"),
    ({"k": 256}, ArgumentValueError, "argument 'k': 256 is out of range for u8"),
    ({"k": -1}, ArgumentValueError, "argument 'k': -1 is out of range for u8"),
    ({"k": 1.5}, ArgumentError, "argument 'k': expected an integer for u8, got float"),
    ({"n2": 2**31}, ArgumentValueError, "argument .n2.: 2147483648 is out of range for i32"),
    ({"a": "2"}, ArgumentError, "argument 'a': expected a number for f32, got str"),
    ({"a": 1e300}, ArgumentValueError, "argument 'a': 1e\\+300 is out of range for f32"),
    ({"flag": 1}, ArgumentError, "argument 'flag': expected a bool, got int"),
])
def test_bad_arguments(over, exc, msg) -> None:
    with pytest.raises(exc, match="graph 'g': " + msg):
        _binder().pack(_args(**over))


def test_readonly_written_array_refused_but_readonly_input_ok() -> None:
    y = np.zeros(5, np.float32)
    y.flags.writeable = False
    with pytest.raises(ArgumentValueError, match="argument 'y': array is read-only but the compiled code writes"):
        _binder().pack(_args(y=y))
    x = np.ones(5, np.float32)
    x.flags.writeable = False
    _binder().pack(_args(x=x))   # x is only read


def test_missing_and_unknown_names() -> None:
    args = _args()
    del args["a"], args["k"]
    with pytest.raises(ArgumentError, match="missing arguments 'a', 'k'"):
        _binder().pack(args)
    with pytest.raises(ArgumentError, match="unknown argument 'zz'"):
        _binder().pack(_args(zz=1))
    with pytest.raises(ArgumentError, match="takes a dict"):
        _binder().pack([1, 2])  # type: ignore[arg-type]


def test_numpy_scalars_accepted() -> None:
    _binder().pack(_args(a=np.float32(1.5), k=np.uint8(3), flag=np.bool_(False), n2=np.int64(5)))
    _binder().pack(_args(a=3))  # ints are fine for float params


def test_param_layout_json() -> None:
    p = ParamLayout("x", "ndarray", "f32", 2, 8)
    assert p.size == 40 and p.to_json()["offset"] == 8     # data, 2 extents, 2 strides


# ---------------------------------------------------------------------------------------------
# The single homes of the rules every layer shares (kiln.types, bind_call_arguments)
# ---------------------------------------------------------------------------------------------

def test_dtype_ranges_have_one_home() -> None:
    from kiln.types import SCALAR_TYPES, int_range, value_range, wrap_int
    for t in SCALAR_TYPES:
        if t.is_float:
            assert value_range(t) == (-float(np.finfo(t.np_dtype).max), float(np.finfo(t.np_dtype).max))
            with pytest.raises(ValueError):
                int_range(t)
        elif t.is_bool:
            assert int_range(t) == (0, 1) == (t.min, t.max)
        else:
            info = np.iinfo(t.np_dtype)
            assert int_range(t) == (info.min, info.max) == (t.min, t.max) == value_range(t)
            assert wrap_int(info.max + 1, t) == info.min and wrap_int(info.min - 1, t) == info.max
            assert wrap_int(-1, t) == (-1 if t.kind == "i" else info.max)


def test_array_fit_rule() -> None:
    from kiln.types import ndarray
    assert ndarray(f32, 1).accepts(NdArrayType(f32, 1)) and ndarray().accepts(NdArrayType(u8, 3))
    assert ndarray(None, 2).accepts(NdArrayType(f64, 2)) and not ndarray(None, 2).accepts(NdArrayType(f64, 1))
    assert not ndarray(f32, None).accepts(NdArrayType(f64, 1))
    assert ndarray(f32, 1).mismatch(f64, 1, "float64") == "expected dtype f32, got float64 (kiln never converts arrays)"
    assert ndarray(f32, 1).mismatch(None, 1) == "expected dtype f32, got an unsupported dtype (kiln never converts arrays)"
    assert ndarray(f32, 1).mismatch(f32, 2, shape=(2, 3)) == "expected a 1-D array, got 2-D with shape (2, 3)"


def test_bind_call_arguments() -> None:
    from kiln.runtime.binding import bind_call_arguments
    names = ("x", "y", "a")
    assert bind_call_arguments("kernel 'k'", names, (1, 2), {"a": 3}) == {"x": 1, "y": 2, "a": 3}
    for args, kwargs, msg in [
        ((1, 2, 3, 4), {}, "kernel 'k': takes 3 arguments, got 4"),
        ((1, 2), {"a": 3, "b": 4}, "kernel 'k': has no parameter 'b'; parameters: x, y, a"),
        ((1, 2), {"x": 3}, "kernel 'k': argument 'x' given twice"),
        ((1,), {}, "kernel 'k': missing arguments 'y', 'a'; expected x, y, a"),
    ]:
        with pytest.raises(ArgumentError) as e:
            bind_call_arguments("kernel 'k'", names, args, kwargs)
        assert str(e.value) == msg
