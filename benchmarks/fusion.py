"""Fusion benchmark (``make bench-fusion``): node counts, output equality and latency of the
original model against onnxforge's ``optimize`` pipeline (portable, and ``--target cpu``) on
every real model present (the corpus of ``make corpus`` and the exports of ``make exports``).

Latency is onnxruntime on one thread, at ORT_DISABLE_ALL and at ORT_ENABLE_ALL (onnxruntime's
own optimizer), median of interleaved runs of all variants. For the transformer exports,
onnxruntime's transformers optimizer (``onnxruntime.transformers.optimizer``) is run side by
side for its node count. Writes a markdown report to ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.latency import interleaved_medians, session, write_markdown
from benchmarks.real_models import real_models

log = logging.getLogger("benchmarks.fusion")

#: (model_type, num_heads, hidden_size) for onnxruntime's transformers optimizer.
_ORT_TRANSFORMERS = {
    "bert_base": ("bert", 12, 768),
    "minilm_l6": ("bert", 12, 384),
    "vit_base": ("vit", 12, 768),
    "gpt2": ("gpt2", 12, 768),
}


def max_relative_error(ref: dict[str, Any], got: dict[str, Any]) -> float:
    """Largest |a - b| / max|a| over the outputs (by name)."""
    worst = 0.0
    for name, a in ref.items():
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(got[name], dtype=np.float64)
        scale = max(float(np.abs(a).max()) if a.size else 0.0, 1e-12)
        worst = max(worst, float(np.abs(a - b).max()) / scale if a.size else 0.0)
    return worst


def _ort_transformers(name: str, path: Path, out: Path) -> tuple[str, Path | None]:
    """onnxruntime's transformers optimizer on the original: ("nodes (attention)", saved model)."""
    spec = _ORT_TRANSFORMERS.get(name)
    if spec is None:
        return "", None
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        model_type, heads, hidden = spec
        opt = optimize_model(str(path), model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=0)
        nodes = len(opt.model.graph.node)
        attention = sum(1 for n in opt.model.graph.node if n.op_type in ("Attention", "MultiHeadAttention"))
        opt.save_model_to_file(str(out), use_external_data_format=True)
        return f"{nodes} ({attention} attention)", out
    except Exception as e:
        return f"failed: {type(e).__name__}", None


def main(argv: list[str] | None = None) -> int:
    import onnxforge

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/fusion.md")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--budget", type=float, default=40.0, help="seconds of timing per model (at least 5 rounds)")
    ap.add_argument("--only", nargs="*", help="model names to run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("onnxforge").setLevel(logging.WARNING)

    models = [m for m in real_models() if not args.only or m[0] in args.only]
    if not models:
        raise SystemExit("no models: run `make corpus` (and `make exports`)")
    rows: list[str] = []
    tradeoff: list[str] = []
    summary: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, feeds in models:
            variants = {"original": path}
            nodes: dict[str, int] = {}
            compile_s = {}
            for label, target in (("portable", None), ("cpu", "cpu"), ("native", "cpu-native")):
                t0 = time.perf_counter()
                result = onnxforge.compile(path, "optimize", target=target)
                compile_s[label] = time.perf_counter() - t0
                out = Path(tmp) / f"{name}.{label}.onnx"
                result.save(out)
                variants[label] = out
                nodes[label] = result.report.after.nodes
                nodes["original"] = result.report.before.nodes  # every graph, subgraphs included
            sln = onnxforge.compile(path, "optimize", target="cpu", options={"fuse-onnxruntime": {"skip_layer_norm": True}})
            nodes["cpu+sln"] = sln.report.after.nodes
            ort_tf, ort_tf_path = _ort_transformers(name, path, Path(tmp) / f"{name}.ort_transformers.onnx")
            # Timed at ORT_ENABLE_ALL only: a second session of the original (the noise control)
            # and, for the transformers, the SkipLayerNormalization form and onnxruntime's own
            # optimizer output, to show what their smaller node counts cost.
            enable_all_only: dict[str, Path] = {"control": Path(path)}
            if ort_tf_path is not None:
                enable_all_only["cpu+sln"] = Path(tmp) / f"{name}.cpu+sln.onnx"
                sln.save(enable_all_only["cpu+sln"])
                enable_all_only["ort_tf"] = ort_tf_path
            ref = session(str(path), level="disable").run(None, feeds)
            names = [o.name for o in session(str(path), level="disable").get_outputs()]
            ref_d = dict(zip(names, ref))
            errors = {}
            for label in ("portable", "cpu", "native"):
                got = session(str(variants[label]), level="disable").run(None, feeds)
                errors[label] = max_relative_error(ref_d, dict(zip(names, got)))
            order = ["original", "portable", "cpu", "native"]
            timed = [(v, lvl, variants[v]) for lvl in ("disable", "all") for v in order]
            timed += [(v, "all", p) for v, p in enable_all_only.items()]
            medians = interleaved_medians(
                [session(str(p), level=lvl) for _, lvl, p in timed], feeds, rounds=args.rounds, budget_s=args.budget
            )
            by_level = {(v, lvl): t for (v, lvl, _), t in zip(timed, medians)}
            off = {v: by_level[(v, "disable")] for v in order}
            on = {v: t for (v, lvl), t in by_level.items() if lvl == "all"}
            control = on["original"] / on["control"]
            if ort_tf_path is not None:
                tradeoff.append(
                    f"| {name} | {nodes['cpu']} | {on['original'] / on['cpu']:.2f}x | {nodes['cpu+sln']} "
                    f"| {on['original'] / on['cpu+sln']:.2f}x | {ort_tf} | {on['original'] / on['ort_tf']:.2f}x |"
                )
            rows.append(
                f"| {name} | {nodes['original']} | {nodes['portable']} | {nodes['cpu']} | {nodes['cpu+sln']} | {ort_tf} "
                f"| {max(errors.values()):.1e} "
                f"| {off['original'] * 1e3:.3g} | {off['original'] / off['portable']:.2f}x | {off['original'] / off['cpu']:.2f}x "
                f"| {off['original'] / off['native']:.2f}x "
                f"| {on['original'] * 1e3:.3g} | {on['original'] / on['portable']:.2f}x | {on['original'] / on['cpu']:.2f}x "
                f"| {on['original'] / on['native']:.2f}x | {control:.2f}x "
                f"| {off['original'] / on['original']:.2f}x | {compile_s['cpu']:.1f} |"
            )
            summary.append(
                {
                    "name": name,
                    "gain": off["original"] / on["original"],
                    "control": control,
                    **{f"off_{v}": off["original"] / off[v] for v in order[1:]},
                    **{f"on_{v}": on["original"] / on[v] for v in order[1:]},
                }
            )
            log.info(
                "%s: nodes %d -> %d / %d, err %.1e, ENABLE_ALL speed-up %.2fx / %.2fx / %.2fx (control %.2fx)",
                name, nodes["original"], nodes["portable"], nodes["cpu"], max(errors.values()),
                on["original"] / on["portable"], on["original"] / on["cpu"], on["original"] / on["native"], control,
            )

    worst = {v: min(s[f"on_{v}"] for s in summary) for v in ("portable", "cpu", "native")}
    noise = max(abs(s["control"] - 1.0) for s in summary)
    lines = [
        "# Layer fusion: node counts, equality and latency",
        "",
        "Generated by `make bench-fusion` (`python -m benchmarks.fusion`).",
        f"Machine: {platform.machine()}, onnxruntime {ort.__version__}, 1 thread; latency = median of up to "
        f"{args.rounds} interleaved runs (more for fast models, fewer past {args.budget:.0f} s) of the original and "
        "our three outputs at both optimization levels, the original once more at ORT_ENABLE_ALL as a noise control "
        "and, for the transformers, the two forms of the last table at ORT_ENABLE_ALL; the session that starts a "
        "round rotates.",
        "",
        "Columns: node counts of the original, of `onnxforge compile` (pipeline `optimize`, portable) and with "
        "`--target cpu`, and with `--option fuse-onnxruntime.skip_layer_norm=true` (off by default on CPU: onnxruntime "
        "1.32's SkipLayerNormalization CPU kernel is about 5x slower than Add + LayerNormalization); onnxruntime's transformers optimizer on the same original (where it applies); the largest "
        "output difference relative to the output's scale (ORT_DISABLE_ALL); latency of the original and speed-ups "
        "(original time / our time) at ORT_DISABLE_ALL and at ORT_ENABLE_ALL, for portable, `--target cpu` and "
        "`--target cpu-native` (onnxruntime's NCHWc layout for this machine, written into the model); the "
        "control (the original's second session against its first: how far apart identical models measure); the "
        "gain ORT_ENABLE_ALL gives the original; compile time with `--target cpu`.",
        "",
        f"Smallest speed-up at ORT_ENABLE_ALL: portable {worst['portable']:.2f}x, --target cpu {worst['cpu']:.2f}x, "
        f"--target cpu-native {worst['native']:.2f}x. Noise control (the original against a second session of "
        f"itself at ORT_ENABLE_ALL): up to {noise:.1%} apart.",
        "",
        "| model | nodes | portable | --target cpu | cpu + SkipLayerNorm | ORT transformers optimizer | max rel. error "
        "| ms (opt. off) | portable | cpu | cpu-native | ms (ORT_ENABLE_ALL) | portable | cpu | cpu-native | control | ENABLE_ALL gain | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "## How much of onnxruntime's own gain our output recovers with ORT off",
        "",
        "Speed-up over the original at ORT_DISABLE_ALL. Portable output uses standard ONNX ops only; `--target cpu` "
        "adds onnxruntime contrib ops any CPU runs; "
        "`cpu-native` adds the NCHWc layout for this machine's SIMD width.",
        "",
        "| model | ORT_ENABLE_ALL on the original | ours, portable | ours, --target cpu | ours, --target cpu-native |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {s['name']} | {s['gain']:.2f}x | {s['off_portable']:.2f}x | {s['off_cpu']:.2f}x | {s['off_native']:.2f}x |"
            for s in summary
        ],
        "",
        "## What the smallest transformer graphs cost on this CPU",
        "",
        "Speed-up over the original at ORT_ENABLE_ALL (same interleaved run) of `--target cpu`, of `--target cpu` "
        "with SkipLayerNormalization forced (`--option fuse-onnxruntime.skip_layer_norm=true`), and of onnxruntime's "
        "transformers optimizer output, which also uses SkipLayerNormalization. `--target cpu` leaves it out when "
        "onnxruntime's CPU kernel measures slower than Add + LayerNormalization (`onnxforge.runtime.choices`).",
        "",
        "| model | nodes, --target cpu | speed-up | nodes, + SkipLayerNorm | speed-up | ORT transformers optimizer | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *tradeoff,
        "",
    ]
    return write_markdown(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
