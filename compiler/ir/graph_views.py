"""Whole-graph views of the IR: a networkx graph and a structural verifier."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxforge.errors import ModelError
from onnxforge.ir.core import Graph, Model, captured_values

if TYPE_CHECKING:
    import networkx as nx


def to_networkx(graph: Graph) -> nx.MultiDiGraph:
    """Nodes keyed by their stable ``id`` (with ``node`` attribute); an edge per (value, use).

    Uses from inside subgraphs become edges to the node that owns the subgraph.
    """
    import networkx as nx

    g = nx.MultiDiGraph()
    for n in graph:
        g.add_node(n.id, node=n, op_type=n.op_type)
    for n in graph:
        for i, v in enumerate(n.inputs):
            if v is not None and v.producer is not None and v.producer.graph is graph:
                g.add_edge(v.producer.id, n.id, value=v.name, index=i)
        if n.subgraphs:
            for v in captured_values(n):
                if v.producer is not None and v.producer.graph is graph:
                    g.add_edge(v.producer.id, n.id, value=v.name, index=-1)
    return g


def verify(model: Model) -> None:
    """Check IR invariants; raises :class:`ModelError` describing the first violation.

    Value names unique in the model, every node input defined in scope, use lists consistent
    with node inputs, graphs acyclic, graph outputs defined.
    """
    names: dict[str, object] = {}
    for graph in model.graph.all_graphs():
        scope_ok = _scope_values(graph)
        for v in graph.values():
            prev = names.get(v.name)
            if prev is not None and prev is not v:
                raise ModelError(f"value name {v.name!r} is defined twice")
            names[v.name] = v
        for n in graph:
            if n.graph is not graph:
                raise ModelError(f"{n!r} is listed in {graph!r} but points at another graph")
            for i, v in enumerate(n.inputs):
                if v is None:
                    continue
                if (n, i) not in v._uses:
                    raise ModelError(f"use-def out of sync: {v.name!r} does not list {n!r} input {i}")
                if v not in scope_ok:
                    raise ModelError(f"{n!r} reads {v.name!r}, which is not defined in its scope")
            for v in n.outputs:
                if v is not None and v.producer is not n:
                    raise ModelError(f"{v.name!r} lists the wrong producer")
        for v in graph.outputs:
            if v not in scope_ok:
                raise ModelError(f"graph output {v.name!r} is not defined")
        for v in graph.values():
            for user, idx in v._uses:
                if user.input(idx) is not v:
                    raise ModelError(f"use-def out of sync: {v.name!r} lists a stale use by {user!r}")
        try:
            _check_acyclic(graph)
        except ValueError as e:
            raise ModelError(str(e)) from None


def _scope_values(graph: Graph) -> set:
    ok: set = set()
    g: Graph | None = graph
    while g is not None:
        ok.update(g.values())
        g = g.parent.graph if g.parent is not None else None
    return ok


def _check_acyclic(graph: Graph) -> None:
    import copy

    probe = copy.copy(graph)
    probe._nodes = dict(graph._nodes)
    probe.model = None
    probe.toposort()
