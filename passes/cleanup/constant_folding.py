"""Constant folding: evaluate nodes whose inputs are all constant and replace their outputs by
constants.

What is folded
    A standard-domain node, without subgraphs, that has a kernel in
    :mod:`onnxforge.kernels.registry` for the model's opset, whose every present input is a
    constant (an initializer that is not a graph input, or a ``Constant`` node), and whose
    outputs are used. With ``fold_shapes`` (default on) ``Shape`` and ``Size`` are also folded
    when their input has a fully static declared shape, constant or not; an initializer that is
    also a graph input only counts with the shape its graph input declares, since callers can
    feed another tensor.

What is never folded
    Nodes of custom domains, nodes calling model-local functions, nodes with subgraphs
    (If/Loop/Scan), random and other operators without a kernel (``RandomNormal``, ``Dropout``,
    ``DequantizeLinear``, ... : folding DequantizeLinear would destroy QDQ quantization), the
    ``Cast``/``Gather`` that decode a codebook-shared weight (folding them would turn its
    compact indices back into a dense weight, :mod:`onnxforge.passes.compression.codebook`), a
    ``Transpose``/``Reshape``/... of a weight (4 KB or more) that other nodes read too (the copy
    would untie tied weights, such as an embedding and its LM head), and any
    evaluation the kernel refuses because its result is implementation-defined or the runtime
    would raise (integer division by zero, out-of-range casts or indices, ...).

Size limit
    Folding trades computation for stored bytes. A node is folded only when its outputs need
    at most ``size_limit`` bytes, or no more than the constant inputs it frees (inputs used by
    this node alone), so folding never makes the model much larger: ``Transpose`` of a big
    single-use weight is folded, ``Expand``/``Tile``/``ConstantOfShape`` into a big tensor is
    not. Operators that can grow their data are checked on input shapes *before* evaluation.

Result
    A folded output keeps its name and declared type and becomes an initializer (a ``Constant``
    node when the IR version is below 4), so graph outputs, value names and outer-scope
    captures stay valid. Constant inputs that only the folded node read are removed. The pass
    walks every graph, subgraphs included, with a worklist seeded with every node: it is linear
    in the graph size and reaches its fixed point in one run.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge.ir import PROVENANCE_KEY, Graph, Model, Node, Value
from onnxforge.ir.constants import constant_value, initializers_allowed, is_constant
from onnxforge.kernels.reference_fallback import evaluate_reference
from onnxforge.kernels.reference_fallback import supports as reference_supports
from onnxforge.kernels.registry import (
    Kernel,
    KernelCall,
    KernelError,
    estimate_output_elements,
    evaluate,
    get_kernel,
)
from onnxforge.passes.compression.codebook import is_decode_node
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

PROVENANCE = "constant-folding"


@dataclass(frozen=True)
class ConstantFoldingOptions(PassOptions):
    """Options of :class:`ConstantFolding`.

    ``size_limit``: largest total output size in bytes of a folded node, unless the outputs are
    no larger than the constant inputs the fold frees. ``fold_shapes``: fold ``Shape``/``Size``
    of values whose declared shape is fully static. ``reference_fallback``: evaluate standard ops
    that have no numpy kernel with ``onnx.reference`` (inputs within ``size_limit``).
    """

    size_limit: int = 1 << 20
    fold_shapes: bool = True
    reference_fallback: bool = True

    def validate(self) -> None:
        if isinstance(self.size_limit, bool) or not isinstance(self.size_limit, int):
            raise ValueError(f"size_limit must be an integer number of bytes, got {self.size_limit!r}")
        if self.size_limit < 0:
            raise ValueError(f"size_limit must be >= 0, got {self.size_limit}")


@dataclass
class _Stats:
    folded: int = 0
    shape_queries: int = 0
    removed_constants: int = 0
    skipped_too_large: int = 0
    refused: int = 0
    reference_fallbacks: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "folded_nodes": self.folded,
            "folded_shape_queries": self.shape_queries,
            "removed_constants": self.removed_constants,
            "skipped_too_large": self.skipped_too_large,
            "kernel_refusals": self.refused,
            "reference_fallbacks": self.reference_fallbacks,
        }


class ConstantFolding(Pass):
    """Evaluate constant subexpressions at compile time (see the module docstring)."""

    name = "constant-folding"
    summary = "Evaluate nodes whose inputs are constant (and Shape/Size of static shapes) into constants."
    lossless = True
    Options = ConstantFoldingOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, ConstantFoldingOptions)
        stats = _Stats()
        reordered: dict[Graph, None] = {}
        worklist: deque[Node] = deque(model.graph.walk())
        queued: set[Node] = set(worklist)
        while worklist:
            node = worklist.popleft()
            queued.discard(node)
            graph = node.graph
            if graph is None:  # removed earlier in this run
                continue
            outputs = [v for v in node.outputs if v is not None]
            try:
                folded = _fold(node, opts, stats)
            except (ArithmeticError, ValueError, TypeError, IndexError) as e:
                # A kernel bug must cost an optimization, never the compile: leave the node.
                log.warning("constant-folding: kept %r unfolded after a kernel error: %s", node, e)
                stats.refused += 1
                folded = False
            if not folded:
                continue
            if not initializers_allowed(graph):
                reordered[graph] = None
            for v in outputs:
                for user, _ in v.uses():
                    if user not in queued:
                        queued.add(user)
                        worklist.append(user)
        for graph in reordered:  # Constant nodes were appended at the end
            graph.toposort()
        modified = stats.folded > 0 or stats.removed_constants > 0
        if modified:
            log.info(
                "constant-folding: folded %d nodes (%d shape queries), removed %d constants",
                stats.folded,
                stats.shape_queries,
                stats.removed_constants,
            )
        return PassResult(modified=modified, stats=stats.as_dict())


# --------------------------------------------------------------------------------------------
# One node
# --------------------------------------------------------------------------------------------
def _fold(node: Node, opts: ConstantFoldingOptions, stats: _Stats) -> bool:
    """Fold ``node`` if possible; returns True when the model changed."""
    graph = node.graph
    assert graph is not None and graph.model is not None
    if is_decode_node(node):
        return False
    if _unties_a_weight(node):  # the model would grow by a copy of the weight
        stats.skipped_too_large += 1
        return False
    kernel = _kernel_for(node, graph.model)
    use_reference = kernel is None and opts.reference_fallback and _reference_allowed(node, graph.model)
    if kernel is None and not use_reference:
        return False
    outputs = node.outputs
    live = {v for v in outputs if v is not None and (v.num_uses() or v.is_graph_output())}
    if not live:  # dead: dead-code elimination's business, not worth evaluating
        return False
    if not all(v is None or v.type is None or v.type.HasField("tensor_type") for v in outputs):
        return False

    # Every present input must be constant (or, for shape queries, statically shaped).
    shape_query = False
    for i, v in enumerate(node.inputs):
        if v is None or is_constant(v):
            continue
        if kernel is not None and kernel.shape_only and i == 0 and opts.fold_shapes and _declared_static_shape(v) is not None:
            shape_query = True
            continue
        return False
    if not any(v is not None for v in node.inputs):
        return False

    arrays: list[np.ndarray | None] = []
    for i, v in enumerate(node.inputs):
        if v is None:
            arrays.append(None)
        elif shape_query and i == 0:
            shape = _declared_static_shape(v)
            assert shape is not None
            arrays.append(np.broadcast_to(np.zeros((), np.uint8), shape))  # no allocation
        else:
            arr = constant_value(v)
            if arr is None:  # sparse or attribute-reference Constant
                return False
            arrays.append(arr)

    model = graph.model
    opset = model.opset("")
    assert opset is not None
    limit = max(opts.size_limit, _freed_bytes(node, arrays))
    try:
        if use_reference:
            # No output-size estimate without a kernel: bound the work by the inputs' size, and
            # the result is size-checked below like any other.
            if sum(a.nbytes for a in arrays if a is not None) > opts.size_limit:
                stats.skipped_too_large += 1
                return False
            results = evaluate_reference(
                node.op_type, arrays, node.attributes, opset=opset, num_outputs=len(outputs)
            )
            stats.reference_fallbacks += 1
        else:
            attrs = {name: node.attr(name) for name in node.attributes}
            call = KernelCall(node.op_type, arrays, attrs, opset, len(outputs))
            estimate = estimate_output_elements(call)
            if estimate is not None and estimate > limit:  # every element takes at least one byte
                log.debug("not folding %r: about %d output elements exceed the %d-byte limit", node, estimate, limit)
                stats.skipped_too_large += 1
                return False
            results = evaluate(node.op_type, arrays, attrs, opset=opset, num_outputs=len(outputs))
    except KernelError as e:
        log.debug("not folding %r: %s", node, e)
        stats.refused += 1
        return False

    total = 0
    for v, r in zip(outputs, results):
        if v is None:
            continue
        problem = _type_mismatch(v, r)
        if problem:
            log.warning("not folding %r: output %r %s", node, v.name, problem)
            stats.refused += 1
            return False
        if v in live:  # dead outputs are not stored
            total += r.nbytes
    if total > limit:
        log.debug("not folding %r: %d output bytes exceed the %d-byte limit", node, total, limit)
        stats.skipped_too_large += 1
        return False

    inputs = [v for v in dict.fromkeys(node.inputs) if v is not None]
    log.debug("folding %r", node)
    _replace_with_constants(node, graph, results)
    stats.folded += 1
    stats.shape_queries += int(shape_query)
    stats.removed_constants += _remove_dead_constants(inputs)
    return True


#: Ops whose output is the data of their input rearranged: folding one whose input stays alive
#: stores that data twice.
_REARRANGING = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
#: Rearranged constants below this size may be duplicated (shape tensors and the like).
_TIED_MIN_BYTES = 4096


def _unties_a_weight(node: Node) -> bool:
    """True when folding ``node`` would copy a weight that other nodes keep reading (e.g. the
    Transpose of an embedding tied to its LM head): the copy unties it, doubling those bytes."""
    if node.op_type not in _REARRANGING or not node.is_standard_domain():
        return False
    src = node.input(0)
    if src is None or src.const_nbytes() < _TIED_MIN_BYTES:
        return False
    return src.is_graph_output() or any(u is not node for u in src.consumers())


def _reference_allowed(node: Node, model: Model) -> bool:
    if not node.is_standard_domain() or node.subgraphs:
        return False
    if any(a.ref_attr_name for a in node.attributes.values()):
        return False
    opset = model.opset("")
    return opset is not None and reference_supports(node.op_type, "", opset)


def _kernel_for(node: Node, model: Model) -> Kernel | None:
    if not node.is_standard_domain() or node.subgraphs:
        return None
    if any(a.ref_attr_name for a in node.attributes.values()):
        return None
    opset = model.opset("")
    if opset is None:
        return None
    return get_kernel(node.op_type, "", opset)


def _declared_static_shape(v: Value) -> tuple[int, ...] | None:
    """The shape ``v`` is guaranteed to have at run time, if fully static.

    For an initializer that is also a graph input only the declared input type counts: a
    caller may feed a tensor of another shape than the default.
    """
    if v.const is not None and v.is_graph_input():
        if v.type is None or not v.type.HasField("tensor_type") or not v.type.tensor_type.HasField("shape"):
            return None
        dims = v.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            return None
        return tuple(int(d.dim_value) for d in dims)
    return v.static_shape()


def _freed_bytes(node: Node, arrays: list[np.ndarray | None]) -> int:
    """Bytes of constant inputs that only ``node`` reads (they die when it is folded)."""
    total = 0
    reads = Counter(v for v in node.inputs if v is not None)
    for v, arr in zip(node.inputs, arrays):
        if v is None or arr is None or v not in reads or not is_constant(v):
            continue
        # O(1): a constant read by many nodes must not cost its fan-out on every fold.
        only_here = v.num_uses() == reads.pop(v)
        if only_here and not v.is_graph_output():
            total += v.const_nbytes() if v.const is not None else arr.nbytes
    return total


def _type_mismatch(v: Value, r: np.ndarray) -> str | None:
    """Why ``r`` cannot replace ``v`` (its declared element type or static dims differ)."""
    try:
        elem = helper.np_dtype_to_tensor_dtype(r.dtype)
    except Exception:
        return f"has dtype {r.dtype}, which ONNX cannot store"
    if v.type is None or not v.type.HasField("tensor_type"):
        return None
    tt = v.type.tensor_type
    if tt.elem_type and tt.elem_type != elem:
        declared = onnx.TensorProto.DataType.Name(tt.elem_type)
        return f"is declared {declared} but evaluates to {onnx.TensorProto.DataType.Name(elem)}"
    if tt.HasField("shape"):
        dims = tt.shape.dim
        if len(dims) != r.ndim or any(d.HasField("dim_value") and d.dim_value != n for d, n in zip(dims, r.shape)):
            return f"is declared with shape {[d.dim_value if d.HasField('dim_value') else d.dim_param for d in dims]} but evaluates to {list(r.shape)}"
    return None


def _replace_with_constants(node: Node, graph: Graph, results: list[np.ndarray]) -> None:
    """Remove ``node`` and turn each of its used outputs into a constant of the same name."""
    outputs = node.outputs
    node.set_outputs([])  # the values outlive the node
    graph.remove(node)
    for v, r in zip(outputs, results):
        if v is None or (not v.num_uses() and not v.is_graph_output()):
            continue
        if initializers_allowed(graph):
            v.set_const(r)
            graph.initializers[v.name] = v
        else:
            model = graph.model
            assert model is not None
            const = Node("Constant", [], [v], name=model.unique_node_name(f"{v.name}_const"))
            const.attributes["value"] = helper.make_attribute("value", numpy_helper.from_array(r, v.name))
            const.metadata_props.append(onnx.StringStringEntryProto(key=PROVENANCE_KEY, value=PROVENANCE))
            graph.append(const)


def _remove_dead_constants(values: list[Value]) -> int:
    """Remove initializers and Constant nodes among ``values`` that nothing reads any more."""
    removed = 0
    for v in values:
        if v.num_uses() or v.is_graph_output() or v.is_graph_input() or v.graph is None:
            continue
        p = v.producer
        if v.const is not None and v.graph.initializers.get(v.name) is v:
            v.graph.remove_initializer(v)
            removed += 1
        elif p is not None and p.op_type == "Constant" and p.is_standard_domain() and p.graph is not None:
            if all(o is None or (not o.num_uses() and not o.is_graph_output()) for o in p.outputs):
                p.graph.remove(p)
                removed += 1
    return removed
