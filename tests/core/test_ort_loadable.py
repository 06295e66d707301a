"""A compiled model that onnxruntime cannot load is not written when the input could be loaded:
one-line error, exit 1, no output file. When the input cannot be loaded either, a warning says
so and the output is written."""

from __future__ import annotations

import logging

import onnx
import pytest
from builders import mlp
from onnx import TensorProto, helper

import onnxforge
import onnxforge.commands.compile
from onnxforge import equivalence, modelio
from onnxforge.cli import main
from onnxforge.errors import ModelError
from onnxforge.passmanager import Pass, PassContext, PassResult


class BreakForOrt(Pass):
    """Gives every Relu an attribute Relu does not have: onnx's loader does not mind,
    onnxruntime refuses the model."""

    name = "break-for-ort"
    summary = "test only"
    lossless = True

    def run(self, model, ctx: PassContext) -> PassResult:  # type: ignore[no-untyped-def]
        for node in list(model.graph):
            if node.op_type == "Relu":
                node.set_attr("bogus", 1)
        return PassResult(True)


def test_library_save_refuses_a_model_onnxruntime_cannot_load(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    result = onnxforge.compile(src, BreakForOrt())
    with pytest.raises(ModelError, match="onnxruntime cannot load the compiled model") as info:
        result.save(tmp_path / "o.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "o.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    # the check can be turned off on purpose
    result.save(tmp_path / "o.onnx", check_runtime=False)
    assert (tmp_path / "o.onnx").exists()


def test_cli_refuses_a_model_onnxruntime_cannot_load(tmp_path, capsys, monkeypatch):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    real_compile = onnxforge.api.compile

    def breaking_compile(model, pipeline, **kw):  # type: ignore[no-untyped-def]
        return real_compile(model, BreakForOrt(), **kw)

    monkeypatch.setattr(onnxforge.commands.compile, "compile_model", breaking_compile)
    code = main(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "-q", "--no-cost"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("onnxforge: error:") and "onnxruntime" in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_input_that_onnxruntime_cannot_load_is_a_warning_not_an_error(tmp_path, caplog):
    # com.microsoft is a domain onnxruntime implements, but not this op: it cannot load the input
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NoSuchContribOp", ["r"], ["y"], domain="com.microsoft")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    result = onnxforge.compile(src, "lossless")
    with caplog.at_level(logging.WARNING, logger="onnxforge"):
        result.save(tmp_path / "o.onnx")
    assert (tmp_path / "o.onnx").exists()
    assert any("cannot load the input" in r.getMessage() for r in caplog.records), caplog.text


def test_large_models_skip_the_check(tmp_path, monkeypatch):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    monkeypatch.setattr(equivalence, "RUNTIME_CHECK_LIMIT", 10)
    result = onnxforge.compile(src, BreakForOrt())
    result.save(tmp_path / "o.onnx")  # too big to test-load cheaply: written unchecked
    assert (tmp_path / "o.onnx").exists()


def test_a_kernel_missing_on_cpu_is_not_a_verdict(tmp_path):
    """A CUDA-only contrib op (what --target cuda may emit) has no CPU kernel: the model is valid,
    so it is written."""
    import numpy as np
    from onnx import numpy_helper

    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    b = numpy_helper.from_array(np.ones((8,), np.float16), "B")
    g = helper.make_graph(
        [helper.make_node("BiasSplitGelu", ["x", "B"], ["y"], domain="com.microsoft")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4, 4])],
        [b],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    equivalence.check_runtime_loadable(m, src)  # no error
    modelio.save(
        m, tmp_path / "o.onnx", source=src, before_write=lambda p, store: equivalence.check_runtime_loadable(p, src, store)
    )
    assert (tmp_path / "o.onnx").exists()
