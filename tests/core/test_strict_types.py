"""Models whose nodes break their operators' type constraints (``Add(float, int64)``) are refused
at load with one line naming the node, the op and the types, also inside subgraphs and with
external data; valid models (custom domains, big weights) still load."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import mlp
from onnx import TensorProto, helper, numpy_helper

from onnxforge import modelio
from onnxforge.cli import main
from onnxforge.errors import ModelError


def _add_float_int64(name: str = "add1") -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Add", ["r", "i"], ["y"], name=name)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_type_constraint_violation_is_refused_naming_node_op_and_types():
    with pytest.raises(ModelError) as info:
        modelio.load(_add_float_int64())
    msg = str(info.value)
    assert "\n" not in msg
    assert "'add1'" in msg and "Add" in msg and "float" in msg and "int64" in msg, msg


def test_nameless_node_is_named_by_its_index():
    with pytest.raises(ModelError, match=r"node 1 \(Add\).*float.*int64") as info:
        modelio.load(_add_float_int64(name=""))
    assert "\n" not in str(info.value)


def test_type_error_inside_a_subgraph_is_found():
    bad = _add_float_int64().graph
    then_g = helper.make_graph(list(bad.node), "then", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y2"], name="r2")], "else", [], [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2])]
    )
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["out"], name="branch", then_branch=then_g, else_branch=else_g)],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(ModelError, match=r"then_branch.*'add1' \(Add\).*float.*int64"):
        modelio.load(m)


def _matmul_int_weights(folder, external: bool):
    """x(float) MatMul W(int32): W is big (stubbed for the check) and mismatched."""
    w = numpy_helper.from_array(np.ones((256, 256), np.int32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = folder / "m.onnx"
    if external:
        onnx.save_model(m, path, save_as_external_data=True, location="m.bin", size_threshold=0)
    else:
        onnx.save(m, path)
    return path


@pytest.mark.parametrize("external", [False, True])
def test_big_and_external_weights_are_type_checked(tmp_path, external):
    path = _matmul_int_weights(tmp_path, external)
    with pytest.raises(ModelError, match=r"'mm' \(MatMul\).*float.*int32"):
        modelio.load(path)


def test_valid_models_still_load(tmp_path):
    modelio.load(mlp())
    # a custom-domain op with unknown types downstream is not a type error
    g = helper.make_graph(
        [
            helper.make_node("Mystery", ["x"], ["r"], domain="com.example"),
            helper.make_node("Add", ["r", "x"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    modelio.load(m)
    # stale value_info shapes are onnxruntime's business, not a type error
    m = mlp()
    m.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [7, 7]))
    modelio.load(m)


def test_cli_refuses_type_errors_with_one_line(tmp_path, capsys):
    src = tmp_path / "bad.onnx"
    onnx.save(_add_float_int64(), src)
    code = main(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("onnxforge: error:") and "'add1'" in err, err
    assert not (tmp_path / "o.onnx").exists()
