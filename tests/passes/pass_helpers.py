"""Helpers shared by the pass tests: tiny model builders and a run-verify-compare wrapper."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge import modelio
from onnxforge.equivalence import assert_equivalent
from onnxforge.ir import Model, to_proto, verify
from onnxforge.passmanager import Pass, PassResult

FLOAT = TensorProto.FLOAT


def vi(name: str, elem: int = FLOAT, shape: Sequence[int | str | None] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def const(name: str, arr: np.ndarray | list | float, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    opset: int = 17,
    ir_version: int = 8,
    value_info: Sequence[onnx.ValueInfoProto] = (),
    domains: Sequence[tuple[str, int]] = (),
) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers), value_info=list(value_info))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in domains)]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = ir_version
    return m


@dataclass
class Applied:
    model: Model
    result: PassResult
    before: onnx.ModelProto
    after: onnx.ModelProto

    @property
    def stats(self) -> dict[str, float]:
        return self.result.stats


def apply(
    proto: onnx.ModelProto,
    p: Pass,
    *,
    equivalent: bool = True,
    feeds: dict | None = None,
    path: str | None = None,
) -> Applied:
    """Load ``proto`` (or the file at ``path``), run ``p``, verify the IR, export, check the
    result with onnx's checker and compare outputs with onnxruntime."""
    loaded = modelio.load(path if path is not None else proto)
    result = p(loaded.model)
    verify(loaded.model)
    after = to_proto(loaded.model)
    if not any(t.data_location == TensorProto.EXTERNAL for t in after.graph.initializer):
        onnx.checker.check_model(after)
    if equivalent:
        d = str(loaded.path.parent) if loaded.path is not None else None
        assert_equivalent(proto, after, feeds=feeds, before_dir=d, after_dir=d)
    return Applied(loaded.model, result, proto, after)


def op_counts(g: onnx.GraphProto | onnx.ModelProto) -> Counter[str]:
    graph = g.graph if isinstance(g, onnx.ModelProto) else g
    return Counter(n.op_type for n in graph.node)


def ops(g: onnx.GraphProto | onnx.ModelProto) -> list[str]:
    graph = g.graph if isinstance(g, onnx.ModelProto) else g
    return [n.op_type for n in graph.node]


def subgraph(m: onnx.ModelProto, node_op: str, attr: str) -> onnx.GraphProto:
    node = next(n for n in m.graph.node if n.op_type == node_op)
    return next(a.g for a in node.attribute if a.name == attr)


def rule_pass(*rules: object) -> Pass:
    """A RewritePass applying exactly ``rules`` (for testing one rule at a time)."""
    from onnxforge.rules import RewritePass

    class _OneRule(RewritePass):
        name = "test-rules"

    _OneRule.rules = tuple(rules)  # type: ignore[assignment]
    return _OneRule()
