"""Small models for lowering: a model holding ops the CPU provider lacks (the placement
report's test), MatMul chains of known relative cost (bench --compare against an independent
loop) and independent branches (parallel execution)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def cuda_only_ops() -> onnx.ModelProto:
    """Relu -> BiasAdd -> GroupNorm -> MatMul: BiasAdd and GroupNorm (com.microsoft, for
    diffusion models) have CUDA kernels and no CPU kernel in onnxruntime; Relu and MatMul have both."""
    rng = np.random.default_rng(0)
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias")
    gamma = numpy_helper.from_array(np.ones(8, np.float32), "gamma")
    beta = numpy_helper.from_array(np.zeros(8, np.float32), "beta")
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("BiasAdd", ["r", "bias", "x"], ["s"], name="bias_add", domain="com.microsoft"),
        helper.make_node("GroupNorm", ["s", "gamma", "beta"], ["g"], name="group_norm", domain="com.microsoft", epsilon=1e-5, groups=2, activation=0),
        helper.make_node("MatMul", ["g", "w"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "cuda_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 8])],
        [bias, gamma, beta, w],
    )
    return helper.make_model(graph, opset_imports=OPSETS, ir_version=8)


def matmul_chain(n: int, size: int = 128, *, seed: int = 0, dynamic: bool = False, rows: int = 1) -> onnx.ModelProto:
    """``n`` chained [size, size] MatMul + Relu on a [rows, size] input: latency grows with ``n``."""
    rng = np.random.default_rng(seed)
    nodes, inits, src = [], [], "x"
    for i in range(n):
        inits.append(numpy_helper.from_array((rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        src = f"r{i}"
    nodes.append(helper.make_node("Identity", [src], ["y"], name="out"))
    batch: int | str = "batch" if dynamic else rows
    graph = helper.make_graph(
        nodes,
        f"matmuls{n}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, size])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def parallel_branches(width: int = 4, size: int = 64) -> onnx.ModelProto:
    """``width`` independent MatMul branches of equal work, summed: most work off the critical path."""
    rng = np.random.default_rng(1)
    nodes, inits, outs = [], [], []
    for i in range(width):
        inits.append(numpy_helper.from_array(rng.standard_normal((size, size)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"b{i}"], name=f"branch{i}"))
        outs.append(f"b{i}")
    nodes.append(helper.make_node("Sum", outs, ["y"], name="sum"))
    graph = helper.make_graph(
        nodes,
        "branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
