"""The compile driver's pass manager (kiln.driver.pipeline): per-stage timing, dumps named by
kernel and stage, the verifier after every pass, and errors tagged with their stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln import config
from kiln.driver import IR_PASSES, CompileOptions, Pipeline, lower_kernel
from kiln.errors import KernelError, KilnError
from kiln.ir.verify import IRVerifyError

F32_1 = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def scale(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        x[i] += a


def _graph() -> kl.GraphBuilder:
    g = kl.GraphBuilder()
    g.dispatch(scale, kl.Arg("a", kl.f32), kl.Arg("x", F32_1))
    return g


def test_pass_list_is_named_and_documented() -> None:
    assert [p.name for p in IR_PASSES] == ["lower_aug_stores", "fold_constants", "plan_parallel"]
    assert all(p.purpose for p in IR_PASSES)


def test_compile_dump_writes_every_stage(tmp_path: Path) -> None:
    with config.configured(dump_dir=str(tmp_path / "dumps")):
        step = _graph().compile(dump="ir,llvm,asm")
    x = np.ones(5, np.float32)
    step.run({"a": 3.0, "x": x})
    assert (x == 4).all()
    names = sorted(p.name for p in (tmp_path / "dumps").iterdir())
    assert names == ["main.00.graph.kir", "main.01.llvm_emit.ll", "main.02.llvm_optimise.ll", "main.03.object_emit.s",
                     "scale.00.front_end.kir", "scale.01.lower_aug_stores.kir", "scale.02.fold_constants.kir",
                     "scale.03.plan_parallel.kir"]
    front = (tmp_path / "dumps" / "scale.00.front_end.kir").read_text()
    lowered = (tmp_path / "dumps" / "scale.01.lower_aug_stores.kir").read_text()
    assert "x[i]:f32 add= a" in front                          # an AugStore before the pass
    assert "eval atomic_add(x[i], a)" in lowered                # an atomic in the parallel loop after it
    planned = (tmp_path / "dumps" / "scale.03.plan_parallel.kir").read_text()
    assert "# plan: " in planned                                # the loop's plan, decided by the pass
    assert "# cuda launches: loop stmts [0]" in planned
    assert "define" in (tmp_path / "dumps" / "main.02.llvm_optimise.ll").read_text()
    assert "kiln_" in (tmp_path / "dumps" / "main.03.object_emit.s").read_text()


def test_dump_option_rejects_unknown_kinds() -> None:
    with pytest.raises(KilnError, match="unknown dump kind"):
        _graph().compile(dump=["ir", "bytecode"])


def test_timing_table_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with config.configured(timing=True):
        _graph().compile()
    err = capsys.readouterr().err
    for stage in ("front end", "lower_aug_stores", "fold_constants", "verify", "llvm emit", "llvm optimise",
                  "object emit", "pack", "total"):
        assert f"  {stage} " in err, stage


def test_verify_runs_after_every_pass_when_asked() -> None:
    pipe = Pipeline(CompileOptions(verify_each_pass=True))
    pipe.lower("scale", lambda: scale.specialize((kl.f32, F32_1)))
    assert len(pipe.timings["verify"]) == 1 + len(IR_PASSES)     # front end output, then each pass
    once = Pipeline(CompileOptions(verify_each_pass=False))
    once.lower("scale", lambda: scale.specialize((kl.f32, F32_1)))
    assert len(once.timings["verify"]) == 1


def test_internal_errors_name_their_stage() -> None:
    pipe = Pipeline(CompileOptions())
    with pytest.raises(KilnError) as info, pipe.stage("llvm optimise"):
        raise KilnError("kiln.codegen produced invalid LLVM IR: boom")
    assert info.value.stage == "llvm optimise"
    assert "(compile stage: llvm optimise)" in str(info.value)
    with pytest.raises(IRVerifyError) as verr, pipe.stage("fold_constants"):
        raise IRVerifyError("bad node")
    assert "kiln compile stage: fold_constants" in getattr(verr.value, "__notes__", ["kiln compile stage: fold_constants"])[0]


def test_user_errors_keep_their_message_and_carry_the_stage() -> None:
    @kl.kernel
    def bad(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            x[i] = undefined_name  # noqa: F821 - the error under test

    with pytest.raises(KernelError) as info:
        lower_kernel(bad, (F32_1,))
    assert info.value.stage == "front end"
    assert "compile stage" not in str(info.value)
    assert "undefined_name" in str(info.value) and "^" in str(info.value)


def test_ptx_dump_and_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kiln.codegen.nvptx import nvptx_available
    if nvptx_available() is not None:
        pytest.skip("llvmlite has no NVPTX backend here")
    m = kl.Module(targets=["cuda"], cuda_archs=[])       # PTX only: no cubins asked for
    m.add_graph("main", _graph())
    with config.configured(dump_dir=str(tmp_path), timing=True):
        m.compile(dump="ptx")
    assert ".entry" in (tmp_path / "main.00.ptx.ptx").read_text()
    assert "  ptx " in capsys.readouterr().err
