"""Small models and data helpers for the calibration tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def mlp(features: int = 4, batch: int | str = "N") -> onnx.ModelProto:
    """x[batch, features] -> MatMul W -> h -> Relu -> r -> Add c -> y."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((features, 3)).astype(np.float32), "W")
    c = numpy_helper.from_array(np.array([0.5, -1.0, 2.0], dtype=np.float32), "c")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "c"], ["y"], name="add"),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [w, c],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def identity(name: str = "x", shape: list[int | str] | None = None) -> onnx.ModelProto:
    """x -> Identity -> t -> Neg -> y: exposes the input data unchanged as ``t``."""
    shape = shape if shape is not None else ["N", "D"]
    g = helper.make_graph(
        [helper.make_node("Identity", [name], ["t"]), helper.make_node("Neg", ["t"], ["y"])],
        "identity",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def two_inputs() -> onnx.ModelProto:
    """x float [N, 3, 4] and ids int64 [N] -> Gather-free toy: y = x * 2, z = ids + 1."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("Add", ["ids", "one"], ["z"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4]),
            helper.make_tensor_value_info("z", TensorProto.INT64, ["N"]),
        ],
        [two, one],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def with_if() -> onnx.ModelProto:
    """s = x * 2; y = If(c) then s + s (``t_out``) else s - x (``e_out``)."""
    then_g = helper.make_graph(
        [helper.make_node("Add", ["s", "s"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["s", "x"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [3])],
    )
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["s"]),
            helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
        ],
        "main",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [two],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


class CountingReader:
    """A CalibrationDataReader that makes each batch on demand and counts the calls."""

    def __init__(self, batches: int, shape: tuple[int, ...] = (2, 4), name: str = "x", seed: int = 0) -> None:
        self.batches = batches
        self.shape = shape
        self.name = name
        self.seed = seed
        self.calls = 0
        self.rewinds = 0
        self._rng = np.random.default_rng(seed)
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        self.calls += 1
        if self._i >= self.batches:
            return None
        self._i += 1
        return {self.name: self._rng.standard_normal(self.shape).astype(np.float32)}

    def rewind(self) -> None:
        self.rewinds += 1
        self._rng = np.random.default_rng(self.seed)
        self._i = 0


class ListReader:
    """get_next() over a fixed list of feeds; no rewind()."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def one_line(excinfo: pytest.ExceptionInfo) -> str:  # type: ignore[type-arg]
    text = str(excinfo.value)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text
