"""Per-block summaries of graphs too large to draw: nodes grouped by the path in their names
(``/encoder/layer.3/attention/MatMul`` is in block ``encoder/layer.3`` at depth 2), with node
counts, op-type changes, FLOPs and parameters before/after per block.

The depth is the shallowest that splits the graph into at least :data:`MIN_BLOCKS` blocks
without exceeding :data:`MAX_BLOCKS`; nodes whose names carry no path are in ``(top level)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

MIN_BLOCKS = 4
MAX_BLOCKS = 60
TOP = "(top level)"


def _path(name: str) -> list[str]:
    """The scopes of a node name, without the node's own last component."""
    parts = [p for p in (name.split("/") if "/" in name else name.split(".")) if p]
    return parts[:-1]


def _block(name: str, depth: int) -> str:
    path = _path(name)
    return "/".join(path[:depth]) if path else TOP


def choose_depth(names: Sequence[str]) -> int:
    """The block depth for these node names (module docstring)."""
    best, previous = 1, 0
    for depth in range(1, 7):
        count = len({_block(n, depth) for n in names})
        if count > MAX_BLOCKS or count == previous:  # too many, or no deeper scopes
            break
        best, previous = depth, count
        if count >= MIN_BLOCKS:
            break
    return best


def block_summaries(
    before: Sequence[tuple[str, str]],
    after: Sequence[tuple[str, str]],
    layers_before: Sequence[dict[str, Any]] = (),
    layers_after: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Blocks of ``before``/``after`` (``(name, op_type)`` per node), in order of first
    appearance, with FLOPs and parameters from the per-layer lists (matched by name)."""
    depth = choose_depth([n for n, _ in before] + [n for n, _ in after])
    rows: dict[str, dict[str, Any]] = {}

    def row(block: str) -> dict[str, Any]:
        return rows.setdefault(
            block,
            {
                "block": block,
                "nodes_before": 0,
                "nodes_after": 0,
                "flops_before": 0,
                "flops_after": 0,
                "params_before": 0,
                "params_after": 0,
                "_ops": [Counter(), Counter()],
            },
        )

    for side, nodes in ((0, before), (1, after)):
        for name, op in nodes:
            r = row(_block(name, depth))
            r["nodes_after" if side else "nodes_before"] += 1
            r["_ops"][side][op] += 1
    for label, layers in (("before", layers_before), ("after", layers_after)):
        for la in layers:
            r = row(_block(la["name"], depth))
            r[f"flops_{label}"] += la["flops"]
            r[f"params_{label}"] += la["params"]
    out = []
    for r in rows.values():
        b, a = r.pop("_ops")
        r["op_changes"] = {op: [b[op], a[op]] for op in sorted(set(b) | set(a)) if b[op] != a[op]}
        out.append(r)
    return {"depth": depth, "rows": out}
