"""The models that get mutated: the seeded builders of :mod:`onnxforge.models`, a control-flow
model, a QDQ model, a model with external data and, when fetched, a few small corpus models."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge.fuzz.casefiles import DATA, MODEL
from onnxforge.fuzz.protowalk import _field_paths, _tensors
from onnxforge.models.attention_blocks import attention_block
from onnxforge.models.cnn import small_cnn, transformer_block
from onnxforge.models.corpus import list_corpus
from onnxforge.models.synthetic import residual_mlp_chain

#: Small corpus models mutated besides the built-in ones (when present; see ``--corpus-models``).
DEFAULT_CORPUS = ("oww_hey_rhasspy", "ppocr_cls_mobile_v2", "silero_vad_16k_op15", "oww_melspectrogram")


@dataclass
class Parent:
    """A model to mutate: the main file's proto (external data not loaded) and the other files
    beside it (external data), by file name."""

    name: str
    proto: onnx.ModelProto
    files: dict[str, bytes] = field(default_factory=dict)
    _fields: list[tuple[tuple[tuple[str, int | None], ...], str]] | None = None

    def fields(self) -> list[tuple[tuple[tuple[str, int | None], ...], str]]:
        """Every set field of the proto as (path to its message, field name); computed once."""
        if self._fields is None:
            self._fields = list(_field_paths(self.proto, ()))
        return self._fields


def _control_flow_model() -> onnx.ModelProto:
    """If branches reading outer-scope values, a Loop with a carried value and a scan output,
    and a call of a model-local function."""
    f = TensorProto.FLOAT
    then_g = helper.make_graph(
        [helper.make_node("Add", ["s", "s"], ["t_out"], name="then_add")], "then", [],
        [helper.make_tensor_value_info("t_out", f, [3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["s", "x"], ["e_out"], name="else_sub")], "else", [],
        [helper.make_tensor_value_info("e_out", f, [3])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("Add", ["acc_in", "y"], ["acc_out"], name="body_add"),
            helper.make_node("Mul", ["acc_out", "two"], ["scan_out"], name="body_mul"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", f, [3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", f, [3]),
            helper.make_tensor_value_info("scan_out", f, [3]),
        ],
    )
    fn = helper.make_function(
        "local", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["s"], name="mul"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trip", "", "x"], ["acc", "scans"], name="loop", body=body),
        helper.make_node("Double", ["acc"], ["z"], name="double", domain="local"),
    ]
    g = helper.make_graph(
        nodes,
        "main",
        [helper.make_tensor_value_info("x", f, [3]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", f, [3]), helper.make_tensor_value_info("scans", f, ["n", 3])],
        [
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(3, dtype=np.int64), "trip"),
        ],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], functions=[fn]
    )
    m.ir_version = 8
    helper.set_model_props(m, {"author": "onnxforge.fuzz"})
    return m


def _qdq_model() -> onnx.ModelProto:
    """int8 weights behind DequantizeLinear, a quantized activation, and a Conv on top."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8), "w_q")
    ws = numpy_helper.from_array((rng.random(4) * 0.01 + 0.001).astype(np.float32), "w_scale")
    wz = numpy_helper.from_array(np.zeros(4, dtype=np.int8), "w_zero")
    xs = numpy_helper.from_array(np.array(0.02, dtype=np.float32), "x_scale")
    xz = numpy_helper.from_array(np.array(0, dtype=np.uint8), "x_zero")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"], name="dq_w", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, ws, wz, xs, xz],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _external_parent() -> Parent:
    m = residual_mlp_chain(14, width=16)
    with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-") as tmp:
        path = Path(tmp) / MODEL
        onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location=DATA, size_threshold=0)
        proto = onnx.load(path, load_external_data=False)
        data = (Path(tmp) / DATA).read_bytes()
    return Parent("mlp_external", proto, {DATA: data})


def builtin_parents() -> list[Parent]:
    """The built-in models every run mutates (seeded, a few KiB each)."""
    return [
        Parent("small_cnn", small_cnn(seed=0)[0]),
        Parent("mlp_chain", residual_mlp_chain(8, width=8)),
        Parent("transformer", transformer_block(seq=4, hidden=16, heads=2, dynamic_batch=True)[0]),
        Parent("attention", attention_block(mask="vmap", causal="vmap")),
        Parent("control_flow", _control_flow_model()),
        Parent("qdq", _qdq_model()),
        _external_parent(),
    ]


def corpus_parents(names: Sequence[str], max_bytes: int = 4 << 20) -> list[Parent]:
    """The named corpus models that are present and at most ``max_bytes`` (no network)."""
    present = list_corpus()
    out = []
    for name in names:
        path = present.get(name)
        if path is None or path.stat().st_size > max_bytes:
            continue
        proto = onnx.load(path, load_external_data=False)
        if any(t.data_location == TensorProto.EXTERNAL for t in _tensors(proto)):
            continue  # the corpus models embed their weights; keep it that way here
        out.append(Parent(f"corpus:{name}", proto))
    return out
