"""Placement: which execution provider took each node, as onnxruntime itself reports it.

Two sources, both onnxruntime's own:

* ``assignment-info`` (onnxruntime 1.22 and later): the session records which provider each node
  was assigned to when it partitioned the graph (session config
  ``session.record_ep_graph_assignment_info``) and ``get_provider_graph_assignment_info()``
  returns it. Assignment happens after onnxruntime's basic (level-1) rewrites such as constant
  folding and before its provider-specific fusions, which keep a node's provider; nodes
  onnxruntime folded away at load time run on no provider and are listed as ``removed``.
* ``profiling`` (older builds, or ``method="profiling"``): one profiled run; every kernel event
  carries the provider that ran it. Names are those after all of onnxruntime's rewrites.

When no provider of the target has a kernel for a node, onnxruntime refuses to make the session
("Could not find an implementation for ..."). The placement then says so per node: the node
onnxruntime named, plus every other node whose (domain, op, version) has no kernel in any of the
target's providers according to onnxruntime's kernel registry (``unplaced``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort

from onnxforge.runtime.session import ModelSource, deployment_session
from onnxforge.runtime.target import CPU_EP, Target

log = logging.getLogger(__name__)

Method = Literal["auto", "assignment-info", "profiling"]

_RECORD_KEY = "session.record_ep_graph_assignment_info"
_NOT_IMPLEMENTED = re.compile(r"Could not find an implementation for (\S+?)\((\d+)\) node with name '([^']*)'")


@dataclass(frozen=True)
class NodePlacement:
    """One node as onnxruntime runs it. ``provider`` is ``""`` for a node that no provider of
    the target can run (see ``reason``)."""

    name: str
    op_type: str
    domain: str
    provider: str
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name, "op_type": self.op_type, "domain": self.domain, "provider": self.provider}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class Placement:
    """Where onnxruntime put the nodes of a model for a target.

    ``nodes``: every node onnxruntime runs, with its provider. ``removed``: names of the model's
    nodes onnxruntime does not run (folded into constants or eliminated at load time).
    ``added``: names in ``nodes`` that are not the model's (made by onnxruntime's rewrites).
    ``unplaced``: nodes no provider of the target has a kernel for; when there are any,
    onnxruntime made no session (``error`` is its message) and ``nodes`` is empty.
    """

    target: str
    providers: list[str]
    source: str
    nodes: list[NodePlacement] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    unplaced: list[NodePlacement] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.unplaced and not self.error

    def counts(self) -> dict[str, int]:
        """Nodes per provider, in the target's provider order."""
        c = Counter(n.provider for n in self.nodes)
        ordered = {p: c[p] for p in self.providers if c.get(p)}
        ordered.update({p: n for p, n in c.items() if p not in ordered})
        return ordered

    def provider_of(self) -> dict[str, str]:
        """Node name -> provider."""
        return {n.name: n.provider for n in self.nodes}

    def on(self, provider: str) -> list[NodePlacement]:
        return [n for n in self.nodes if n.provider == provider]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "providers": list(self.providers),
            "source": self.source,
            "counts": self.counts(),
            "nodes": [n.to_json() for n in self.nodes],
            "removed": list(self.removed),
            "added": list(self.added),
            "unplaced": [n.to_json() for n in self.unplaced],
            "error": self.error,
        }


def _model_proto(model: ModelSource) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return onnx.load(os.fspath(model), load_external_data=False)


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk(g)


def _domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


def placement(
    model: ModelSource,
    target: Target,
    *,
    method: Method = "auto",
    feeds: Mapping[str, np.ndarray] | None = None,
    strict: bool = True,
) -> Placement:
    """Which provider of ``target`` onnxruntime gives each node of ``model``, at the target's
    session options. ``method``: ``auto`` (the assignment info where this onnxruntime has it,
    else profiling), or one of the two; profiling runs the model once on ``feeds``.
    ``strict``: a provider onnxruntime dropped while starting is an error (else a warning)."""
    proto = _model_proto(model)
    src: ModelSource = model if not isinstance(model, onnx.ModelProto) else proto.SerializeToString()
    has_info = hasattr(ort.InferenceSession, "get_provider_graph_assignment_info")
    if method == "auto":
        method = "assignment-info" if has_info else "profiling"
    if method == "assignment-info" and not has_info:
        raise RuntimeError(f"onnxruntime {ort.__version__} has no graph assignment info (1.22 and later do): use profiling")
    if method == "profiling" and feeds is None:
        raise ValueError("placement by profiling runs the model once: pass feeds")
    model_nodes = list(_walk(proto.graph))
    try:
        if method == "assignment-info":
            sess = deployment_session(src, target, strict=strict, config_entries={_RECORD_KEY: "1"})
            placed = [
                NodePlacement(n.name, n.op_type, _domain(n.domain), sub.ep_name)
                for sub in sess.get_provider_graph_assignment_info()
                for n in sub.get_nodes()
            ]
        else:
            placed, sess = _profiled(src, target, feeds or {}, strict)
    except Exception as e:  # onnxruntime's own failure: say which nodes it cannot place
        msg = " ".join(str(e).split())
        if "Could not find an implementation" not in msg and "NOT_IMPLEMENTED" not in msg:
            raise
        return Placement(
            target.name, list(target.providers), method, unplaced=_unplaced(proto, model_nodes, target, msg), error=msg
        )
    names = {n.name for n in model_nodes}
    seen = {n.name for n in placed}
    return Placement(
        target.name,
        list(sess.get_providers()),
        method,
        placed,
        removed=[n.name for n in model_nodes if n.name not in seen],
        added=[n.name for n in placed if n.name not in names],
    )


def _profiled(
    src: ModelSource, target: Target, feeds: Mapping[str, np.ndarray], strict: bool
) -> tuple[list[NodePlacement], ort.InferenceSession]:
    with tempfile.TemporaryDirectory(prefix="onnxforge-profile-") as tmp:
        sess = deployment_session(src, target, strict=strict, profile_prefix=Path(tmp) / "placement")
        sess.run(None, dict(feeds))
        trace = sess.end_profiling()
        events = json.loads(Path(trace).read_text())
    return parse_profile(events), sess


def parse_profile(events: Sequence[Mapping[str, Any]]) -> list[NodePlacement]:
    """Nodes and their providers from an onnxruntime profile (the JSON list of trace events):
    each ``Node`` event ``NAME_kernel_time`` names its ``provider`` and ``op_name``. A node is
    listed once, in the order it first ran."""
    out: dict[str, NodePlacement] = {}
    for ev in events:
        if ev.get("cat") != "Node":
            continue
        name = str(ev.get("name", ""))
        if not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        args = ev.get("args") or {}
        provider = str(args.get("provider", ""))
        if node not in out and provider:
            out[node] = NodePlacement(node, str(args.get("op_name", "")), "", provider)
    return list(out.values())


def _since_versions() -> dict[tuple[str, str], list[int]]:
    from_ort: dict[tuple[str, str], list[int]] = {}
    try:
        schemas = ort.capi._pybind_state.get_all_operator_schema()
    except AttributeError:  # a build without the schema list: onnx's, default domain only
        schemas = onnx.defs.get_all_schemas_with_history()
    for s in schemas:
        from_ort.setdefault((_domain(s.domain), s.name), []).append(int(s.since_version))
    return from_ort


def kernel_table() -> dict[tuple[str, str, str], list[tuple[int, int]]]:
    """onnxruntime's kernel registry of this build: (provider, domain, op) -> version ranges."""
    table: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    try:
        defs = ort.capi._pybind_state.get_all_opkernel_def()
    except AttributeError:
        return table
    for d in defs:
        lo, hi = d.version_range
        table.setdefault((d.provider, _domain(d.domain), d.op_name), []).append((int(lo), int(hi)))
    return table


def _unplaced(proto: onnx.ModelProto, nodes: Sequence[onnx.NodeProto], target: Target, error: str) -> list[NodePlacement]:
    """The nodes no provider of ``target`` has a kernel for: the one onnxruntime's ``error``
    names, plus every node the kernel registry has nothing for at its version."""
    opsets = {_domain(o.domain): int(o.version) for o in proto.opset_import}
    since = _since_versions()
    kernels = kernel_table()
    named = _NOT_IMPLEMENTED.search(error)
    out: list[NodePlacement] = []
    for n in nodes:
        domain = _domain(n.domain)
        if named is not None and n.name == named.group(3):
            out.append(NodePlacement(n.name, n.op_type, domain, "", f"onnxruntime: no implementation of {named.group(1)}({named.group(2)}) in {', '.join(target.providers)}"))
            continue
        if not kernels:
            continue
        opset = opsets.get(domain, 1)
        versions = [v for v in since.get((domain, n.op_type), []) if v <= opset]
        if not versions:
            continue  # not an operator onnxruntime knows (a local function, a custom domain)
        version = max(versions)
        if not any(lo <= version <= hi for p in target.providers for lo, hi in kernels.get((p, domain, n.op_type), [])):
            out.append(NodePlacement(n.name, n.op_type, domain, "", f"no kernel for {domain or 'ai.onnx'}.{n.op_type}({version}) in {', '.join(target.providers)}"))
    return out


def render(p: Placement) -> list[str]:
    """The placement as text lines."""
    lines = [f"placement on --target {p.target} (from onnxruntime's {p.source}):"]
    if p.unplaced:
        lines.append(f"  onnxruntime cannot run {len(p.unplaced)} node(s) on {', '.join(p.providers)}:")
        lines += [f"    {n.name} ({n.domain + '.' if n.domain else ''}{n.op_type}): {n.reason}" for n in p.unplaced]
        return lines
    total = len(p.nodes)
    for provider, count in p.counts().items():
        lines.append(f"  {provider:<28} {count:>6} node(s) ({100.0 * count / max(total, 1):.1f}%)")
    if p.removed:
        lines.append(f"  {len(p.removed)} node(s) folded or removed by onnxruntime at load time")
    if p.added:
        lines.append(f"  {len(p.added)} node(s) made by onnxruntime's rewrites")
    others = [n for n in p.nodes if n.provider != p.providers[0]] if p.providers and p.providers[0] != CPU_EP else []
    if others:
        lines.append(f"  not on {p.providers[0]}:")
        lines += [f"    {n.name} ({n.domain + '.' if n.domain else ''}{n.op_type}) -> {n.provider}" for n in others[:50]]
        if len(others) > 50:
            lines.append(f"    ... and {len(others) - 50} more")
    return lines
