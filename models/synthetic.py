"""Synthetic models for scale tests: very many nodes, or very many bytes.

* :func:`residual_mlp_chain` builds a graph of a requested node count from small repeated blocks
  (100,000 nodes in a few seconds and a few tens of MB).
* :func:`big_external_model` writes a model whose initializers total a requested byte count with
  external data, streaming the tensor bytes to disk so the model is never whole in memory.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge.models.model_proto import make_model

log = logging.getLogger(__name__)

#: Nodes in one :func:`residual_mlp_chain` block.
BLOCK_NODES = 7
#: External tensors start on multiples of this (the Windows allocation granularity, a multiple of
#: every page size), so onnxruntime can memory-map them.
EXTERNAL_ALIGN = 65536


def residual_mlp_chain(num_nodes: int, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """A chain of residual MLP blocks with exactly ``num_nodes`` nodes (at least one block).

    Each block (7 nodes) reads ``h`` and computes::

        i  = Identity(h)                 # no-op
        m  = MatMul(i, W_k)              # constant [width, width] weight
        a  = Add(m, b_k)                 # constant [width] bias
        r  = Relu(a)
        s  = Shape(r)                    # foldable: r's shape is static
        rr = Reshape(r, s)               # no-op reshape
        h' = Add(rr, h)                  # residual

    ``num_nodes % 7`` trailing Identity nodes make the count exact. Every block has its own
    weight and bias with distinct random content (nothing to deduplicate). Weights are scaled by
    the block count so activations stay bounded however long the chain is. Input ``x`` and output
    ``y`` are float32 ``[1, width]``.
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    blocks = max(1, num_nodes // BLOCK_NODES)
    tail = max(0, num_nodes - blocks * BLOCK_NODES)
    rng = np.random.default_rng(seed)
    damp = min(0.5, 2.0 / blocks)
    weights = (
        rng.standard_normal((blocks, width, width), dtype=np.float32) * (damp / math.sqrt(width))
    ).astype(np.float32)
    biases = (rng.standard_normal((blocks, width), dtype=np.float32) * min(0.1, 1.0 / blocks)).astype(
        np.float32
    )

    make_node = helper.make_node
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    h = "x"
    for k in range(blocks):
        p = f"b{k}"
        w, bias = f"{p}.weight", f"{p}.bias"
        inits.append(numpy_helper.from_array(weights[k], w))
        inits.append(numpy_helper.from_array(biases[k], bias))
        out = f"{p}.out"
        nodes += [
            make_node("Identity", [h], [f"{p}.id"], name=f"{p}.Identity"),
            make_node("MatMul", [f"{p}.id", w], [f"{p}.mm"], name=f"{p}.MatMul"),
            make_node("Add", [f"{p}.mm", bias], [f"{p}.add"], name=f"{p}.Add"),
            make_node("Relu", [f"{p}.add"], [f"{p}.relu"], name=f"{p}.Relu"),
            make_node("Shape", [f"{p}.relu"], [f"{p}.shape"], name=f"{p}.Shape"),
            make_node("Reshape", [f"{p}.relu", f"{p}.shape"], [f"{p}.reshaped"], name=f"{p}.Reshape"),
            make_node("Add", [f"{p}.reshaped", h], [out], name=f"{p}.Residual"),
        ]
        h = out
    for t in range(tail):
        out = f"tail{t}.id"
        nodes.append(make_node("Identity", [h], [out], name=f"tail{t}.Identity"))
        h = out
    # The last node writes the graph output directly.
    nodes[-1].output[0] = "y"
    model = make_model(
        nodes,
        "residual_mlp_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        inits,
    )
    return model


def big_external_model(
    path: str | os.PathLike[str],
    total_bytes: int,
    *,
    width: int = 1024,
    max_tensor_bytes: int = 256 << 20,
    chunk_bytes: int = 32 << 20,
    seed: int = 0,
) -> Path:
    """Write a model whose float32 initializers total at least ``total_bytes``, with external data.

    The graph reads ``x`` float32 ``[1, width]``, multiplies it by ``n`` weights ``W_i`` of shape
    ``[width, cols_i]`` (each at most ``max_tensor_bytes``) in parallel branches and concatenates
    the results into ``y`` ``[1, sum(cols_i)]``. ``sum(cols_i) = ceil(total_bytes / (4 * width))``,
    so the total is ``total_bytes`` rounded up to a multiple of ``4 * width`` bytes.

    The weight bytes go to ``<path>.data`` beside the model (``path.name + ".data"``), each tensor
    at an offset aligned to 64 KiB so onnxruntime can memory-map it. Content is deterministic:
    uniform values in ``[-1, 1) / sqrt(width)`` from a generator seeded by ``(seed, tensor, chunk)``,
    produced and written ``chunk_bytes`` at a time; nothing larger than one chunk is ever in memory.
    Returns ``path``.
    """
    if total_bytes < 1:
        raise ValueError(f"total_bytes must be >= 1, got {total_bytes}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    row_bytes = 4 * width  # one column of W: width float32 values
    if max_tensor_bytes < row_bytes:
        raise ValueError(
            f"max_tensor_bytes ({max_tensor_bytes}) is smaller than one column ({row_bytes} bytes)"
        )
    out = Path(path)
    data_name = out.name + ".data"
    data_path = out.with_name(data_name)
    total_cols = -(-total_bytes // row_bytes)
    cols_per_tensor = max_tensor_bytes // row_bytes
    # Columns per tensor as even as possible.
    n_tensors = -(-total_cols // cols_per_tensor)
    base, extra = divmod(total_cols, n_tensors)
    col_counts = [base + (1 if i < extra else 0) for i in range(n_tensors)]
    scale = np.float32(1.0 / math.sqrt(width))
    # Rows per chunk: W is row-major [width, cols], so a chunk is a block of whole rows.
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    branch_outputs = []
    log.info("writing %s: %d tensors, %d bytes of weights", data_path, n_tensors, total_cols * row_bytes)
    with open(data_path, "wb") as f:
        for i, cols in enumerate(col_counts):
            pos = f.tell()
            pad = (-pos) % EXTERNAL_ALIGN
            if pad:
                f.write(b"\0" * pad)
            offset = f.tell()
            rows_per_chunk = max(1, chunk_bytes // (4 * cols))
            for c, r0 in enumerate(range(0, width, rows_per_chunk)):
                rows = min(rows_per_chunk, width - r0)
                rng = np.random.default_rng([seed, i, c])
                block = rng.random((rows, cols), dtype=np.float32)
                block *= 2.0
                block -= 1.0
                block *= scale
                f.write(block.astype("<f4", copy=False).tobytes())
                del block
            length = f.tell() - offset
            t = TensorProto()
            t.name = f"weight{i}"
            t.data_type = TensorProto.FLOAT
            t.dims.extend([width, cols])
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key = key
                entry.value = value
            inits.append(t)
            nodes.append(helper.make_node("MatMul", ["x", t.name], [f"branch{i}"], name=f"MatMul{i}"))
            branch_outputs.append(f"branch{i}")
    if len(branch_outputs) == 1:
        nodes[-1].output[0] = "y"
    else:
        nodes.append(helper.make_node("Concat", branch_outputs, ["y"], name="Concat", axis=1))
    model = make_model(
        nodes,
        "big_external_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, total_cols])],
        inits,
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, out)
    return out
