"""Fallback evaluation through ``onnx.reference`` for standard ops without a numpy kernel.

The node is wrapped in a one-node model with typed inputs and run by
:class:`onnx.reference.ReferenceEvaluator`. Only deterministic tensor ops are admitted: random
ops, Dropout, quantize/dequantize (folding them would undo quantization), control flow and
sequence/optional ops never are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from onnxforge.kernels.kernel import InvalidInputs, Unsupported

#: Ops the fallback never evaluates.
EXCLUDED = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "If",
        "Loop",
        "Scan",
        "Constant",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SplitToSequence",
        "ConcatFromSequence",
        "StringSplit",
        "RegexFullMatch",
        "StringConcat",
        "StringNormalizer",
        "TfIdfVectorizer",
    }
)


def supports(op_type: str, domain: str, opset: int) -> bool:
    """Whether the fallback may evaluate this op (standard domain, known schema, not excluded)."""
    if domain not in ("", "ai.onnx") or op_type in EXCLUDED:
        return False
    try:
        onnx.defs.get_schema(op_type, opset, "")
    except Exception:
        return False
    return True


def evaluate_reference(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attributes: Mapping[str, onnx.AttributeProto],
    *,
    opset: int,
    num_outputs: int,
) -> list[np.ndarray]:
    """Outputs of one standard op computed by ``onnx.reference``.

    Raises :class:`Unsupported` / :class:`InvalidInputs` (KernelError) when it cannot.
    """
    from onnx.reference import ReferenceEvaluator

    in_names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    out_names = [f"o{k}" for k in range(num_outputs)]
    node = helper.make_node(op_type, in_names, out_names)
    node.attribute.extend(attributes.values())
    graph_inputs = []
    feeds: dict[str, np.ndarray] = {}
    for name, x in zip(in_names, inputs):
        if x is None:
            continue
        arr = np.ascontiguousarray(x)
        try:
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        except Exception as e:
            raise Unsupported(f"{op_type}: input dtype {arr.dtype} has no ONNX type") from e
        graph_inputs.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
        feeds[name] = arr
    graph = helper.make_graph([node], "fold", graph_inputs, [helper.make_value_info(n, onnx.TypeProto()) for n in out_names])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(onnx.IR_VERSION, 10)
    try:
        with np.errstate(all="ignore"):
            results = ReferenceEvaluator(model).run(None, feeds)
    except Exception as e:
        raise InvalidInputs(f"{op_type}: onnx.reference failed: {type(e).__name__}: {e}") from e
    outs: list[np.ndarray] = []
    for r in results:
        if not isinstance(r, np.ndarray):
            raise Unsupported(f"{op_type}: onnx.reference returned a {type(r).__name__}, not a tensor")
        outs.append(np.array(r, copy=True, order="C"))
    if len(outs) != num_outputs:
        raise InvalidInputs(f"{op_type}: onnx.reference produced {len(outs)} outputs, the node has {num_outputs}")
    return outs
