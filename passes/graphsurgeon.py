"""Run a user's onnx-graphsurgeon script as a pass: :class:`GraphSurgeonPass`.

The script is a function ``fn(graph: gs.Graph) -> gs.Graph | None`` that edits the graph in
place (return None or the same graph) or returns a new one. The model goes to graphsurgeon and
back through :mod:`onnxforge.ir.graphsurgeon`, which refuses models gs cannot represent (a
:class:`~onnxforge.errors.ModelError` naming the construct) and restores what gs drops. See
docs/WRITING_PASSES.md, "Running a graphsurgeon script as a pass".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onnxforge.equivalence import EXACT, REORDER, assert_equivalent
from onnxforge.errors import UsageError
from onnxforge.ir import Model, to_proto
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

#: A graphsurgeon script: edits ``graph`` in place (returns None) or returns a graph.
GraphSurgeonFn = Callable[[Any], Any]


@dataclass(frozen=True)
class GraphSurgeonOptions(PassOptions):
    #: The script keeps every output exactly (the user's claim; onnxforge cannot prove it).
    #: ``verify=True`` then checks outputs at the exact tolerance instead of the reordering one.
    lossless: bool = False
    #: Refuse a script that changes the main graph's inputs or outputs (names, types, shapes),
    #: as every onnxforge pass must keep them.
    keep_interface: bool = True
    #: Run onnxruntime before and after the script on seeded random feeds and fail the pass if
    #: outputs differ beyond :data:`onnxforge.equivalence.EXACT` (lossless) or ``REORDER``.
    verify: bool = False


class GraphSurgeonPass(Pass[GraphSurgeonOptions]):
    """Runs ``fn(graph)`` on the model as an onnx-graphsurgeon Graph.

    ``name`` (default ``graphsurgeon-<fn name>``) is what reports, ``disable=`` and errors use.
    ``modified`` is decided by comparing the model before and after structurally, so a script
    that changes nothing leaves the model untouched and reports ``modified=False``.
    """

    name = "graphsurgeon"
    summary = "Runs a user's onnx-graphsurgeon function as a pass (refuses what gs cannot represent)."
    Options = GraphSurgeonOptions
    #: Scripts are not lossless unless their author says so (``lossless=True``): ``compile(...,
    #: verify=True)`` then holds the pipeline to the lossless allclose check instead of the
    #: lossy budget it gives undeclared passes.
    lossless = False

    def __init__(
        self,
        fn: GraphSurgeonFn,
        *,
        name: str | None = None,
        lossless: bool = False,
        keep_interface: bool = True,
        verify: bool = False,
    ) -> None:
        if not callable(fn):
            raise UsageError(f"GraphSurgeonPass needs a function of a graphsurgeon Graph, got {type(fn).__name__}")
        super().__init__(lossless=lossless, keep_interface=keep_interface, verify=verify)
        self.fn = fn
        pass_name = name if name is not None else _default_name(fn)
        if not re.fullmatch(r"[\w.-]+", pass_name):
            # it names dump files (--dump-dir) and is matched by disable=
            raise UsageError(f"GraphSurgeonPass name {pass_name!r}: use letters, digits, '_', '.' and '-' only")
        self.name = pass_name  # type: ignore[misc]
        self.lossless = lossless

    def __repr__(self) -> str:
        return f"GraphSurgeonPass({getattr(self.fn, '__qualname__', self.fn)!r}, name={self.name!r}, {self.options})"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxforge.ir import graphsurgeon as bridge

        opts = self.options
        before = to_proto(model, value_info=True)
        graph = bridge.to_gs(model)
        returned = self.fn(graph)
        if returned is None:
            returned = graph
        elif not bridge.is_gs_graph(returned):
            raise TypeError(f"the script returned {type(returned).__name__}; expected a graphsurgeon Graph or None")
        rebuilt = bridge.from_gs(returned, model, source=graph)
        after = to_proto(rebuilt, value_info=True)
        if before.SerializeToString(deterministic=True) == after.SerializeToString(deterministic=True):
            return PassResult(False)
        if opts.keep_interface:
            _check_interface(before, after)
        if opts.verify:
            _check_outputs(before, after, lossless=opts.lossless)
        if not rebuilt.export_value_info and _typed_intermediates(after) - _typed_intermediates(before):
            # The script typed intermediate values (new or changed value_info): write them out,
            # although the input model carried none.
            rebuilt.export_value_info = True
        nodes_before = model.num_nodes()
        model.replace_contents(rebuilt)
        nodes_after = model.num_nodes()
        return PassResult(
            True,
            stats={
                "removed_nodes": max(0, nodes_before - nodes_after),
                "added_nodes": max(0, nodes_after - nodes_before),
            },
        )


def _default_name(fn: GraphSurgeonFn) -> str:
    base = getattr(fn, "__name__", "") or ""
    if not base.isidentifier():  # lambdas, partials, callable objects
        return "graphsurgeon"
    return "graphsurgeon-" + re.sub(r"_+", "-", base).strip("-").lower()


def _typed_intermediates(proto: Any) -> set[bytes]:
    return {vi.SerializeToString(deterministic=True) for g in graph_protos(proto.graph) for vi in g.value_info}


def _check_interface(before: Any, after: Any) -> None:
    for kind in ("input", "output"):
        old, new = list(getattr(before.graph, kind)), list(getattr(after.graph, kind))
        if old == new:
            continue
        old_names, new_names = [v.name for v in old], [v.name for v in new]
        if old_names != new_names:
            what = f"names {old_names} -> {new_names}"
        else:
            changed = [o.name for o, n in zip(old, new) if o != n]
            what = f"types or shapes of {changed}"
        raise ValueError(
            f"the script changed the model's graph {kind}s ({what}); passes keep the interface "
            "(GraphSurgeonPass(..., keep_interface=False) allows it)"
        )


def _check_outputs(before: Any, after: Any, *, lossless: bool) -> None:
    rtol, atol = EXACT if lossless else REORDER
    assert_equivalent(before, after, rtol=rtol, atol=atol)  # no external data: the bridge refuses it
