"""Shape inference refresh."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pass_helpers import apply, const, make_model, vi

from onnxforge import modelio
from onnxforge.analysis import shapes as analysis_shapes
from onnxforge.ir import verify
from onnxforge.passes import ShapeInference
from onnxforge.passes.cleanup.shape_inference import merge_types


def _dims(v):
    return v.shape()


def _values(model):
    return {v.name: v for g in model.graph.all_graphs() for n in g for v in n.outputs if v is not None}


def _mlp(big: bool = False):
    k = 300 if big else 3
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r"]),
        helper.make_node("Shape", ["r"], ["shp"]),
        helper.make_node("Reshape", ["x", "new_shape"], ["xr"]),
        helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0),
    ]
    return make_model(
        nodes,
        [vi("x", shape=["N", 4])],
        [vi("y", shape=["N"]), vi("xr", shape=["M", 2])],
        [
            const("w", rng.standard_normal((4, k))),
            const("b", rng.standard_normal(k)),
            const("new_shape", [-1, 2], np.int64),
            const("axes", [1], np.int64),
        ],
    )


def test_untyped_intermediates_get_types_and_io_is_untouched():
    m = _mlp()
    a = apply(m, ShapeInference(), feeds={"x": np.ones((2, 4), np.float32)})
    assert a.result.modified is True
    vals = _values(a.model)
    assert _dims(vals["h"]) == ("N", 3) and vals["h"].elem_type() == TensorProto.FLOAT
    assert _dims(vals["r"]) == ("N", 3)
    assert _dims(vals["shp"]) == (2,) and vals["shp"].elem_type() == TensorProto.INT64
    assert a.stats["updated_types"] == 4  # h, h2, r, shp; y and xr are graph outputs
    assert a.after.graph.output == m.graph.output and a.after.graph.input == m.graph.input
    assert ShapeInference()(a.model).modified is False


def test_large_initializers_are_not_copied_or_changed():
    m = _mlp(big=True)
    model = modelio.load(m).model
    w = model.graph.initializers["w"]
    tensor = w.const
    raw = tensor.raw_data
    r = ShapeInference()(model)
    verify(model)
    assert r.modified is True
    assert w.const is tensor and tensor.raw_data == raw  # same object, same bytes
    assert _dims(_values(model)["h"]) == ("N", 300)  # typed from dims alone


def test_data_propagation_gives_static_shapes():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
        helper.make_node("Unsqueeze", ["d0", "zero1"], ["d0u"]),
        helper.make_node("Concat", ["d0u", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", shape=[2, 3, 4])],
        [vi("y", shape=["A", "B"])],
        [const("zero", 0, np.int64), const("zero1", [0], np.int64), const("minus1", [-1], np.int64)],
    )
    a = apply(m, ShapeInference())
    assert _dims(_values(a.model)["flat"]) == (2, 12)


def test_stale_type_is_replaced_and_compatible_detail_is_kept():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])]
    m = make_model(nodes, [vi("x", shape=[2, 3])], [vi("y", shape=[2, 3])], value_info=[vi("r", shape=[5])])
    a = apply(m, ShapeInference())
    assert _dims(_values(a.model)["r"]) == (2, 3)

    # inferred [unk, 3] completes with the old symbolic name where they agree
    inferred = helper.make_tensor_type_proto(TensorProto.FLOAT, [None, 3])
    old = helper.make_tensor_type_proto(TensorProto.FLOAT, ["batch", 3])
    merged = merge_types(inferred, old)
    assert [d.dim_param or d.dim_value for d in merged.tensor_type.shape.dim] == ["batch", 3]
    conflicting = helper.make_tensor_type_proto(TensorProto.INT64, ["batch", 3])
    assert merge_types(inferred, conflicting) == inferred
    assert merge_types(None, old) is None


def test_custom_op_types_are_kept_and_feed_inference():
    nodes = [
        helper.make_node("Mystery", ["x"], ["q"], domain="my.custom"),
        helper.make_node("Relu", ["q"], ["r"]),
        helper.make_node("Mystery", ["r"], ["unknown"], domain="my.custom"),
        helper.make_node("Neg", ["unknown"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", shape=[2])],
        [vi("y", shape=[7])],
        value_info=[vi("q", shape=[7])],
        domains=[("my.custom", 1)],
    )
    a = apply(m, ShapeInference(), equivalent=False)  # onnxruntime cannot run custom ops
    vals = _values(a.model)
    assert _dims(vals["q"]) == (7,)  # kept
    assert _dims(vals["r"]) == (7,)  # inferred through it
    assert vals["unknown"].type is None
    assert a.stats["untyped_values"] == 1


def test_subgraph_values_are_typed():
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t1"]), helper.make_node("Neg", ["t1"], ["t_out"])],
        "then",
        [],
        [vi("t_out", shape=[3])],
    )
    else_g = helper.make_graph([helper.make_node("Abs", ["x"], ["e_out"])], "else", [], [vi("e_out", shape=[3])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    m = make_model(nodes, [vi("x", shape=[3]), vi("c", TensorProto.BOOL, [])], [vi("y", shape=[3])])
    a = apply(m, ShapeInference(), feeds={"x": np.ones(3, np.float32), "c": np.array(True)})
    assert _dims(_values(a.model)["t1"]) == (3,)


def test_inference_failure_changes_nothing(monkeypatch, caplog):
    model = modelio.load(_mlp()).model

    def boom(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("synthetic failure")

    # onnx's inference runs in a helper process (onnxforge.ir.onnx_inference): patch our entry to it
    monkeypatch.setattr(analysis_shapes, "infer_shapes", boom)
    with caplog.at_level(logging.WARNING, logger="onnxforge.passes.cleanup.shape_inference"):
        r = ShapeInference()(model)
    assert r.modified is False
    assert model.version == 0
    assert "synthetic failure" in caplog.text
    assert all(v.type is None for v in _values(model).values() if v.name not in ("y", "xr"))


def test_options_are_validated():
    from onnxforge.errors import UsageError

    with pytest.raises(UsageError):
        ShapeInference(max_data_bytes=-1)
