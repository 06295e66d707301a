"""Default inputs for bench/tune/lower: declared types and shapes, realistic ranges."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.commands.inputs import default_dims, run_feeds
from onnxforge.errors import UsageError


def _embedding() -> onnx.ModelProto:
    table = numpy_helper.from_array(np.zeros((1000, 4), np.float32), "table")
    types = numpy_helper.from_array(np.zeros((2, 4), np.float32), "types")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["e"], name="emb"),
        helper.make_node("Gather", ["types", "token_type_ids"], ["t"], name="typ"),
        helper.make_node("Add", ["e", "t"], ["s"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "ax"], ["mu"]),
        helper.make_node("Mul", ["s", "mu"], ["y"]),
    ]
    ax = numpy_helper.from_array(np.array([-1], np.int64), "ax")
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ("input_ids", "token_type_ids", "attention_mask")]
    g = helper.make_graph(nodes, "emb", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [table, types, ax])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_sequence_dims_are_128_and_ids_span_the_table():
    m = _embedding()
    assert default_dims(m) == {"batch": 1, "sequence": 128}
    f = run_feeds(m)
    assert f["input_ids"].shape == (1, 128) and f["input_ids"].max() > 100 and f["input_ids"].max() < 1000
    assert set(np.unique(f["token_type_ids"])) <= {0, 1}
    assert set(np.unique(f["attention_mask"])) <= {0, 1} and f["attention_mask"][0, 0] == 1
    assert run_feeds(m, dims={"sequence": 7})["input_ids"].shape == (1, 7)
    assert run_feeds(m, shapes={"input_ids": (2, 3), "token_type_ids": (2, 3), "attention_mask": (2, 3)})["input_ids"].shape == (2, 3)


def test_given_arrays_are_checked():
    m = _embedding()
    ids = np.arange(6, dtype=np.int64).reshape(1, 6)
    assert run_feeds(m, given={"input_ids": ids})["input_ids"] is ids
    with pytest.raises(UsageError, match="not inputs of the model"):
        run_feeds(m, given={"pixels": ids})
    with pytest.raises(UsageError, match="is int32, the model declares int64"):
        run_feeds(m, given={"input_ids": ids.astype(np.int32)})
    with pytest.raises(UsageError, match="--shape names"):
        run_feeds(m, shapes={"nope": (1,)})
