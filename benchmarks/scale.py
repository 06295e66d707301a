"""Scale benchmark for the lossless pipeline (``make bench-scale``).

1. Compile time on synthetic residual MLP graphs of 1k, 10k and 100k nodes (median of repeated
   runs for the small sizes), with the time per node to show linear growth.
2. Peak resident memory while compiling a model with external data (default 2.5 GB of weights),
   measured in a child process (``ru_maxrss``), as a ratio of the model's size.

Writes a markdown table to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx


def _compile_time(proto: onnx.ModelProto) -> tuple[float, int, int]:
    import onnxforge

    start = time.perf_counter()
    result = onnxforge.compile(proto, "lossless")
    seconds = time.perf_counter() - start
    return seconds, result.report.before.nodes, result.report.after.nodes


def _child_peak(src: str, out: str) -> dict[str, float]:
    code = (
        "import json, resource, time, onnxforge\n"
        f"t = time.perf_counter(); r = onnxforge.compile({src!r}, 'lossless'); r.save({out!r})\n"
        "print(json.dumps({'seconds': time.perf_counter() - t,"
        " 'peak_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,"
        " 'nodes_before': r.report.before.nodes, 'nodes_after': r.report.after.nodes}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from onnxforge.models.synthetic import big_external_model, residual_mlp_chain

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-gb", type=float, default=2.5)
    ap.add_argument("--out", default="benchmarks/scale.md")
    args = ap.parse_args(argv)

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        proto = residual_mlp_chain(n)
        reps = args.repeats if n <= 10_000 else 1
        times = []
        for _ in range(reps):
            t, before, after = _compile_time(proto)
            times.append(t)
        med = statistics.median(times)
        rows.append((n, before, after, med, med / before * 1e6))
        print(f"{before} nodes -> {after}: {med:.2f} s", file=sys.stderr, flush=True)

    big = None
    if args.big_gb > 0:
        with tempfile.TemporaryDirectory(prefix="onnxforge-scale-") as tmp:
            src = Path(tmp) / "big.onnx"
            big_external_model(src, int(args.big_gb * 2**30))
            size = src.stat().st_size + (Path(tmp) / "big.onnx.data").stat().st_size
            res = _child_peak(str(src), str(Path(tmp) / "out.onnx"))
            big = (size, res)
            print(f"big model {size / 2**30:.2f} GiB: peak {res['peak_bytes'] / 2**30:.2f} GiB", file=sys.stderr)

    lines = [
        "# Scale: the lossless pipeline",
        "",
        f"Machine: {os.cpu_count()} cores. Regenerate with `make bench-scale`.",
        "",
        "| graph | nodes before | nodes after | compile time (median) | µs per node |",
        "|---|---|---|---|---|",
    ]
    for n, before, after, med, per in rows:
        lines.append(f"| residual MLP chain ({n:,}) | {before:,} | {after:,} | {med:.2f} s | {per:.0f} |")
    if len(rows) > 1:
        growth = rows[-1][4] / rows[0][4]
        lines += ["", f"Time per node grows {growth:.2f}× from the smallest to the largest graph (1.0 = linear)."]
    if big is not None:
        size, res = big
        lines += [
            "",
            "| model with external data | size | peak RSS | peak / size | compile + save |",
            "|---|---|---|---|---|",
            f"| big_external_model | {size / 2**30:.2f} GiB | {res['peak_bytes'] / 2**30:.2f} GiB | "
            f"{res['peak_bytes'] / size:.2f}× | {res['seconds']:.1f} s |",
        ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
