"""Pruning benchmark (``make bench-pruning``): issue 14's acceptance table, measured here.

* **Digits CNN** (trained here on scikit-learn's digits, seeds 0-2; calibrated on the training
  split, scored on the 359 held-out digits): unstructured 50 % and 80 % with plain magnitude
  pruning (the issue's baseline) against activation-aware scores (``|W|·‖x‖``) with least-squares
  reconstruction and against SparseGPT; structured 25/50/75 % channel removal with and without
  reconstruction: accuracy against FLOPs.
* **ResNet-50, MobileNetV2** (transformers exports, seeded random weights) and **PP-OCR det v4**
  (real weights): channel pruning 30 % and 50 %: FLOPs and parameters, onnxruntime CPU latency at
  ORT_ENABLE_ALL on one thread measured interleaved against the original (rounds x repeats, each
  repeat in fresh sessions; the median ratio and the range of the repeats), the cost model's
  predicted speed-up beside it, and the outputs' validity (finite, same names and shapes) and
  cosine to the original.
* **MiniLM-L6** (real weights, real sentences; calibrated on 32 sentences and the 174 calibration-only ones, scored on the other 32):
  50 % unstructured and 2:4, plain magnitude against activation-aware scores (with and without
  reconstruction) and SparseGPT: the sentence embeddings' cosine (mean over sentences, worst).

Writes a markdown report to ``--out``. The machine is shared: latencies are medians of many
interleaved rounds, repeated.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

import onnxforge
from benchmarks.latency import interleaved_medians, session, write_markdown
from onnxforge.cost import analyze
from onnxforge.equivalence import OrtRunner
from onnxforge.ir import Model, from_proto, to_proto
from onnxforge.metrics.sqnr import cosine
from onnxforge.models.exports import sentence_batches
from onnxforge.passes.compression.pruning import (
    REPORT_KEY,
    ChannelPruneOptions,
    PruneChannels,
    PruneMagnitude,
    PruningReport,
)
from onnxforge.passmanager import Pass, PassContext

log = logging.getLogger("benchmarks.pruning")

Feeds = dict[str, np.ndarray]


def _apply(proto: onnx.ModelProto, p: Pass) -> tuple[onnx.ModelProto, PruningReport]:
    model = from_proto(proto)
    ctx = PassContext()
    out = ctx.run(p, model).output(model)
    return to_proto(out), ctx.records[REPORT_KEY]


def _accuracy(proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    sess = OrtRunner(optimize=True).session(proto)
    logits = sess.run(None, {proto.graph.input[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())


def _digits_split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training split :func:`~onnxforge.models.digits.train_digits_cnn` trains on."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * 0.2))
    return x[order[n_test:]], data.target[order[n_test:]]


# -- digits ------------------------------------------------------------------------------------


def _conv_weights(proto: onnx.ModelProto) -> list[tuple[str, list[int]]]:
    inits = {t.name: list(t.dims) for t in proto.graph.initializer}
    return [(n.op_type, inits[n.input[1]]) for n in proto.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]


def _describe(proto: onnx.ModelProto) -> str:
    """``Conv 12 → Conv 24 → Gemm, 6,586 parameters`` for the digits CNN ``proto``."""
    layers = [f"Conv {dims[0]}" if op == "Conv" else op for op, dims in _conv_weights(proto)]
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    return f"{' → '.join(layers)}, {params:,} parameters"


def _first_conv_weights(proto: onnx.ModelProto) -> int:
    return int(np.prod(_conv_weights(proto)[0][1]))


def digits_section(seeds: Sequence[int]) -> list[str]:
    from onnxforge.models.digits import train_digits_cnn

    unstructured: dict[tuple[float, str], list[tuple[float, float, float]]] = {}
    structured: dict[tuple[float, str], list[tuple[float, float]]] = {}
    floats: list[float] = []
    variants: list[tuple[str, Callable[[float, list[Feeds]], Pass]]] = [
        ("magnitude, every layer (the issue's baseline)", lambda s, c: PruneMagnitude(sparsity=s, skip_first=False, min_params=0, measure_latency=False)),
        ("magnitude, default skips", lambda s, c: PruneMagnitude(sparsity=s, measure_latency=False)),
        ("activation-aware, no reconstruction", lambda s, c: PruneMagnitude(sparsity=s, calibration=c, reconstruct=False, measure_latency=False)),
        ("activation-aware + least squares (default)", lambda s, c: PruneMagnitude(sparsity=s, calibration=c, measure_latency=False)),
        ("activation-aware + least squares, every layer", lambda s, c: PruneMagnitude(sparsity=s, calibration=c, skip_first=False, min_params=0, measure_latency=False)),
        ("activation-aware + least squares, global threshold", lambda s, c: PruneMagnitude(sparsity=s, calibration=c, threshold="global", measure_latency=False)),
        ("second-order (SparseGPT) + least squares", lambda s, c: PruneMagnitude(sparsity=s, calibration=c, score="second-order", measure_latency=False)),
    ]
    for seed in seeds:
        proto, (xt, yt) = train_digits_cnn(seed)
        xtr, _ = _digits_split(seed)
        base = onnxforge.compile(proto, "optimize").model
        calib = [{"input": xtr[i : i + 32]} for i in range(0, len(xtr), 32)]
        floats.append(_accuracy(base, xt, yt))
        for s in (0.5, 0.8):
            for label, make in variants:
                out, rep = _apply(base, make(s, calib))
                unstructured.setdefault((s, label), []).append((_accuracy(out, xt, yt), rep.sparsity, rep.pruned_sparsity))
        for f in (0.25, 0.5, 0.75):
            for label, kw in (
                ("l2 norms, no data", {}),
                ("activation scores + least-squares repair", {"calibration": calib}),
            ):
                out, rep = _apply(base, PruneChannels(sparsity=f, multiple=1, measure_latency=False, **kw))
                ratio = (rep.flops_before or 0) / max(rep.flops_after or 1, 1)
                structured.setdefault((f, label), []).append((_accuracy(out, xt, yt), ratio))
    n = len(seeds)
    mean_float = statistics.mean(floats)
    first_weights = _first_conv_weights(base)
    lines = [
        "## Digits CNN",
        "",
        f"The CNN of `onnxforge.models.digits` ({_describe(base)} after BatchNorm folding), trained "
        f"here with seeds {', '.join(map(str, seeds))}; calibrated on its training split (1,438 digits, batches of 32, every fifth "
        f"batch held out by the pass), accuracy on the 359 held-out test digits (one digit is 0.28 points). Float accuracy: "
        + ", ".join(f"{a * 100:.2f}%" for a in floats)
        + f" (mean {mean_float * 100:.2f}%). Figures are means over the {n} seeds, per-seed values in brackets.",
        "",
        "### Unstructured",
        "",
        "| sparsity | method | accuracy | drop (points) | zeros, all layers | zeros, pruned layers |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for (s, label), rows in unstructured.items():
        accs = [r[0] for r in rows]
        lines.append(
            f"| {s:.0%} | {label} | {statistics.mean(accs) * 100:.2f}% ({', '.join(f'{a * 100:.1f}' for a in accs)}) | "
            f"{(mean_float - statistics.mean(accs)) * 100:.2f} | {statistics.mean(r[1] for r in rows):.1%} | "
            f"{statistics.mean(r[2] for r in rows):.1%} |"
        )
    lines += [
        "",
        f"Default skips leave the first convolution ({first_weights} weights: below `min_params`, and the first layer) dense, so "
        "80 % of the pruned layers is a little less of all weights; the *every layer* rows prune it too.",
        "",
        "### Structured (channels removed from every group; multiple 1)",
        "",
        "| channels removed | scores | accuracy | FLOPs fewer |",
        "|---:|---|---:|---:|",
    ]
    for (f, label), rows in structured.items():
        accs = [r[0] for r in rows]
        lines.append(
            f"| {f:.0%} | {label} | {statistics.mean(accs) * 100:.2f}% ({', '.join(f'{a * 100:.1f}' for a in accs)}) | "
            f"{statistics.mean(r[1] for r in rows):.2f}x |"
        )
    return lines


# -- CNNs: latency -----------------------------------------------------------------------------


def _ratios(base: bytes, pruned: bytes, feed: Feeds, rounds: int, repeats: int) -> tuple[float, float, float, float, float]:
    """(median speed-up, lowest, highest, original ms, pruned ms) over ``repeats`` interleaved
    measurements in fresh sessions."""
    speedups, t0s, t1s = [], [], []
    for _ in range(repeats):
        s0, s1 = session(base, level="all", threads=1), session(pruned, level="all", threads=1)
        t0, t1 = interleaved_medians([s0, s1], feed, rounds=rounds, budget_s=120.0)
        speedups.append(t0 / t1)
        t0s.append(t0)
        t1s.append(t1)
    return statistics.median(speedups), min(speedups), max(speedups), statistics.median(t0s) * 1e3, statistics.median(t1s) * 1e3


def _predicted(base: Model, pruned: Model, feed: Feeds) -> float:
    shapes = {k: tuple(v.shape) for k, v in feed.items()}
    b = analyze(base, shapes=shapes, target="cpu", reorder=False).totals.est_latency_ms
    a = analyze(pruned, shapes=shapes, target="cpu", reorder=False).totals.est_latency_ms
    return b / a if a else float("nan")


def _validity(
    base: onnx.ModelProto, pruned: onnx.ModelProto, feeds: Sequence[Feeds], extra: Sequence[Feeds] = ()
) -> tuple[bool, float]:
    """Every output finite with the original's shape on ``feeds`` and ``extra``; the worst output
    cosine on ``feeds``."""
    s0, s1 = OrtRunner().session(base), OrtRunner().session(pruned)
    ok, worst = True, 1.0
    for k, f in enumerate([*feeds, *extra]):
        a, b = s0.run(None, dict(f)), s1.run(None, dict(f))
        for x, y in zip(a, b):
            ok &= x.shape == y.shape and bool(np.isfinite(y).all())
            if k < len(feeds):
                worst = min(worst, cosine(x, y))
    return ok, worst


def cnn_section(
    cases: Sequence[dict[str, Any]], fractions: Sequence[float], rounds: int, repeats: int, reconstruct: bool
) -> list[str]:
    rows = []
    for case in cases:
        base_proto = onnxforge.compile(case["path"], "optimize").model
        base_ir = from_proto(base_proto)
        for f in case.get("fractions", fractions):
            kw: dict[str, Any] = {"sparsity": f, "measure_latency": False, **case.get("options", {})}
            if reconstruct and case.get("calib"):
                kw["calibration"] = case["calib"]
            start = time.perf_counter()
            result = onnxforge.compile(case["path"], "prune", options={PruneChannels.name: ChannelPruneOptions(**kw)})
            seconds = time.perf_counter() - start
            rep: PruningReport = result.report.pruning
            pruned = result.model
            feed = case["latency_feed"]
            speed = _ratios(base_proto.SerializeToString(), pruned.SerializeToString(), feed, rounds, repeats)
            predicted = _predicted(base_ir, from_proto(pruned), feed)
            ok, worst = _validity(base_proto, pruned, case["held"], [feed])
            prunable = [g for g in rep.groups if not g.reason.startswith("not prunable")]
            removed = sum(g.removed * 1 for g in prunable) / max(sum(g.channels for g in prunable), 1)
            flops_b, flops_a = _flops(base_ir, feed), _flops(from_proto(pruned), feed)
            budget = f", cosine ≥ {kw['min_cosine']:g}" if kw.get("min_cosine") else ""
            rows.append(
                f"| {case['name']} | {f:.0%}{budget} | {removed:.1%} | {flops_b / flops_a:.2f}x | "
                f"{(rep.params_before or 0) / max(rep.params_after or 1, 1):.2f}x | {speed[3]:.2f} → {speed[4]:.2f} | "
                f"**{speed[0]:.2f}x** ({speed[1]:.2f}–{speed[2]:.2f}) | {predicted:.2f}x | {'yes' if ok else 'NO'} | {worst:.4f} | "
                f"{'yes' if 'calibration' in kw else 'no'} | {seconds:.0f} s |"
            )
            log.info(rows[-1])
    return [
        "## Channel pruning: latency on onnxruntime CPU",
        "",
        "Each model through `--pipeline optimize` (the original) and `--pipeline prune --structured --sparsity F` (channel "
        "counts rounded up to multiples of 8). *channels removed*: of the prunable groups' channels. Latency: onnxruntime "
        f"CPU, ORT_ENABLE_ALL, 1 intra-op thread, medians of interleaved runs (at least {rounds} rounds, more for fast models), "
        f"{repeats} repeats in fresh sessions: the median speed-up and, in brackets, the lowest and highest repeat. *predicted*: "
        "the cost model's estimated latency ratio (`onnxforge.cost.analyze`, cpu profile). *valid*: every output finite with the "
        "original's shape on held-out inputs and the latency input; *cosine*: worst output cosine to the original on the "
        "held-out inputs (PP-OCR det: its probability map on the corpus's realistic 96x96 inputs; ResNet-50 and MobileNetV2 "
        "have random weights: their cosine says how much the outputs move, not how accurate they are). *repair*: least-squares "
        "reconstruction of the layers reading pruned channels from calibration inputs (8 images for ResNet-50 and "
        "MobileNetV2, 32 for PP-OCR det: every fifth of 40 is held out by the pass). *cosine ≥ 0.9*: the same with "
        "`--min-cosine 0.9` measured by the pass on its held-out samples: the groups the output is most sensitive to are "
        "pruned less (the pass's report names them).",
        "",
        "| model | asked | channels removed | FLOPs fewer | params fewer | ms (orig → pruned) | measured speed-up | predicted | valid | cosine | repair | compile |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|",
        *rows,
    ]


def _flops(model: Model, feed: Feeds) -> int:
    shapes = {k: tuple(v.shape) for k, v in feed.items()}
    return analyze(model, shapes=shapes, target="cpu", reorder=False, probe=False).totals.flops


# -- MiniLM ------------------------------------------------------------------------------------


def minilm_section(
    path: str, sentences: Mapping[str, np.ndarray], calibration: Mapping[str, np.ndarray] | None = None
) -> list[str]:
    keys = ("input_ids", "attention_mask", "token_type_ids")
    feeds = [{k: sentences[k][i : i + 1] for k in keys} for i in range(len(sentences["input_ids"]))]
    held = feeds[32:]
    calib: list[dict[str, np.ndarray]] = feeds[:32]
    extra = 0
    if calibration is not None:  # the calibration-only sentences too: never scored on
        extra = len(calibration["input_ids"])
        calib = sentence_batches({k: np.concatenate([sentences[k][:32], calibration[k]]) for k in keys}, keys)
    rows_of_text = int(sum(int(f["attention_mask"].sum()) for f in calib))
    base = onnxforge.compile(path, "optimize").model

    def embeddings(proto: onnx.ModelProto) -> np.ndarray:
        sess = OrtRunner(optimize=True).session(proto)
        out = []
        for f in held:
            h = sess.run(["last_hidden_state"], f)[0]
            m = f["attention_mask"][..., None].astype(np.float64)
            out.append(((h * m).sum(1) / m.sum(1))[0])
        return np.array(out)

    ref = embeddings(base)
    variants: list[tuple[str, str, dict[str, Any]]] = []
    for target, kw in (("50%", {"sparsity": 0.5}), ("2:4", {"n_m": (2, 4)})):
        variants += [
            (target, "magnitude (plain)", dict(kw)),
            (target, "activation-aware (Wanda)", {**kw, "calibration": calib, "reconstruct": False}),
            (target, "activation-aware + least squares", {**kw, "calibration": calib}),
            (target, "second-order (SparseGPT)", {**kw, "calibration": calib, "score": "second-order", "reconstruct": False}),
            (target, "second-order (SparseGPT) + least squares", {**kw, "calibration": calib, "score": "second-order"}),
        ]
        if "sparsity" in kw:  # N:M fixes every layer's sparsity: nothing to allocate
            variants += [
                (target, "activation-aware + least squares, sparsity allocated (--allocate-sparsity)", {**kw, "calibration": calib, "allocate": True}),
                (target, "SparseGPT + least squares, sparsity allocated", {**kw, "calibration": calib, "score": "second-order", "allocate": True}),
            ]
    rows = []
    for target, label, kw in variants:
        start = time.perf_counter()
        out, rep = _apply(base, PruneMagnitude(skip_first=False, min_params=0, measure_latency=False, **kw))
        seconds = time.perf_counter() - start
        c = [cosine(a, b) for a, b in zip(ref, embeddings(out))]
        rows.append(
            f"| {target} | {label} | **{statistics.mean(c):.4f}** | {min(c):.4f} | {rep.pruned_sparsity:.1%} | {seconds:.0f} s |"
        )
        log.info(rows[-1])
    return [
        "## MiniLM-L6 (all-MiniLM-L6-v2, trained weights)",
        "",
        "All 37 Linear layers (Q/K/V/O and the MLPs of 6 layers, the pooler) pruned; calibrated on 32 of the 64 sentences of "
        "`minilm_l6.sentences.npz`"
        + (f" and the {extra} calibration-only sentences of `minilm_l6.calibration.npz` (batches of 16 cut to their longest "
           f"sentence; statistics on real tokens only, {rows_of_text:,} rows)" if extra else
           f" (padded to 128 tokens, ~12 real tokens each: statistics on real tokens only, {rows_of_text:,} rows)")
        + ", scored on the other 32 of the 64 (never calibrated on): cosine of the mean-pooled sentence embedding to the "
        "original's. Gram matrices damped by the pass's default (`auto_damp`: 0.01 + 0.1 x min(1, input features / "
        "calibration rows)).",
        "",
        "| sparsity | method | embedding cosine (mean) | worst sentence | zeros | compile |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
    ]


# -- main --------------------------------------------------------------------------------------


def _cnn_cases(quick: bool) -> list[dict[str, Any]]:
    from onnxforge.models.corpus import feeds_for, list_corpus
    from onnxforge.models.exports import feeds_for_export, list_exports

    cases: list[dict[str, Any]] = []
    exports = list_exports()
    for name in ("resnet50", "mobilenet_v2"):
        if name in exports:
            cases.append(
                {
                    "name": name,
                    "path": exports[name],
                    "calib": [feeds_for_export(name, seed=s) for s in range(8)],
                    "held": [feeds_for_export(name, seed=100 + s) for s in range(4)],
                    "latency_feed": feeds_for_export(name, seed=0),
                }
            )
    corpus = list_corpus()
    if "ppocr_det_v4" in corpus:
        path = corpus["ppocr_det_v4"]
        proto = onnx.load(path)
        rng = np.random.default_rng(0)
        image = {"x": rng.uniform(-1, 1, (1, 3, 640, 640)).astype(np.float32)}
        ppocr = {
            "name": "ppocr_det_v4 (640x640)",
            "path": path,
            "calib": [feeds_for("ppocr_det_v4", proto, seed=s) for s in range(40)],
            "held": [feeds_for("ppocr_det_v4", proto, seed=100 + s) for s in range(4)],
            "latency_feed": image,
        }
        cases.append(ppocr)
        # the same with a budget: the groups its probability map is most sensitive to pruned less
        cases.append({**ppocr, "options": {"min_cosine": 0.9, "allow_budget_miss": True}, "fractions": (0.5,)})
    return cases[:1] if quick else cases


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/pruning.md")
    ap.add_argument("--rounds", type=int, default=40, help="latency rounds per repeat (at least)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3, help="digits CNNs trained")
    ap.add_argument("--quick", action="store_true", help="one seed, one CNN, no repair, no MiniLM")
    ap.add_argument("--skip", action="append", default=[], choices=["digits", "cnn", "minilm"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnxforge", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    start = time.perf_counter()
    from onnxforge.models.exports import list_exports, load_sentences

    lines = [
        "# Pruning",
        "",
        "Generated by `make bench-pruning` (`python -m benchmarks.pruning`): issue 14's acceptance figures, measured on "
        f"{platform.machine()} with {os.cpu_count()} cores (shared with other work while it ran: latencies are medians of "
        "interleaved rounds, repeated).",
        "",
    ]
    if "digits" not in args.skip:
        lines += digits_section(range(1 if args.quick else args.seeds))
        lines.append("")
    if "cnn" not in args.skip:
        lines += cnn_section(_cnn_cases(args.quick), (0.3, 0.5), args.rounds, args.repeats, reconstruct=not args.quick)
        lines.append("")
    exports = list_exports()
    sentences = load_sentences()
    if "minilm" not in args.skip and not args.quick and "minilm_l6" in exports and sentences is not None:
        lines += minilm_section(str(exports["minilm_l6"]), sentences, load_sentences(calibration=True))
        lines.append("")
    lines.append(f"Benchmark time: {time.perf_counter() - start:.0f} s.")
    return write_markdown(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
