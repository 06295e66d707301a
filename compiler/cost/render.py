"""Readable tables of a :class:`~onnxforge.cost.analysis.CostReport` (``onnxforge analyze``)."""

from __future__ import annotations

from onnxforge.cost.analysis import CostReport, CostTotals
from onnxforge.tables import format_table


def human(n: float, unit: str = "") -> str:
    """``1234567`` → ``"1.23 M"`` (powers of 1000)."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}{unit}".rstrip()
    return f"{n:.3g} {unit}".rstrip() if isinstance(n, float) and not float(n).is_integer() else f"{int(n)} {unit}".rstrip()


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"`` (powers of 1024)."""
    for scale, prefix in ((1 << 40, "Ti"), (1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}B"
    return f"{int(n)} B"


def totals_rows(t: CostTotals) -> list[tuple[str, str]]:
    return [
        ("MACs", human(t.macs)),
        ("FLOPs", human(t.flops)),
        ("parameters", human(t.params)),
        ("weight bytes", human_bytes(t.weight_bytes)),
        ("peak activation memory", human_bytes(t.peak_activation_bytes)),
        ("estimated latency", f"{t.est_latency_ms:.3g} ms"),
    ]


def render(report: CostReport, *, top: int = 10) -> str:
    """Totals, where memory peaks, a per-op-type summary and the ``top`` heaviest layers.

    When an input's size dims are open (``report.complete`` False) only the figures that do not
    depend on them are shown (parameters, weight bytes, node counts), with one line naming the
    dims and the flags that set them: a total computed with a height or a sequence of 1 is not
    a figure of any real input."""
    t = report.totals
    p = report.profile
    b = report.bindings
    lines = [f"target: {p.name} ({p.description}; {p.source})"]
    if not report.complete:
        lines.append(f"MACs, FLOPs, memory and latency unavailable: {b.missing_message()}")
        lines.append("")
        lines += format_table(["total", "value"], [["parameters", human(t.params)], ["weight bytes", human_bytes(t.weight_bytes)]])
        by_op = report.by_op_type()
        lines.append("")
        lines += format_table(["op type", "nodes", "params"], [[op, str(r["count"]), human(r["params"])] for op, r in by_op.items()])
        return "\n".join(lines)
    if b.inputs:
        shapes = ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in b.inputs.items())
        lines.append(f"inputs: {shapes}" + (f" (batch {', '.join(b.batch)} assumed 1)" if b.batch else ""))
    for label, (size, source) in b.implied.items():
        lines.append(f"{label} = {size}: implied by the model ({source})")
    lines.append("")
    lines += format_table(["total", "value"], [list(r) for r in totals_rows(t)])
    mem = report.memory
    lines.append("")
    lines.append(f"activation memory peaks at {mem.peak_node!r}: {human_bytes(mem.peak_bytes)}")
    if mem.live_at_peak:
        lines.append("  largest live tensors: " + ", ".join(f"{n} ({human_bytes(b)})" for n, b in mem.live_at_peak[:3]))
    if report.reordered_memory is not None:
        lines.append(f"  a memory-aware execution order peaks at {human_bytes(report.reordered_memory.peak_bytes)}")

    by_op = report.by_op_type()
    total_flops = t.flops or 1
    total_ms = t.est_latency_ms or 1.0
    rows = [
        [
            op,
            str(r["count"]),
            human(r["macs"]),
            human(r["flops"]),
            f"{100 * r['flops'] / total_flops:.1f}%",
            human(r["params"]),
            f"{r['est_latency_ms']:.3g}",
            f"{100 * r['est_latency_ms'] / total_ms:.1f}%",
        ]
        for op, r in by_op.items()
    ]
    lines.append("")
    lines += format_table(["op type", "nodes", "MACs", "FLOPs", "% FLOPs", "params", "est ms", "% time"], rows)

    heavy = sorted((n for n in report.nodes if n.counted), key=lambda n: -(n.est_ms * n.runs))[:top]
    if heavy:
        lines.append("")
        lines.append(f"heaviest {len(heavy)} layers (by estimated time):")
        lines += format_table(
            ["node", "op", "MACs", "FLOPs/byte", "bound", "est ms", "runs"],
            [
                [
                    _short(n.name or "(unnamed)"),
                    n.op,
                    human(n.macs),
                    f"{n.intensity:.1f}",
                    n.bound,
                    f"{n.est_ms * n.runs:.3g}",
                    str(n.runs),
                ]
                for n in heavy
            ],
            left=(1, 4),
        )

    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]
