"""One shape analysis: cached per model version by the analysis manager, used by the
shape-inference pass, the float16 conversion, the fusion rules and the cost model."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from onnxforge.analysis.shapes import GenericShapes, InferredTypes, ShapeTable, bind_inputs
from onnxforge.ir import from_proto
from onnxforge.passes import ShapeInference
from onnxforge.passmanager import AnalysisManager, PassContext


def _model():  # type: ignore[no-untyped-def]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0, 2])]
    return from_proto(helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]))


def test_inferred_types_are_cached_until_the_model_changes():
    m = _model()
    am = AnalysisManager()
    first = am.get(InferredTypes(), m)
    assert first.error is None and first.types["r"].tensor_type.elem_type == TensorProto.FLOAT
    assert am.get(InferredTypes(), m) is first and am.hits == 1
    m.graph.nodes[0].set_attr("tag", 1)
    assert am.get(InferredTypes(), m) is not first


def test_generic_shapes_give_distinct_sizes_to_distinct_symbols():
    m = _model()
    table = AnalysisManager().get(GenericShapes(), m)
    assert isinstance(table, ShapeTable)
    x_info, y_info = table.info(m.graph.inputs[0]), table.info(m.graph.outputs[0])
    assert x_info is not None and y_info is not None
    b, s, _ = x_info.shape
    assert b != s and y_info.shape == (s, b, 8)


def test_concrete_shapes_at_user_bindings():
    m = _model()
    table = ShapeTable(m, bind_inputs(m, {"x": (2, 5, 8)}))
    assert table.info(m.graph.outputs[0]).shape == (5, 2, 8)  # type: ignore[union-attr]


def test_the_pass_reads_the_shared_analysis():
    m = _model()
    ctx = PassContext()
    ShapeInference()(m, ctx)
    assert ctx.analyses.misses >= 1
    out = next(v for v in m.graph.values() if v.name == "r")
    assert isinstance(out.type, onnx.TypeProto) and out.type.tensor_type.elem_type == TensorProto.FLOAT
