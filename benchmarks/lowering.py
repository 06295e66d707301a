"""Lowering benchmark (``make bench-lowering``): is ``onnxforge bench`` right, where does
onnxruntime put the nodes, and how do threads scale here.

1. ``onnxforge bench A --compare B`` (the command, in a child process) against an independent
   timing loop written below (plain sessions from the analysis factory, blocks of runs in ABBA
   order, perf_counter, medians): the two ratios, each with a 95% interval, and whether the
   intervals overlap. Pairs: a model against itself (the control), MatMul chains of 1 and 3
   layers (a known ratio near 3), and real models against their ``compile --target cpu`` output.
2. The placement report on a model holding ops the CPU provider lacks, and on the real models.
3. CPU thread scaling: latency at each thread count (interleaved), the cost model's prediction,
   and ``tune``'s pruned search against the full grid.
4. CUDA / TensorRT rows: filled from a GPU run, or "no GPU available in this run".

Writes a markdown report to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.latency import write_markdown
from onnxforge import modelio
from onnxforge.api import compile as compile_model
from onnxforge.commands.inputs import run_feeds
from onnxforge.cost.execution import cost_report, tune_hints
from onnxforge.models.exports import list_exports
from onnxforge.models.lowering import cuda_only_ops, matmul_chain
from onnxforge.runtime.availability import availability
from onnxforge.runtime.bench import interleaved_times
from onnxforge.runtime.options import session_options
from onnxforge.runtime.placement import placement
from onnxforge.runtime.session import create_session, deployment_session
from onnxforge.runtime.target import TARGETS
from onnxforge.runtime.tune import thread_counts, tune

NO_GPU = "no GPU available in this run"
#: Two-sided 95% quantiles of Student's t by degrees of freedom.
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 10: 2.23, 14: 2.14, 18: 2.10}


def independent_ratio(a: Path, b: Path, feeds_a: dict, feeds_b: dict, seconds: float, block: int = 5) -> tuple[float, tuple[float, float], int]:
    """Ratio of median latencies b/a by a loop that shares no code with onnxforge's bench:
    blocks of ``block`` runs, ABBA order, for about ``seconds``; 95% interval by resampling blocks."""
    sa = create_session(str(a), options=session_options(optimization="all", threads=1))
    sb = create_session(str(b), options=session_options(optimization="all", threads=1))
    for _ in range(3):
        sa.run(None, feeds_a)
        sb.run(None, feeds_b)
    blocks_a: list[list[float]] = []
    blocks_b: list[list[float]] = []
    start = time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds or k < 8:
        order = (("a", sa, feeds_a), ("b", sb, feeds_b)) if k % 2 == 0 else (("b", sb, feeds_b), ("a", sa, feeds_a))
        for label, sess, feeds in order:
            times = []
            for _ in range(block):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                times.append(time.perf_counter() - t0)
            (blocks_a if label == "a" else blocks_b).append(times)
        k += 1
    ra = np.asarray(blocks_a)
    rb = np.asarray(blocks_b)
    ratio = float(np.median(rb) / np.median(ra))
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(1000):
        idx = rng.integers(0, len(ra), size=len(ra))
        boot.append(np.median(rb[idx]) / np.median(ra[idx]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return ratio, (float(lo), float(hi)), len(ra) * block


def cli_compare(a: Path, b: Path, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "onnxforge.cli", "bench", str(a), "--compare", str(b), "--json", "--threads", "1", "--seconds", str(seconds)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def compare_rows(pairs: list[tuple[str, Path, Path]], seconds: float, repeats: int) -> tuple[list[str], int, int]:
    """Each pair timed ``repeats`` times by each method, alternating (bench, loop, bench, ...),
    every time with fresh sessions. A session's weights land at other addresses each time, which
    moves a ratio by a few percent from one pair of sessions to the next (more than the interval
    of one run says), so "within noise" is judged on the repeats: the two methods agree when a 95%
    two-sample t-test on the repeats (spread pooled over both methods) finds no difference."""
    rows, agree = [], 0
    for label, a, b in pairs:
        feeds_a = run_feeds(modelio.read_proto(a))
        feeds_b = run_feeds(modelio.read_proto(b))
        mine, loop, rounds, runs = [], [], 0, 0
        for _ in range(repeats):
            c = cli_compare(a, b, seconds)["comparison"]
            mine.append(c["ratio_p50"])
            rounds += c["rounds"]
            r, _, n = independent_ratio(a, b, feeds_a, feeds_b, seconds)
            loop.append(r)
            runs += n
        ma, ml = statistics.mean(mine), statistics.mean(loop)
        # Relative residuals of both methods pooled; a 95% two-sample t-test on the means.
        res = [m / ma - 1 for m in mine] + [x / ml - 1 for x in loop]
        dof = max(2 * repeats - 2, 1)
        se = (sum(r * r for r in res) / dof) ** 0.5 * (2 / repeats) ** 0.5
        bound = T95.get(dof, 2.0) * se
        ok = abs(ma / ml - 1) <= bound
        agree += ok
        rows.append(
            f"| {label} | {', '.join(f'{m:.3f}' for m in mine)} | {rounds // repeats} | {', '.join(f'{x:.3f}' for x in loop)} "
            f"| {runs // repeats} | {(ma / ml - 1) * 100:+.1f}% | {bound * 100:.1f}% | {'yes' if ok else 'no'} |"
        )
        print(f"compare {label}: bench {mine} vs loop {loop}: {'agree' if ok else 'DIFFER'}", flush=True)
    return rows, agree, len(pairs)


def placement_rows(models: dict[str, Path], tmp: Path) -> list[str]:
    rows = []
    special = tmp / "cuda_only_ops.onnx"
    onnx.save(cuda_only_ops(), special)
    t0 = time.perf_counter()
    p = placement(str(special), TARGETS["cpu"])
    ms = (time.perf_counter() - t0) * 1e3
    unplaced = ", ".join(f"{n.name} ({n.domain}.{n.op_type})" for n in p.unplaced)
    rows.append(f"| cuda_only_ops (Relu, BiasAdd, GroupNorm, MatMul) | cpu | {p.source} | none: onnxruntime makes no session | {unplaced} | - | {ms:.0f} |")
    for name, path in models.items():
        t0 = time.perf_counter()
        p = placement(str(path), TARGETS["cpu"])
        ms = (time.perf_counter() - t0) * 1e3
        counts = ", ".join(f"{k} {v}" for k, v in p.counts().items())
        rows.append(f"| {name} | cpu | {p.source} | {counts} | - | {len(p.removed)} | {ms:.0f} |")
        print(f"placement {name}: {counts}", flush=True)
    return rows


def scaling_rows(models: dict[str, Path], seconds: float) -> list[str]:
    rows = []
    cores = os.cpu_count() or 1
    counts = thread_counts(cores)
    for name, path in models.items():
        feeds = run_feeds(modelio.read_proto(path))
        sessions = [deployment_session(str(path), TARGETS["cpu"].with_session(threads=t)) for t in counts]
        times = interleaved_times(sessions, feeds, rounds=10, budget_s=seconds, round_target_s=seconds)
        p50 = [statistics.median(t) * 1e3 for t in times]
        model = modelio.load(path).model
        report = cost_report(model, shapes={k: tuple(v.shape) for k, v in feeds.items()})
        hints = tune_hints(model, report, cores)
        cells = " | ".join(f"{p:.3g} ms ({p50[0] / p:.2f}x; model {hints.speedup[t]:.2f}x)" for t, p in zip(counts, p50))
        rows.append(f"| {name} | {cells} | {hints.parallel_share * 100:.1f}% |")
        print(f"scaling {name}: {p50}", flush=True)
    return rows


def tune_rows(models: dict[str, Path], seconds_each: float) -> list[str]:
    rows = []
    cores = os.cpu_count() or 1
    for name, path in models.items():
        feeds = run_feeds(modelio.read_proto(path))
        model = modelio.load(path).model
        hints = tune_hints(model, cost_report(model, shapes={k: tuple(v.shape) for k, v in feeds.items()}), cores)
        r = tune(str(path), TARGETS["cpu"], feeds, hints, cores=cores, rounds=8, seconds_each=seconds_each)
        g = r.grid_best
        assert g is not None
        again = next(t for t in r.grid if t.config == r.best.config)
        rows.append(
            f"| {name} | {len(r.searched)}/{len(r.grid)} in {r.search_seconds:.0f} s | {r.best.config.label()} ({r.best.vs_anchor.ratio_p50:.3f}x) "
            f"| {again.vs_anchor.ratio_p50:.3f}x | {g.config.label()} ({g.vs_anchor.ratio_p50:.3f}x, {g.vs_anchor.ci95[0]:.3f}-{g.vs_anchor.ci95[1]:.3f}) "
            f"in {r.grid_seconds:.0f} s | {'yes' if r.agrees else 'no'} |"
        )
        print(f"tune {name}: best {r.best.config.label()} grid {g.config.label()} agrees {r.agrees}", flush=True)
    return rows


def gpu_rows() -> list[str]:
    rows = []
    for target in ("cuda", "tensorrt"):
        a = availability(TARGETS[target])
        why = NO_GPU if not a.ok else "GPU present: run `pytest -m gpu tests/runtime/test_gpu.py` and record the figures here"
        rows.append(f"| {target} | {why} ({a.message().split(':')[0] if not a.ok else 'available'}) |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/lowering.md")
    ap.add_argument("--seconds", type=float, default=4.0, help="per timing (bench --compare, the independent loop)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-session repeats of each method per pair")
    args = ap.parse_args(argv)

    exports = list_exports()
    wanted = [n for n in ("mobilenet_v2", "resnet50", "minilm_l6") if n in exports]
    with tempfile.TemporaryDirectory(prefix="onnxforge-bench-lowering-") as tmp_name:
        tmp = Path(tmp_name)
        one, three = tmp / "matmul_x1.onnx", tmp / "matmul_x3.onnx"
        onnx.save(matmul_chain(1, 512, rows=64), one)
        onnx.save(matmul_chain(3, 512, seed=1, rows=64), three)
        pairs: list[tuple[str, Path, Path]] = [("MatMul chain, 1 vs 3 layers of 512x512 on 64 rows", one, three)]
        if wanted:
            pairs.append((f"{wanted[0]} vs itself (control)", exports[wanted[0]], exports[wanted[0]]))
        for name in wanted:
            out = tmp / f"{name}.cpu.onnx"
            compile_model(exports[name], target="cpu", cost=False).save(out)
            pairs.append((f"{name} vs its `compile --target cpu`", exports[name], out))
        cmp_rows, agree, total = compare_rows(pairs, args.seconds, args.repeats)
        place = placement_rows({n: exports[n] for n in wanted}, tmp)
        scale = scaling_rows({n: exports[n] for n in wanted}, args.seconds)
        tuned = tune_rows({n: exports[n] for n in wanted[:2]}, max(1.0, args.seconds / 4))

    counts = thread_counts(os.cpu_count() or 1)
    lines = [
        "# Lowering: bench, placement, threads",
        "",
        "Generated by `make bench-lowering` (`python -m benchmarks.lowering`).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}; "
        f"onnxruntime providers here: {', '.join(ort.get_available_providers())}. A shared machine: other jobs ran beside this one.",
        "",
        "## `bench --compare` against an independent timing loop",
        "",
        f"`onnxforge bench A --compare B --json --threads 1 --seconds {args.seconds:g}` (a child process; the sessions take turns, the "
        "first one rotating, each turn an untimed run then timed ones (about 10 ms of them for fast models); ratio of round medians) against a loop in this script that shares "
        "no timing code with it: sessions from the analysis factory (ORT_ENABLE_ALL, one thread), blocks of 5 runs in ABBA order for "
        f"{args.seconds:g} s, ratio of medians. Both time the same default inputs "
        "(`onnxforge.commands.inputs.run_feeds`, seed 0). Ratio = latency of B / latency of A.",
        "",
        f"Each method ran {args.repeats} times per pair, alternating, each time with fresh sessions: a session's weights land at "
        "other addresses every time, which moves a ratio by a few percent between pairs of sessions, more than one run's "
        "interval shows (1 vs 3 MatMul layers, same method, three runs: 7.55, 7.18, 7.55). The methods agree when a 95% "
        "two-sample t-test on the repeats finds no difference; \"noise\" is the difference that test would call real.",
        "",
        f"Agreement within noise: **{agree} of {total}** pairs.",
        "",
        "| pair | bench --compare, each run | rounds (mean) | independent loop, each run | runs each (mean) | difference of means | noise (95%) | agree |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
        *cmp_rows,
        "",
        "## Placement report",
        "",
        "`onnxforge lower MODEL --target cpu`: onnxruntime's own record of the provider of each node (the session's graph "
        "assignment info, onnxruntime 1.22+). The first model holds two com.microsoft ops with CUDA kernels and no CPU kernel: "
        "onnxruntime refuses the session naming the first one; the report names both (the second from onnxruntime's kernel "
        "registry) and `lower` exits 1. \"Removed\": nodes onnxruntime folded at load time (constant subgraphs, Identity).",
        "",
        "| model | target | source | nodes per provider | nodes no provider can run | removed | ms |",
        "|---|---|---|---|---|---:|---:|",
        *place,
        "",
        "CPU share of FLOPs on a GPU target (warning above 5%): " + NO_GPU + "; the rule is tested on a CUDA placement built in "
        "`tests/runtime/test_placement.py::test_cpu_fallback_share_warns_above_five_percent`.",
        "",
        "## CPU thread scaling",
        "",
        f"p50 latency at {', '.join(str(c) for c in counts)} intra-op threads (ORT_ENABLE_ALL, sessions interleaved), the speed-up "
        "over one thread, and the cost model's prediction (`onnxforge.cost.execution.thread_speedup`: Amdahl over nodes of at "
        "least 200 kFLOP per thread); last column: FLOPs off the critical path (what parallel execution could overlap). "
        "The prediction assumes idle cores: where other jobs hold a core (this machine is shared), a thread count above the "
        "idle cores waits for it and loses, which the measured column then shows.",
        "",
        "| model | " + " | ".join(f"{c} thread{'s' if c > 1 else ''}" for c in counts) + " | off critical path |",
        "|---|" + "---:|" * len(counts) + "---:|",
        *scale,
        "",
        "## `tune`: pruned search against the full grid",
        "",
        "Every configuration timed against one anchor session (the target's defaults: threads chosen by onnxruntime, "
        "ORT_ENABLE_ALL, sequential), interleaved; ratio < 1 is faster than the defaults. \"Agrees\": the pruned search's best "
        "is the grid's best or inside the grid best's 95% interval. The same configuration timed twice in one run (search, then "
        "grid) shows how far apart two timings of it land on this machine.",
        "",
        "| model | searched / grid, time | pruned search's best | the same in the grid run | grid's best (95%), time | agrees |",
        "|---|---|---|---:|---|:---:|",
        *tuned,
        "",
        "## CUDA and TensorRT",
        "",
        "| target | result |",
        "|---|---|",
        *gpu_rows(),
        "",
        "EPContext reload against a cold TensorRT engine build, and the fp16/int8 TensorRT speed-ups: " + NO_GPU + ". "
        "`tests/runtime/test_gpu.py` (marker `gpu`) measures them where onnxruntime-gpu and a GPU are present and skips "
        "with the reason otherwise.",
        "",
    ]
    return write_markdown(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
