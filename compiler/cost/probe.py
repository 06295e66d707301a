"""Shapes that static inference cannot find, read off onnxruntime runs.

Static shape inference stops at data-dependent shapes (a Reshape whose target is computed
through a chain onnx does not propagate, values inside ``If`` branches that depend on them,
NonZero, ...). The probe runs the model once on onnxruntime (CPU, optimizations off) with inputs
of the bound shapes and every main-graph value exposed as an output. Subgraph values are not
visible to onnxruntime, so each subgraph of an ``If``/``Loop``/``Scan`` is then run on its own,
as a model whose inputs are its formal inputs (a Loop's first iteration, a Scan's first slice)
and the outer values it captures, fed with the arrays of the outer run; both branches of an
``If`` are probed. A subgraph that fails to run (e.g. the branch not meant for these inputs) is
skipped. The probe returns types only; nothing of the model changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import numpy as np
import onnx
from onnx import helper

from onnxforge.equivalence import random_feeds
from onnxforge.ir import Model, to_proto
from onnxforge.ir.tensor_data import is_external, iter_tensors
from onnxforge.runtime.session import create_session, run_session

log = logging.getLogger(__name__)

#: Models with more initializer bytes than this are not probed (the run would be costly).
MAX_PROBE_BYTES = 1 << 30
_MAX_DEPTH = 4
#: Seconds one probe run may take: a valid model can loop for hours (a Loop with a trip count of
#: 2**31 - 1 ran until onnxruntime aborted out of memory, gigabytes a second); the graph is then
#: left to static inference like any graph that fails to run.
PROBE_SECONDS = 5.0


def probe_types(
    model: Model,
    input_shapes: Mapping[str, tuple[int, ...]],
    feeds: Mapping[str, np.ndarray] | None = None,
) -> dict[str, onnx.TypeProto]:
    """Types (element type and concrete shape) of the values of every graph that onnxruntime
    runs could measure. Empty when the model cannot be probed (external data, too large, or
    onnxruntime refuses it); the reason is logged."""
    weight_bytes = sum(v.const_nbytes() for g in model.graph.all_graphs() for v in g.initializers.values())
    if weight_bytes > MAX_PROBE_BYTES:
        log.info("shape probe skipped: %d MB of weights", weight_bytes >> 20)
        return {}
    proto = to_proto(model)
    if any(is_external(t) for t in iter_tensors(proto)):
        log.info("shape probe skipped: the model refers to external data")
        return {}
    try:
        run_feeds = random_feeds(proto, shapes={k: list(v) for k, v in input_shapes.items()})
    except Exception as e:
        log.info("shape probe skipped: %s", e)
        return {}
    run_feeds.update(feeds or {})
    arrays: dict[str, np.ndarray] = {}
    _probe_graph(proto, proto.graph, dict(run_feeds), arrays, [], 0, {})
    types: dict[str, onnx.TypeProto] = {}
    for name, arr in arrays.items():
        try:
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        except Exception:
            continue
        types[name] = helper.make_tensor_type_proto(elem, list(arr.shape))
    return types


def _subgraph_attrs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.name, a.g
        for i, g in enumerate(a.graphs):
            yield f"{a.name}[{i}]", g


def _defined(g: onnx.GraphProto) -> set[str]:
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    for n in g.node:
        names.update(o for o in n.output if o)
    return names


def _captured(g: onnx.GraphProto) -> list[str]:
    """Names a graph (and its nested subgraphs) reads without defining them."""
    out: dict[str, None] = {}
    defined = _defined(g)
    for n in g.node:
        for name in n.input:
            if name and name not in defined:
                out[name] = None
        for _, sg in _subgraph_attrs(n):
            for name in _captured(sg):
                if name not in defined:
                    out[name] = None
    for o in g.output:
        if o.name not in defined:
            out[o.name] = None
    return list(out)


def _run(
    proto: onnx.ModelProto,
    graph: onnx.GraphProto,
    formal: list[str],
    feeds: dict[str, np.ndarray],
    outer_inits: Mapping[str, onnx.TensorProto],
) -> dict[str, np.ndarray] | None:
    """Run ``graph`` as a model whose inputs are ``formal`` + the names it captures (outer
    initializers it captures become its own initializers)."""
    g = onnx.GraphProto()
    g.CopyFrom(graph)
    del g.input[:]
    del g.output[:]
    captured = [c for c in _captured(graph) if c not in formal]
    g.initializer.extend(outer_inits[c] for c in captured if c in outer_inits and c not in feeds)
    inputs = [*formal, *[c for c in captured if c not in outer_inits or c in feeds]]
    for name in inputs:
        arr = feeds.get(name)
        if arr is None:
            log.debug("shape probe of graph %r skipped: no value for %r", graph.name, name)
            return None
        g.input.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)))
    exposed = set(inputs)
    for n in graph.node:  # Constant outputs too: nested subgraphs may capture them
        for name in n.output:
            if name and name not in exposed:
                g.output.add().name = name
                exposed.add(name)
    if not g.output:
        return {}
    m = onnx.ModelProto()
    m.ir_version = proto.ir_version
    m.opset_import.extend(proto.opset_import)
    m.functions.extend(proto.functions)
    m.graph.CopyFrom(g)
    out = _session_run(m, {k: feeds[k] for k in inputs}, graph.name)
    if out is None:
        # Inputs declared at their concrete shapes let onnxruntime's type inference specialize
        # every branch, including the one these inputs never take, where it may then fail (Silero
        # VAD's 8 kHz branch squeezes a dim that is 2 at 16 kHz): retry with the dims left open.
        for vi in m.graph.input:
            for d in vi.type.tensor_type.shape.dim:
                d.ClearField("dim_value")
        out = _session_run(m, {k: feeds[k] for k in inputs}, graph.name)
    return None if out is None else {k: v for k, v in out.items() if isinstance(v, np.ndarray)}


def _session_run(m: onnx.ModelProto, feeds: dict[str, np.ndarray], name: str) -> dict[str, object] | None:
    try:
        # log_level 4: failures are expected (the branch not taken) and handled
        sess = create_session(m, log_level=4)
        return dict(run_session(sess, feeds, seconds=PROBE_SECONDS))
    except Exception as e:
        log.debug("shape probe of graph %r failed: %s", name, str(e).splitlines()[0][:200])
        return None


def _probe_graph(
    proto: onnx.ModelProto,
    graph: onnx.GraphProto,
    feeds: dict[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    formal: list[str],
    depth: int,
    outer_inits: Mapping[str, onnx.TensorProto],
) -> None:
    if depth == 0:
        formal = [i.name for i in graph.input if i.name in feeds]
    result = _run(proto, graph, formal, feeds, outer_inits)
    if result is None:
        return
    arrays.update(result)
    if depth >= _MAX_DEPTH:
        return
    scope = {**feeds, **result}
    inits = {**outer_inits, **{t.name: t for t in graph.initializer}}
    for node in graph.node:
        for attr, sg in _subgraph_attrs(node):
            sub_feeds = dict(scope)
            sub_formal = _formal_feeds(node, attr, sg, scope, sub_feeds)
            if sub_formal is None:
                continue
            _probe_graph(proto, sg, sub_feeds, arrays, sub_formal, depth + 1, inits)


def _formal_feeds(
    node: onnx.NodeProto, attr: str, sg: onnx.GraphProto, scope: Mapping[str, np.ndarray], feeds: dict[str, np.ndarray]
) -> list[str] | None:
    """Fill ``feeds`` with the subgraph's formal inputs for its first iteration; None if unknown."""
    names = [i.name for i in sg.input]
    if node.op_type == "If" or not names:
        return []
    if node.op_type == "Loop" and attr == "body":
        states = [scope.get(n) if n else None for n in node.input[2:]]
        values = [np.array(0, np.int64), np.array(True), *states]
    elif node.op_type == "Scan" and attr == "body":
        n_scan = next((a.i for a in node.attribute if a.name == "num_scan_inputs"), 0)
        axes = next((list(a.ints) for a in node.attribute if a.name == "scan_input_axes"), [])
        inputs = [scope.get(n) for n in node.input]
        n_state = len(inputs) - n_scan
        values = list(inputs[:n_state])
        for k, x in enumerate(inputs[n_state:]):
            axis = axes[k] if k < len(axes) else 0
            values.append(None if x is None else np.take(x, 0, axis=axis))
    else:
        return None
    if len(values) != len(names) or any(v is None for v in values):
        return None
    for name, v in zip(names, values):
        feeds[name] = np.asarray(v)
    return names
