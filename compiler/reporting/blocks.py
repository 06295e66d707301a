"""Per-block summaries of graphs too large to draw: nodes grouped by the path in their names
(``/encoder/layer.3/attention/MatMul`` is in block ``encoder/layer.3`` at depth 2), with node
counts, op-type changes, FLOPs and parameters before/after per block.

Scopes every named node shares (``/model/...``) are dropped first and given as the ``prefix``.
The depth is the shallowest that splits the graph into at least :data:`MIN_BLOCKS` blocks
without exceeding :data:`MAX_BLOCKS`; nodes whose names carry no path are in ``(top level)``.
Past :data:`MAX_ROWS` blocks the rest are summed into one row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

MIN_BLOCKS = 4
MAX_BLOCKS = 60
MAX_ROWS = 100
TOP = "(top level)"


def _path(name: str) -> list[str]:
    """The scopes of a node name, without the node's own last component."""
    parts = [p for p in (name.split("/") if "/" in name else name.split(".")) if p]
    return parts[:-1]


def common_scopes(names: Sequence[str]) -> list[str]:
    """The leading scopes every name with a path shares."""
    paths = [p for p in map(_path, names) if p]
    if not paths:
        return []
    common = paths[0]
    for p in paths[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
        if not common:
            break
    # keep at least one scope below the prefix, so blocks are not all "(top level)"
    return common[: max(min(len(p) for p in paths) - 1, 0)] if common else []


def _block(name: str, depth: int, skip: int = 0) -> str:
    path = _path(name)[skip:]
    return "/".join(path[:depth]) if path else TOP


def choose_depth(names: Sequence[str], skip: int = 0) -> int:
    """The block depth for these node names below ``skip`` shared scopes (module docstring)."""
    best, previous = 1, 0
    for depth in range(1, 7):
        count = len({_block(n, depth, skip) for n in names})
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
    names = [n for n, _ in before] + [n for n, _ in after]
    prefix = common_scopes(names)
    skip = len(prefix)
    depth = choose_depth(names, skip)
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
            r = row(_block(name, depth, skip))
            r["nodes_after" if side else "nodes_before"] += 1
            r["_ops"][side][op] += 1
    for label, layers in (("before", layers_before), ("after", layers_after)):
        for la in layers:
            r = row(_block(la["name"], depth, skip))
            r[f"flops_{label}"] += la["flops"]
            r[f"params_{label}"] += la["params"]
    ordered = list(rows.values())
    if len(ordered) > MAX_ROWS:
        rest = ordered[MAX_ROWS - 1 :]
        merged = row(f"({len(rest)} more blocks)")
        for r in rest:
            for k, v in r.items():
                if k == "_ops":
                    merged["_ops"][0].update(v[0])
                    merged["_ops"][1].update(v[1])
                elif k != "block":
                    merged[k] += v
        ordered = ordered[: MAX_ROWS - 1] + [merged]
    out = []
    for r in ordered:
        b, a = r.pop("_ops")
        changed = [op for op in set(b) | set(a) if b[op] != a[op]]
        changed.sort(key=lambda op: (-abs(a[op] - b[op]), op))
        r["op_changes"] = {op: [b[op], a[op]] for op in changed}
        out.append(r)
    return {"prefix": "/".join(prefix), "depth": depth, "rows": out}
