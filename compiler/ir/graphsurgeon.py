"""A bridge to onnx-graphsurgeon (gs), so that users' graphsurgeon scripts can run on onnxforge
models: :func:`to_gs` and :func:`from_gs`. The only module of onnxforge that imports
``onnx_graphsurgeon`` (a test enforces it); :class:`onnxforge.passes.GraphSurgeonPass` runs a
script as a pass.

Conversion goes through a ModelProto (``to_proto`` -> ``gs.import_onnx``, ``gs.export_onnx`` ->
``from_proto``). gs 0.6.1 loses things on that trip; measured and read in its source:

Carried over by the bridge (a snapshot taken by :func:`to_gs` travels on the gs graph):
  * model fields gs does not model (metadata, doc string, domain, model version,
    configuration) are taken from the model the graph came from; model-local functions are kept
    out of gs and restored verbatim (functions the script appends to ``graph.functions`` are
    added); producer, IR version and opset imports keep gs's values, which are the model's unless
    the script changed them;
  * graph ``metadata_props``; node doc strings and ``metadata_props`` (onnxforge's provenance);
  * value types in full (denotations, sequence element shapes) with their doc strings and
    metadata, for every value whose dtype and shape the script left alone (gs keeps only a
    dtype and a shape);
  * initializers gs cannot show (unused ones, or ones only named by a subgraph output);
    initializers read inside a subgraph go back to the graph that owns them (gs writes a copy
    into every subgraph that reads one); the original order of initializers;
  * main-graph inputs that have an initializer (overridable defaults): gs would turn them into
    constants, so the script sees them as plain inputs and the default is re-attached;
  * ``value_info`` entries of a subgraph that describe values of an enclosing scope.

Refused before conversion, with a :class:`~onnxforge.errors.ModelError` naming the construct
(see :func:`unsupported`): optional, map, opaque, sparse-tensor and nested sequence value types
(gs crashes on optional ones, e.g. the backend cases ``test_identity_opt``, ``test_if_opt``,
``test_loop16_seq_none``, and cannot export the others); attributes of types gs skips
(``TYPE_PROTO(S)``, ``TENSORS``, ``GRAPHS``, ``SPARSE_TENSOR(S)``), empty list attributes (gs cannot
export them), strings that are not UTF-8, attribute doc strings and references; training info,
sparse initializers, quantization annotations, node overloads, subgraph inputs that have an
initializer; external data (gs would read it whole, relative to the working directory, on first
access to a constant's values).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from onnxforge.errors import ModelError
from onnxforge.ir.core import Model
from onnxforge.ir.graph_views import verify
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.ir.serde import from_proto, to_proto
from onnxforge.ir.tensor_data import is_external

log = logging.getLogger(__name__)

__all__ = ["GsGraph", "from_gs", "is_gs_graph", "to_gs", "unsupported"]

#: The graphsurgeon graph type (for type hints outside this module).
GsGraph = gs.Graph

_SNAPSHOT = "_onnxforge_snapshot"
_A = onnx.AttributeProto
_ATTR_OK = {_A.FLOAT, _A.INT, _A.STRING, _A.TENSOR, _A.GRAPH, _A.FLOATS, _A.INTS, _A.STRINGS}
_LIST_FIELD = {_A.FLOATS: "floats", _A.INTS: "ints", _A.STRINGS: "strings"}
_TYPE_WORDS = {
    "optional_type": "an optional type",
    "map_type": "a map type",
    "opaque_type": "an opaque type",
    "sparse_tensor_type": "a sparse tensor type",
}
# Model fields gs sets itself; every other field comes from the model the graph came from.
_GS_FIELDS = {"graph", "opset_import", "ir_version", "producer_name", "producer_version", "functions"}


def is_gs_graph(obj: object) -> bool:
    """True if ``obj`` is an onnx-graphsurgeon Graph."""
    return isinstance(obj, gs.Graph)


# --------------------------------------------------------------------------------------------
# What gs cannot represent
# --------------------------------------------------------------------------------------------
def unsupported(model: Model | onnx.ModelProto) -> str | None:
    """Why graphsurgeon cannot carry ``model`` faithfully (the first reason found), or None."""
    proto = model if isinstance(model, onnx.ModelProto) else to_proto(model, value_info=True)
    if len(proto.training_info):
        return "the model has training_info, which graphsurgeon drops"
    for gp in graph_protos(proto.graph):
        where = "the main graph" if gp is proto.graph else f"subgraph {gp.name!r}"
        if len(gp.sparse_initializer):
            return f"sparse initializer {gp.sparse_initializer[0].values.name!r} in {where} (graphsurgeon densifies sparse constants)"
        if len(gp.quantization_annotation):
            return f"{where} has quantization annotations, which graphsurgeon drops"
        if gp is not proto.graph:
            inputs = {vi.name for vi in gp.input}
            for t in gp.initializer:
                if t.name in inputs:
                    return f"input {t.name!r} of {where} has an initializer, which graphsurgeon turns into a constant"
        for t in gp.initializer:
            if is_external(t):
                return (
                    f"initializer {t.name!r} keeps its data in an external file, which graphsurgeon would read whole, "
                    "relative to the working directory"
                )
        for vi in (*gp.input, *gp.output, *gp.value_info):
            problem = _type_problem(vi.type) if vi.HasField("type") else None
            if problem:
                return f"value {vi.name!r} in {where} has {problem}, which graphsurgeon cannot import or export"
        for node in gp.node:
            desc = f"node {node.name or node.op_type!r} ({node.op_type}) in {where}"
            if node.overload:
                return f"{desc} calls function overload {node.overload!r}; graphsurgeon drops overloads"
            for a in node.attribute:
                problem = _attr_problem(a)
                if problem:
                    return f"attribute {a.name!r} of {desc} {problem}"
    return None


def _type_problem(t: onnx.TypeProto) -> str | None:
    kind = t.WhichOneof("value")
    if kind in (None, "tensor_type"):
        return None
    if kind == "sequence_type":
        elem = t.sequence_type.elem_type.WhichOneof("value")
        if elem in (None, "tensor_type"):
            return None
        return f"a sequence of {(elem or '').removesuffix('_type')} values"
    return _TYPE_WORDS.get(kind, f"a {kind}")


def _attr_problem(a: onnx.AttributeProto) -> str | None:
    if a.ref_attr_name:
        return f"refers to function attribute {a.ref_attr_name!r}"
    if a.type not in _ATTR_OK:
        return f"has type {_A.AttributeType.Name(a.type)}, which graphsurgeon skips"
    if a.doc_string:
        return "has a doc string, which graphsurgeon drops"
    if a.type in _LIST_FIELD and not len(getattr(a, _LIST_FIELD[a.type])):
        return "is an empty list, which graphsurgeon cannot export"
    try:
        if a.type == _A.STRING:
            a.s.decode("utf-8")
        elif a.type == _A.STRINGS:
            for s in a.strings:
                s.decode("utf-8")
    except UnicodeDecodeError:
        return "holds bytes that are not UTF-8 text, which graphsurgeon cannot decode"
    if a.type == _A.TENSOR and is_external(a.t):
        return "keeps its tensor in an external file, which graphsurgeon would read relative to the working directory"
    return None


# --------------------------------------------------------------------------------------------
# The snapshot that lets from_gs restore what gs drops
# --------------------------------------------------------------------------------------------
@dataclass
class _GraphInfo:
    metadata_props: list[onnx.StringStringEntryProto]
    #: Initializer names in their original order (main graph: input defaults included).
    initializer_order: list[str]
    #: Initializers gs does not show (unused, or only named by a subgraph output).
    hidden: list[onnx.TensorProto] = field(default_factory=list)
    #: value_info entries for names this graph's nodes do not produce.
    foreign_value_info: list[onnx.ValueInfoProto] = field(default_factory=list)


@dataclass
class _ValueInfo:
    state: tuple[Any, ...]
    info: onnx.ValueInfoProto


@dataclass
class _NodeInfo:
    op: str
    domain: str
    doc_string: str
    metadata_props: list[onnx.StringStringEntryProto]


@dataclass
class _Snapshot:
    proto: onnx.ModelProto
    producer: tuple[str, str]
    input_defaults: list[onnx.TensorProto] = field(default_factory=list)
    # keyed by id() of the gs object; the object itself is kept so that the id stays unique
    graphs: dict[int, tuple[Any, _GraphInfo]] = field(default_factory=dict)
    graphs_by_name: dict[str, _GraphInfo | None] = field(default_factory=dict)
    values: dict[int, tuple[Any, _ValueInfo]] = field(default_factory=dict)
    values_by_name: dict[str, _ValueInfo | None] = field(default_factory=dict)
    nodes: dict[int, tuple[Any, _NodeInfo]] = field(default_factory=dict)
    nodes_by_name: dict[str, _NodeInfo | None] = field(default_factory=dict)
    #: initializer name -> (id, name) of the gs graph whose initializer it was
    owners: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: attribute tensors (gs Constants, by id) whose TensorProto had no name field
    unnamed: dict[int, Any] = field(default_factory=dict)

    def graph_info(self, g: Any, main: bool) -> _GraphInfo | None:
        entry = self.graphs.get(id(g))
        if entry is not None and entry[0] is g:
            return entry[1]
        if main:
            return next(iter(self.graphs.values()))[1] if self.graphs else None
        return self.graphs_by_name.get(g.name)

    def value_info(self, t: Any, name: str) -> _ValueInfo | None:
        entry = self.values.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1]
        return self.values_by_name.get(name)

    def node_info(self, n: Any) -> _NodeInfo | None:
        entry = self.nodes.get(id(n))
        if entry is not None and entry[0] is n:
            return entry[1]
        info = self.nodes_by_name.get(n.name) if n.name else None
        if info is not None and info.op == n.op and info.domain == (n.domain or ""):
            return info
        return None


def _state(t: Any) -> tuple[Any, ...]:
    shape = None if t.shape is None else tuple(t.shape)
    return (type(t).__name__, getattr(t, "type", None), t.dtype, shape)


def _same_state(now: tuple[Any, ...], then: tuple[Any, ...]) -> bool:
    """Unchanged dtype and shape. ``Variable.copy()`` (and so ``Graph.copy()``) resets the type
    kind to gs's default ``tensor_type``, so that default does not count as a change."""
    if now == then:
        return True
    return now[1] == "tensor_type" and (now[0], now[2], now[3]) == (then[0], then[2], then[3])


def _pairs(g: Any, gp: onnx.GraphProto) -> Iterator[tuple[Any, onnx.GraphProto, int]]:
    """(gs graph, graph proto, index of the parent pair or -1) for ``g`` and its subgraphs, pre-order.

    Holds for a graph gs imported from ``gp`` and for a proto gs exported from ``g``: nodes
    correspond by position, subgraphs by attribute name."""
    out: list[tuple[Any, onnx.GraphProto, int]] = []
    stack = [(g, gp, -1)]
    while stack:
        cur, cur_p, parent = stack.pop()
        index = len(out)
        out.append((cur, cur_p, parent))
        if len(cur.nodes) != len(cur_p.node):
            raise ModelError(f"graphsurgeon graph {cur.name!r} and its export disagree on the number of nodes")
        children = []
        for n, np_ in zip(cur.nodes, cur_p.node):
            by_name = {a.name: a for a in np_.attribute}
            for key, val in n.attrs.items():
                if isinstance(val, gs.Graph) and key in by_name and by_name[key].type == _A.GRAPH:
                    children.append((val, by_name[key].g, index))
        stack.extend(reversed(children))
    yield from out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """gs prints its warnings; the bridge checks what matters itself and raises the errors."""
    with G_LOGGER.suppress(G_LOGGER.CRITICAL + 10):
        yield


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 240 else text[:237] + "..."


# --------------------------------------------------------------------------------------------
# IR -> gs
# --------------------------------------------------------------------------------------------
def to_gs(model: Model) -> Any:
    """The model as an onnx-graphsurgeon Graph; raises :class:`ModelError` for what gs cannot
    represent (see :func:`unsupported`). The model is not modified.

    Model-local functions are not shown to gs (``graph.functions`` starts empty); main-graph
    inputs that have an initializer appear as plain inputs. Pass the graph (or one built from
    it) to :func:`from_gs` to get a model back.
    """
    proto = to_proto(model, value_info=True)
    reason = unsupported(proto)
    if reason is not None:
        raise ModelError(f"graphsurgeon cannot represent this model: {reason}")
    snap = _Snapshot(proto, (proto.producer_name, proto.producer_version))
    main_order = [t.name for t in proto.graph.initializer]
    inputs = {vi.name for vi in proto.graph.input}
    if any(t.name in inputs for t in proto.graph.initializer):
        keep: list[onnx.TensorProto] = []
        for t in proto.graph.initializer:
            (snap.input_defaults if t.name in inputs else keep).append(t)
        del proto.graph.initializer[:]  # upb keeps the removed messages alive for our references
        proto.graph.initializer.extend(keep)
    proto.ClearField("functions")
    with _quiet():
        try:
            graph = gs.import_onnx(proto)
        except Exception as e:
            raise ModelError(f"graphsurgeon cannot import this model: {type(e).__name__}: {_one_line(e)}") from e
    _take_snapshot(snap, graph, proto.graph, main_order)
    setattr(graph, _SNAPSHOT, snap)
    return graph


def _take_snapshot(snap: _Snapshot, graph: Any, main_proto: onnx.GraphProto, main_order: list[str]) -> None:
    pairs = list(_pairs(graph, main_proto))
    node_names: Counter[str] = Counter(np_.name for _, gp, _ in pairs for np_ in gp.node if np_.name)
    graph_names: Counter[str] = Counter(g.name for g, _, _ in pairs)
    # Constants each graph or one of its subgraphs shows.
    shown: list[set[str]] = [set() for _ in pairs]
    for i, (g, _, _) in enumerate(pairs):
        names = {name for name, t in g.tensors().items() if isinstance(t, gs.Constant)}
        j = i
        while j >= 0:
            shown[j] |= names
            j = pairs[j][2]
    for i, (g, gp, _) in enumerate(pairs):
        order = main_order if i == 0 else [t.name for t in gp.initializer]
        info = _GraphInfo(list(gp.metadata_props), order)
        local = {o for np_ in gp.node for o in np_.output if o}
        for t in gp.initializer:
            if t.name in shown[i]:
                snap.owners.setdefault(t.name, (id(g), g.name))
            else:
                info.hidden.append(t)
        tensors = g.tensors()
        for t, vi in (*zip(g.inputs, gp.input), *zip(g.outputs, gp.output)):
            _remember_value(snap, t, vi)
        for vi in gp.value_info:
            t = tensors.get(vi.name)
            if vi.name in local and t is not None:
                _remember_value(snap, t, vi)
            else:
                info.foreign_value_info.append(vi)
        snap.graphs[id(g)] = (g, info)
        snap.graphs_by_name[g.name] = info if graph_names[g.name] == 1 else None
        for n, np_ in zip(g.nodes, gp.node):
            for a in np_.attribute:
                if a.type == _A.TENSOR and not a.t.HasField("name") and a.name in n.attrs:
                    snap.unnamed[id(n.attrs[a.name])] = n.attrs[a.name]
            if np_.doc_string or len(np_.metadata_props):
                ninfo = _NodeInfo(np_.op_type, np_.domain, np_.doc_string, list(np_.metadata_props))
                snap.nodes[id(n)] = (n, ninfo)
                if np_.name:
                    snap.nodes_by_name[np_.name] = ninfo if node_names[np_.name] == 1 else None


def _remember_value(snap: _Snapshot, t: Any, vi: onnx.ValueInfoProto) -> None:
    if id(t) in snap.values:
        return
    info = _ValueInfo(_state(t), vi)
    snap.values[id(t)] = (t, info)
    if vi.name in snap.values_by_name:
        snap.values_by_name[vi.name] = None  # ambiguous: restore by identity only
    else:
        snap.values_by_name[vi.name] = info


# --------------------------------------------------------------------------------------------
# gs -> IR
# --------------------------------------------------------------------------------------------
def from_gs(graph: Any, like: Model, *, source: Any = None) -> Model:
    """A new IR model from an onnx-graphsurgeon Graph, with everything gs does not model taken
    from ``like`` (the model the graph came from) and from the snapshot :func:`to_gs` left on
    the graph (or on ``source``, when ``graph`` is a different object built from it).

    Raises :class:`ModelError` when gs cannot export the graph or the result is not a valid
    model (undefined inputs, names defined twice, cycles). Nodes come back in topological order.
    """
    if not is_gs_graph(graph):
        raise ModelError(f"expected an onnx-graphsurgeon Graph, got {type(graph).__name__}")
    # vars(), not getattr(): gs.Graph.__getattr__ logs an error for unknown attributes.
    snap: _Snapshot | None = vars(graph).get(_SNAPSHOT) or (vars(source).get(_SNAPSHOT) if source is not None else None)
    with _quiet():
        try:
            out = gs.export_onnx(graph, do_type_check=False)
        except Exception as e:
            raise ModelError(f"graphsurgeon cannot export the graph: {type(e).__name__}: {_one_line(e)}") from e
    pairs = list(_pairs(graph, out.graph))
    if snap is not None:
        for i, (g, gp, _) in enumerate(pairs):
            _restore_graph(snap, g, gp, i == 0)
    _place_initializers(snap, pairs)
    _restore_model_fields(out, graph, like, snap)
    model = from_proto(out)
    model.tensor_store = like.tensor_store
    model.export_value_info = like.export_value_info
    for g in list(model.graph.all_graphs()):
        try:
            g.toposort()
        except ValueError as e:
            raise ModelError(f"the graphsurgeon graph is not acyclic: {e}") from None
    verify(model)
    return model


def _restore_graph(snap: _Snapshot, g: Any, gp: onnx.GraphProto, main: bool) -> None:
    info = snap.graph_info(g, main)
    if info is not None and not len(gp.metadata_props):
        gp.metadata_props.extend(info.metadata_props)
    for t, vi in (*zip(g.inputs, gp.input), *zip(g.outputs, gp.output)):
        _restore_value(snap, t, vi)
    local = {o for np_ in gp.node for o in np_.output if o}
    tensors = g.tensors()
    kept = []
    for vi in gp.value_info:
        if vi.name in local:
            t = tensors.get(vi.name)
            if t is not None:
                _restore_value(snap, t, vi)
            kept.append(vi)
    if info is not None:
        kept.extend(vi for vi in info.foreign_value_info if vi.name not in local)
    if len(kept) != len(gp.value_info) or info is not None and info.foreign_value_info:
        del gp.value_info[:]
        gp.value_info.extend(kept)
    for n, np_ in zip(g.nodes, gp.node):
        for a in np_.attribute:
            if a.type == _A.TENSOR and not a.t.name and id(n.attrs.get(a.name)) in snap.unnamed:
                a.t.ClearField("name")  # gs writes an empty name where there was none
        ninfo = snap.node_info(n)
        if ninfo is not None:
            if not np_.doc_string:
                np_.doc_string = ninfo.doc_string
            if not len(np_.metadata_props):
                np_.metadata_props.extend(ninfo.metadata_props)


def _restore_value(snap: _Snapshot, t: Any, vi: onnx.ValueInfoProto) -> None:
    """Put back the full original ValueInfo of ``t`` when the script left its dtype and shape
    alone (gs keeps only those two); otherwise keep gs's, with the doc string and metadata."""
    info = snap.value_info(t, vi.name)
    if info is None:
        return
    name = vi.name
    if _same_state(_state(t), info.state):
        vi.CopyFrom(info.info)
        vi.name = name
        return
    if info.info.doc_string and not vi.doc_string:
        vi.doc_string = info.info.doc_string
    if len(info.info.metadata_props) and not len(vi.metadata_props):
        vi.metadata_props.extend(info.info.metadata_props)


def _place_initializers(snap: _Snapshot | None, pairs: list[tuple[Any, onnx.GraphProto, int]]) -> None:
    """Put each constant into one graph: the one that owned it, else the innermost graph that
    encloses every use (gs writes a copy into every graph that reads it); bring back hidden
    initializers and input defaults; keep the original order."""
    emitted: dict[str, onnx.TensorProto] = {}
    const_obj: dict[str, Any] = {}
    used_in: dict[str, list[int]] = {}
    for i, (g, gp, _) in enumerate(pairs):
        if not len(gp.initializer):
            continue
        shown = g.tensors()
        for t in gp.initializer:
            obj = shown.get(t.name)
            prev = const_obj.get(t.name)
            if prev is not None and obj is not None and prev is not obj and emitted[t.name] != t:
                # (equal copies, e.g. from Graph.copy() of a subgraph reading it, are one constant)
                raise ModelError(f"the graphsurgeon graph has two different constants named {t.name!r}")
            const_obj.setdefault(t.name, obj)
            emitted.setdefault(t.name, t)
            used_in.setdefault(t.name, []).append(i)
    if snap is None and all(len(v) == 1 for v in used_in.values()):
        return

    def ancestors(i: int) -> list[int]:
        chain = []
        while i >= 0:
            chain.append(i)
            i = pairs[i][2]
        return chain

    index_of = {id(g): i for i, (g, _, _) in enumerate(pairs)}
    graph_names = Counter(g.name for g, _, _ in pairs)
    index_by_name = {g.name: i for i, (g, _, _) in enumerate(pairs) if graph_names[g.name] == 1}

    def original_owner(name: str) -> int | None:
        """Where the initializer was: the same gs graph, or one with the same unique name
        (``Graph.copy()``)."""
        if snap is None or name not in snap.owners:
            return None
        gid, gname = snap.owners[name]
        if gid in index_of and snap.graphs.get(gid, (None,))[0] is pairs[index_of[gid]][0]:
            return index_of[gid]
        return index_by_name.get(gname)

    owned: list[list[str]] = [[] for _ in pairs]
    for name, uses in used_in.items():
        common = set(ancestors(uses[0]))
        for u in uses[1:]:
            common &= set(ancestors(u))
        owner = max(common)  # pre-order: the deepest common ancestor has the largest index
        orig = original_owner(name)
        if orig is not None and orig in common:
            owner = orig
        owned[owner].append(name)

    for i, (g, gp, _) in enumerate(pairs):
        info = snap.graph_info(g, i == 0) if snap is not None else None
        mine = dict.fromkeys(owned[i])
        defined = {vi.name for vi in gp.input} | {o for np_ in gp.node for o in np_.output if o}
        tensors: dict[str, onnx.TensorProto] = {name: emitted[name] for name in mine}
        if info is not None:
            for t in info.hidden:
                if t.name not in tensors and t.name not in defined:
                    tensors[t.name] = t
        if i == 0 and snap is not None:
            inputs = {vi.name for vi in gp.input}
            for t in snap.input_defaults:
                if t.name in inputs and t.name not in tensors:
                    tensors[t.name] = t
        order = info.initializer_order if info is not None else []
        names = [n for n in order if n in tensors]
        names += [n for n in tensors if n not in set(names)]
        current = [t.name for t in gp.initializer]
        if names == current:
            continue
        new = [tensors[n] for n in names]
        del gp.initializer[:]
        gp.initializer.extend(new)


def _is_repeated(fd: Any) -> bool:
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


def _restore_model_fields(out: onnx.ModelProto, graph: Any, like: Model, snap: _Snapshot | None) -> None:
    shell = like.proto_shell
    for fd in shell.DESCRIPTOR.fields:
        if fd.name in _GS_FIELDS:
            continue
        if _is_repeated(fd):
            out.ClearField(fd.name)
            getattr(out, fd.name).extend(getattr(shell, fd.name))
        elif fd.message_type is not None:
            out.ClearField(fd.name)
            if shell.HasField(fd.name):
                getattr(out, fd.name).CopyFrom(getattr(shell, fd.name))
        else:
            out.ClearField(fd.name)
            if shell.HasField(fd.name):
                setattr(out, fd.name, getattr(shell, fd.name))
    producer = (graph.producer_name or "", graph.producer_version or "")
    out.ClearField("producer_name")
    out.ClearField("producer_version")
    if producer == ("", "") or (snap is not None and producer == snap.producer):  # gs.Graph.copy() drops it
        for name in ("producer_name", "producer_version"):
            if shell.HasField(name):
                setattr(out, name, getattr(shell, name))
    else:
        out.producer_name, out.producer_version = producer
    added = list(out.functions)
    out.ClearField("functions")
    out.functions.extend(shell.functions)
    known = {(f.domain, f.name, f.overload) for f in shell.functions}
    for f in added:
        if (f.domain, f.name, f.overload) in known:
            raise ModelError(
                f"the graphsurgeon graph defines function {f.domain}::{f.name}, which the model already has "
                "(model-local functions are not shown to graphsurgeon scripts)"
            )
        out.functions.append(f)
