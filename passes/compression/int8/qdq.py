"""QuantizeLinear/DequantizeLinear insertion (static int8, QDQ format).

Two steps, so calibration can run in between:

1. :func:`plan_qdq` picks the compute nodes to quantize (float Conv/ConvTranspose/Gemm/MatMul
   with constant weights or, with ``activation_products``, MatMuls of two
   calibrated activations such as attention scores, which cost accuracy for little speed; not
   excluded; at least ``min_macs`` multiply-accumulates when shapes are known, since tiny
   layers run slower quantized) and the activation tensors that need a range: their
   activation inputs, convolution outputs where the target quantizes outputs (after a Relu/Clip
   that follows; MatMul/Gemm outputs stay float: onnxruntime runs them on integers with a float
   output, and transformers' residual streams suffer from int8), the inputs/outputs of the
   target's quantized elementwise ops, and the outputs of pass-through ops, which reuse their
   input's parameters.
2. :func:`apply_qdq` inserts, for every planned tensor, ``Q → DQ`` read by all its consumers
   (graph outputs keep the float tensor), replaces weights by int8 tensors behind a
   DequantizeLinear (per output channel from opset 13 on, else per tensor), and biases by
   int32 tensors with scale ``input_scale * weight_scale`` (with the CPU policy also the bias
   Add after a MatMul that onnxruntime will merge into a Gemm).

Nodes inside If branches are planned like the main graph's (calibration reaches their tensors
through :mod:`onnxforge.calibration.taps`); a compute node there whose input got no range (its
branch never ran on the calibration data) falls back to weight-only quantization, as do the
compute nodes of Loop/Scan bodies, whose activations are not calibrated.

The model's inputs and outputs keep their float types.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from onnxforge.ir import Graph, Model, Node, Value
from onnxforge.ir.constants import add_constant, constant_value, is_constant
from onnxforge.passes.compression.int8.policy import (
    COMPUTE_OPS,
    FOLDABLE_ACTIVATIONS,
    PASS_THROUGH_OPS,
    TargetPolicy,
)
from onnxforge.passes.compression.int8.weights import (
    QuantParams,
    activation_params,
    quantize_bias,
    quantize_weight,
    weight_axis,
)

log = logging.getLogger(__name__)

_FLOAT = 1  # onnx.TensorProto.FLOAT
PROVENANCE = "quantize-qdq"


@dataclass
class QdqPlan:
    """What :func:`apply_qdq` will quantize."""

    compute: list[Node] = field(default_factory=list)
    #: Tensors needing a calibrated range, in order.
    calibrate: list[str] = field(default_factory=list)
    #: Tensor name → name of the tensor whose parameters it shares (pass-through outputs).
    shared: dict[str, str] = field(default_factory=dict)
    #: Compute nodes quantized weight-only (inside subgraphs).
    weight_only: list[Node] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    #: Tensors produced by Relu / Clip(0, ...): their range starts at 0 exactly, so the zero
    #: point is the type's minimum and the runtime can drop the activation.
    non_negative: set[str] = field(default_factory=set)


def _const_float(v: Value | None) -> np.ndarray | None:
    try:
        arr = constant_value(v)
    except ValueError:
        return None
    return arr if arr is not None and arr.dtype == np.float32 else None


def _is_float_activation(v: Value | None) -> bool:
    return v is not None and not is_constant(v) and v.elem_type() == _FLOAT


def _macs(node: Node) -> int | None:
    out = node.output(0)
    x = node.input(0)
    w = node.input(1)
    ys = out.static_shape() if out is not None else None
    ws = w.static_shape() if w is not None else None
    xs = x.static_shape() if x is not None else None
    if ys is None or ws is None:
        return None
    if node.op_type in ("Conv",):
        return math.prod(ys) * (math.prod(ws) // max(ws[0], 1))
    if node.op_type == "ConvTranspose":
        return None if xs is None else math.prod(xs) * (math.prod(ws) // max(ws[0], 1))
    if xs is None or not xs:
        return None
    k = xs[0] if node.op_type == "Gemm" and int(node.attr("transA", 0)) else xs[-1]
    return math.prod(ys) * k


def plan_qdq(
    model: Model,
    policy: TargetPolicy,
    *,
    exclude: set[str] = frozenset(),  # type: ignore[assignment]
    min_macs: int = 0,
    activation_products: bool = False,
) -> QdqPlan:
    """Choose the nodes and tensors to quantize (see the module docstring)."""
    plan = QdqPlan()
    graph = model.graph
    quantized: set[str] = set()

    def want(v: Value | None) -> None:
        if v is not None and v.name not in quantized and _is_float_activation(v):
            quantized.add(v.name)
            plan.calibrate.append(v.name)

    for g in graph.all_graphs():
        if _in_loop_body(g):
            for node in g:
                if (
                    node.op_type in COMPUTE_OPS
                    and node.is_standard_domain()
                    and _const_float(node.input(1)) is not None
                ):
                    if (node.name or node.op_type) not in exclude:
                        plan.weight_only.append(node)
            continue
        _plan_graph(g, g is graph, plan, policy, quantized, want, exclude, min_macs, activation_products)
    return plan


def _in_loop_body(g: Graph) -> bool:
    while g.parent is not None:
        if g.parent.op_type != "If":
            return True
        parent_graph = g.parent.graph
        if parent_graph is None:
            return True
        g = parent_graph
    return False


def _plan_graph(
    graph: Graph,
    is_main: bool,
    plan: QdqPlan,
    policy: TargetPolicy,
    quantized: set[str],
    want: Callable[[Value | None], None],
    exclude: set[str],
    min_macs: int,
    activation_products: bool,
) -> None:
    for node in graph.topological_order():
        label = node.name or node.op_type
        if node.op_type in COMPUTE_OPS and node.is_standard_domain():
            reason = _refuse(node, exclude, min_macs, activation_products)
            if reason:
                plan.skipped[label] = reason
                continue
            plan.compute.append(node)
            if not is_main and _const_float(node.input(1)) is not None:
                plan.weight_only.append(node)  # used only if its branch never ran in calibration
            want(node.input(0))
            if node.op_type == "MatMul" and _const_float(node.input(1)) is None:
                want(node.input(1))
            if policy.quantize_outputs and node.op_type in ("Conv", "ConvTranspose"):
                # onnxruntime needs the output Q to run a convolution on integers; MatMul and
                # Gemm run integer kernels with a float output (MatMulIntegerToFloat, QGemm),
                # so their outputs (bias adds, residual streams) stay float.
                out = _output_to_quantize(node)
                if not _reaches_model_output(out, policy.pass_through):
                    want(out)
                    if out is not None and out is not node.output(0):
                        plan.non_negative.add(out.name)
        elif node.op_type in policy.elementwise_ops and node.is_standard_domain() and label not in exclude:
            acts = [v for v in node.inputs if _is_float_activation(v)]
            if node.op_type in policy.joins_only and len(acts) < 2:
                continue  # a constant operand: int8 does not pay, the pair only adds noise
            if acts and all(v.name in quantized for v in acts if v is not None):
                for v in acts:
                    want(v)
                out = _output_to_quantize(node)  # after a following Relu, as for convolutions
                if policy.quantize_outputs and not _reaches_model_output(out, policy.pass_through):
                    want(out)
                    if out is not None and out is not node.output(0):
                        plan.non_negative.add(out.name)
        elif node.op_type in policy.pass_through and node.is_standard_domain():
            src = node.input(0)
            out = node.output(0)
            if src is not None and src.name in quantized and _is_float_activation(out) and out is not None:
                if out.name not in quantized:
                    quantized.add(out.name)
                    plan.shared[out.name] = plan.shared.get(src.name, src.name)


def _reaches_model_output(v: Value | None, pass_through: frozenset[str]) -> bool:
    """Whether ``v`` is a model output or becomes one through data-movement ops only. Such a
    tensor is never quantized: its calibrated range would clamp the model's own outputs on
    inputs beyond the calibration data (silero-vad's speech probability stuck at the largest
    value seen in calibration), and nothing downstream would read it as integers."""
    todo = [v]
    while todo:
        for cur in _moved(todo.pop(), pass_through):
            if not cur.is_graph_output() or cur.graph is None:
                continue
            owner = cur.graph.parent
            if owner is None or owner.op_type != "If":
                return True  # the model's output, or a Loop/Scan body's (carried on: assume so)
            # an If branch's k-th output is the If's k-th output
            todo.extend(owner.output(k) for k, o in enumerate(cur.graph.outputs) if o is cur)
    return False


def _moved(v: Value | None, ops: frozenset[str]) -> list[Value]:
    """``v`` and every value made from it by chains of ``ops`` reading it as their data input
    (in nested graphs too)."""
    found: list[Value] = []
    seen: set[int] = set()
    todo = [v]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        found.append(cur)
        for user in cur.consumers():
            if user.op_type in ops and user.input(0) is cur:
                todo.extend(user.outputs)
    return found


def _refuse(node: Node, exclude: set[str], min_macs: int, activation_products: bool) -> str:
    label = node.name or node.op_type
    if label in exclude:
        return "excluded (kept in float)"
    if not _is_float_activation(node.input(0)):
        return "input is not a float32 activation"
    w = node.input(1)
    if _const_float(w) is None:
        if not (node.op_type == "MatMul" and _is_float_activation(w)):
            return "weight is neither a float32 constant nor (MatMul) a float32 activation"
        if not activation_products:
            return "product of two activations (attention scores/context): kept in float for accuracy"
    if node.op_type == "Gemm" and int(node.attr("transA", 0)):
        return "Gemm with transA"
    macs = _macs(node)
    if macs is not None and macs < min_macs:
        return f"{macs} MACs: too small to gain from int8"
    return ""


def _output_to_quantize(node: Node) -> Value | None:
    """The compute node's output, or the output of a Relu/Clip that is its only reader (the Q
    goes after it so the runtime can drop the activation)."""
    out = node.output(0)
    if out is None:
        return None
    users = out.consumers()
    if len(users) == 1 and not out.is_graph_output() and users[0].op_type in FOLDABLE_ACTIVATIONS:
        act = users[0]
        if act.op_type == "Relu" or _clip_from_zero(act):
            return act.output(0)
    return out


def _clip_from_zero(node: Node) -> bool:
    lo = constant_value(node.input(1)) if node.input(1) is not None and node.input(1).name else None  # type: ignore[union-attr]
    return lo is not None and lo.size == 1 and float(lo.reshape(-1)[0]) == 0.0


@dataclass
class QdqResult:
    """What :func:`apply_qdq` did: tensors quantized, weights quantized, and the parameters."""

    tensors: dict[str, QuantParams] = field(default_factory=dict)
    #: Compute nodes that run quantized (activations and weights).
    quantized: list[str] = field(default_factory=list)
    weights: int = 0
    weight_only: int = 0
    biases: int = 0


def apply_qdq(
    model: Model,
    plan: QdqPlan,
    ranges: dict[str, tuple[float, float]],
    policy: TargetPolicy,
    *,
    per_channel: bool = True,
) -> QdqResult:
    """Insert Q/DQ for ``plan`` with calibrated ``ranges`` (see the module docstring)."""
    opset = model.opset("") or 1
    per_channel = per_channel and opset >= 13
    result = QdqResult()
    graph = model.graph
    for name in plan.calibrate:
        r = ranges.get(name)
        if r is None or not all(math.isfinite(x) for x in r):
            log.debug("no usable range for %s: left in float", name)
            continue
        if name in plan.non_negative:
            r = (0.0, max(r[1], 0.0))
        result.tensors[name] = activation_params(r[0], r[1], policy.activation_type)
    for name, src in plan.shared.items():
        if src in result.tensors:
            result.tensors[name] = result.tensors[src]
    values = {v.name: v for g in graph.all_graphs() for v in g.values()}
    input_params = {
        node: result.tensors.get(node.input(0).name) for node in plan.compute if node.input(0) is not None
    }  # type: ignore[union-attr]
    for name, params in result.tensors.items():
        v = values.get(name)
        if v is not None:
            _insert_qdq(v.graph or graph, v, params)
    # Keyed by graph too: a DequantizeLinear lives in one graph, and an outer weight captured
    # by both branches of an If needs one in each branch.
    weight_cache: dict[tuple[int, bool, int], tuple[Value, QuantParams]] = {}
    for node in plan.compute:
        xp = input_params.get(node)
        if xp is None:
            continue  # its input stayed float: leave the node float too
        if node.op_type == "MatMul" and _const_float(node.input(1)) is None:
            result.quantized.append(node.name or node.op_type)
            continue  # two activations: their Q/DQ pairs are all it needs
        home = node.graph or graph
        bias_add = _gemm_bias_add(node) if policy.int32_bias_adds and node.op_type == "MatMul" else None
        wq = _quantize_weight_input(home, node, per_channel, weight_cache, policy.saturates)
        if wq is None:
            continue
        result.quantized.append(node.name or node.op_type)
        result.weights += 1
        bias_index = COMPUTE_OPS[node.op_type][1]
        if bias_index is not None and _const_float(node.input(bias_index)) is not None:
            _quantize_bias_input(home, node, bias_index, float(xp.scale), wq)
            result.biases += 1
        elif bias_add is not None:
            _quantize_bias_input(home, bias_add[0], bias_add[1], float(xp.scale), wq)
            result.biases += 1
    done = set(result.quantized)
    for node in plan.weight_only:
        if (node.name or node.op_type) in done:
            continue
        if (
            node.graph is not None
            and _quantize_weight_input(node.graph, node, per_channel, weight_cache) is not None
        ):
            result.weight_only += 1
    return result


def _gemm_bias_add(node: Node) -> tuple[Node, int] | None:
    """The Add (and its bias input index) that onnxruntime's MatMulAddFusion will merge with
    MatMul ``node`` into a Gemm: the MatMul's only reader, adding a constant 1-D bias of the
    weight's N, with an input of rank 2 or of fully known shape (onnxruntime needs the shape to
    reshape a higher-rank input to 2-D)."""
    out = node.output(0)
    if out is None or out.is_graph_output():
        return None
    uses = out.uses()
    if len(uses) != 1:
        return None
    add, idx = uses[0]
    if add.op_type != "Add" or not add.is_standard_domain() or len(add.inputs) != 2:
        return None
    bias_index = 1 - idx
    b = _const_float(add.input(bias_index))
    w = node.input(1)
    ws = w.static_shape() if w is not None else None
    if b is None or b.ndim != 1 or ws is None or len(ws) != 2 or b.shape[0] != ws[1]:
        return None
    a = node.input(0)
    a_shape = a.shape() if a is not None else None
    if a_shape is None or (len(a_shape) != 2 and a.static_shape() is None):  # type: ignore[union-attr]
        return None
    return add, bias_index


def _params_inputs(graph: Graph, base: str, p: QuantParams) -> tuple[Value, Value]:
    scale = add_constant(graph, p.scale.astype(np.float32), f"{base}_scale")
    zp = add_constant(graph, p.zero_point, f"{base}_zero_point")
    return scale, zp


def _insert_qdq(graph: Graph, v: Value, p: QuantParams) -> None:
    users = v.uses()
    if not users:
        return
    scale, zp = _params_inputs(graph, v.name, p)
    q = graph.add_node(
        "QuantizeLinear",
        [v, scale, zp],
        name=f"{v.name}_Q",
        output_names=[f"{v.name}_quantized"],
        provenance=PROVENANCE,
    )
    dq = graph.add_node(
        "DequantizeLinear",
        [q.output(0), scale, zp],
        name=f"{v.name}_DQ",
        output_names=[f"{v.name}_dequantized"],
        provenance=PROVENANCE,
    )
    out = dq.output(0)
    assert out is not None
    if v.type is not None:
        out.type = v.type
    for node, idx in users:
        if node.op_type in ("Shape", "Size") and node.is_standard_domain():
            continue  # they read only the shape: keep them on the float tensor
        if node.graph is graph and _moves_into_a_subgraph(node):
            continue  # see _moves_into_a_subgraph
        node.set_input(idx, out)


#: Data-movement ops onnxruntime's QDQ propagation may move a DequantizeLinear across (a
#: superset of its list, to stay safe across versions).
_PROPAGATED = PASS_THROUGH_OPS | {"Expand"}


def _moves_into_a_subgraph(node: Node) -> bool:
    """Whether ``node`` is data movement whose output (directly or through more data movement)
    is read by a node inside an If/Loop/Scan body. onnxruntime 1.32's QDQPropagationTransformer
    aborts the process when it propagates a DequantizeLinear across such a node (it reads the
    body's implicit input as an explicit one: microsoft/onnxruntime#10096 is the same mistake in
    another place), at any optimization level above DISABLE_ALL; such readers keep the float
    tensor."""
    if node.op_type not in _PROPAGATED or not node.is_standard_domain():
        return False
    return any(
        user.graph is not node.graph
        for out in node.outputs
        for cur in _moved(out, _PROPAGATED)
        for user in cur.consumers()
    )


def _quantize_weight_input(
    graph: Graph,
    node: Node,
    per_channel: bool,
    cache: dict[tuple[int, bool, int], tuple[Value, QuantParams]],
    saturates: bool = False,
) -> QuantParams | None:
    """The weight input of ``node`` as int8 behind a DequantizeLinear (cached per weight).
    ``saturates``: the CPU's integer kernels add pairs of products into int16: per channel, the
    channels whose neighbouring codes could overflow it get a wider scale; per tensor, 7 bits."""
    w_v = node.input(1)
    w = _const_float(w_v)
    if w is None or w_v is None:
        return None
    trans_b = bool(int(node.attr("transB", 0))) if node.op_type == "Gemm" else False
    axis = weight_axis(node.op_type, trans_b) if per_channel and w.ndim >= 2 else None
    if node.op_type == "ConvTranspose" and int(node.attr("group", 1)) != 1:
        axis = None  # per-channel DQ cannot express grouped ConvTranspose output channels
    key = (w_v.id, axis is not None, id(graph))
    hit = cache.get(key)
    if hit is None:
        if saturates and axis is not None:
            q, params = quantize_weight(w, axis, pair_limit=128)
        else:
            q, params = quantize_weight(w, axis, 7 if saturates else 8)
        q_v = add_constant(graph, q, f"{w_v.name}_int8")
        scale, zp = _params_inputs(graph, f"{w_v.name}_w", params)
        attrs = {"axis": axis} if axis is not None else {}
        dq = graph.add_node(
            "DequantizeLinear", [q_v, scale, zp], name=f"{w_v.name}_DQ", attrs=attrs, provenance=PROVENANCE
        )
        out = dq.output(0)
        assert out is not None
        hit = (out, params)
        cache[key] = hit
    node.set_input(1, hit[0])
    return hit[1]


def _quantize_bias_input(graph: Graph, node: Node, index: int, x_scale: float, wp: QuantParams) -> None:
    b_v = node.input(index)
    b = _const_float(b_v)
    if b is None or b_v is None:
        return
    w_scale = wp.scale if wp.per_channel else np.asarray(wp.scale, np.float32).reshape(())
    if wp.per_channel and b.reshape(-1).shape != w_scale.shape:
        return
    q, params = quantize_bias(b.reshape(-1), x_scale, w_scale)
    q_v = add_constant(graph, q.reshape(b.shape), f"{b_v.name}_int32")
    scale, zp = _params_inputs(graph, f"{b_v.name}_b", params)
    attrs = {"axis": 0} if params.axis is not None and b.ndim == 1 else {}
    dq = graph.add_node(
        "DequantizeLinear", [q_v, scale, zp], name=f"{b_v.name}_DQ", attrs=attrs, provenance=PROVENANCE
    )
    node.set_input(index, dq.output(0))
