"""Cost-model benchmark (``make bench-cost``): the estimates against reality.

1. MAC counts of the transformers exports (``make exports``) against independent figures, each
   with its source (a paper or library that states it, or the closed form where none does).
2. Estimated latency (the ``cpu`` profile: this machine, calibrated by micro-benchmarks, the
   estimate made on the graph onnxruntime executes) against latency measured with onnxruntime at
   ORT_ENABLE_ALL on one thread, for every real model present (the corpus of ``make corpus`` and
   the exports): the error per model, median |log(est/measured)|, the worst ratios and the
   Spearman rank correlation.
3. Predicted effect of transforms: for each corpus model, the ``optimize`` (fusion) and ``int8``
   pipelines' outputs against the original; predicted speed-up (estimate before / after) against
   the measured one (the three sessions measured interleaved): sign agreement and Spearman.

Writes a markdown report to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.latency import session, write_markdown
from benchmarks.real_models import real_models
from onnxforge.runtime.bench import interleaved_rounds, round_medians
from onnxforge.runtime.bench import ratio as latency_ratio
from onnxforge.runtime.machine import cpu_name, l2_cache_bytes, vector_isa

#: A predicted speed-up within this band of 1 predicts "no effect".
TIE = 0.03
#: A measured change smaller than this is no effect to decide on: the estimate does not resolve it
#: (two graphs that onnxruntime executes identically still measure 1-3% apart here).
SMALL = 0.05
#: The acceptance band of est/measured per model.
BAND = (0.67, 1.5)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(x: list[float]) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64)
        order = arr.argsort()
        r = np.empty(len(arr))
        r[order] = np.arange(len(arr), dtype=np.float64)
        for v in np.unique(arr):  # average the ranks of ties
            idx = arr == v
            r[idx] = r[idx].mean()
        return r

    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def sign_agrees(pred: float, meas: float, tie: bool) -> bool:
    """The predicted speed-up points the same way as the measured one. A measured tie (its 95%
    bootstrap interval contains 1, or it is under ``SMALL``) agrees with a prediction of no
    effect (within ``TIE``) or with the measured median's side."""
    if tie:
        return abs(math.log(pred)) < math.log1p(TIE) or (pred > 1) == (meas > 1)
    return (pred > 1) == (meas > 1)


def _compile(name: str, path: Path, pipeline: str, tmp: Path) -> tuple[Path | None, str]:
    import onnxforge
    from onnxforge.api import QuantizationOptions
    from onnxforge.models.corpus import feeds_for

    out = tmp / f"{name}.{pipeline}.onnx"
    try:
        if pipeline == "int8":
            proto = onnx.load(path, load_external_data=False)
            calib = [feeds_for(name, proto, seed=s) for s in range(8)]
            r = onnxforge.compile(path, "int8", quantization=QuantizationOptions(calibration=calib, allow_budget_miss=True))
        else:
            r = onnxforge.compile(path, pipeline)
        r.save(out)
        return out, ""
    except Exception as e:  # a pipeline that cannot handle a model: listed, not fatal
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from onnxforge import modelio
    from onnxforge.cost import analyze, get_profile
    from onnxforge.cost.render import human
    from onnxforge.models.corpus import list_corpus
    from onnxforge.models.exports import EXPORTS, list_exports

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/cost_model.md")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-pairs", action="store_true", help="skip the transform pairs")
    ap.add_argument("--only", nargs="*", default=None, help="only these models")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    profile = get_profile("cpu", refresh=True)
    cal = profile.calibration
    assert cal is not None
    calib_s = time.perf_counter() - t0
    models = [m for m in real_models() if args.only is None or m[0] in args.only]
    if not models:
        raise SystemExit("no models: run `make corpus` (and `make exports` for the transformers models)")
    corpus = set(list_corpus())

    def estimate(model_path: Path, feeds: dict[str, np.ndarray]) -> tuple[Any, float]:
        start = time.perf_counter()
        rep = analyze(modelio.load(model_path).model, shapes={k: v.shape for k, v in feeds.items()}, feeds=feeds,
                      target=profile, reorder=False)
        return rep, time.perf_counter() - start

    rows, pair_rows, failures = [], [], []
    est, meas, logs, ratios = [], [], [], []
    pairs: list[tuple[str, str, float, float, bool]] = []
    firsts: list[tuple[str, Path, dict[str, np.ndarray], Any, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="onnxforge-bench-cost-") as tmp_name:
        tmp = Path(tmp_name)
        for name, path, feeds in models:
            report, analyse_s = estimate(path, feeds)
            variants: list[tuple[str, Path]] = [("original", path)]
            if not args.no_pairs and name in corpus:
                for pipeline in ("optimize", "int8"):
                    out, why = _compile(name, path, pipeline, tmp)
                    if out is None:
                        failures.append(f"{name} {pipeline}: {why}")
                    else:
                        variants.append((pipeline, out))
            sessions = [session(str(p), level="all") for _, p in variants]
            per_round = [round_medians(r) for r in interleaved_rounds(sessions, feeds, rounds=args.rounds)]
            medians = [statistics.median(r) for r in per_round]
            measured_ms = medians[0] * 1e3
            t = report.totals
            firsts.append((name, path, feeds, report, analyse_s, measured_ms))
            print(f"{name}: est {t.est_latency_ms:.3g} ms, measured {measured_ms:.3g} ms (first pass)", flush=True)
            for (pipeline, p), m_after, series in zip(variants[1:], medians[1:], per_round[1:]):
                after, _ = estimate(p, feeds)
                pred = t.est_latency_ms / after.totals.est_latency_ms
                got = medians[0] / m_after
                r = latency_ratio(per_round[0], series)  # after / before latency, with a bootstrap interval
                tie = r.ci95[0] <= 1.0 <= r.ci95[1] or abs(math.log(got)) < math.log1p(SMALL)
                pairs.append((name, pipeline, pred, got, tie))
                ok = "yes" if sign_agrees(pred, got, tie) else "**no**"
                ci = f"{1 / r.ci95[1]:.2f}–{1 / r.ci95[0]:.2f}"
                pair_rows.append(
                    f"| {name} | {pipeline} | {t.est_latency_ms:.3g} → {after.totals.est_latency_ms:.3g} | {pred:.2f} "
                    f"| {measured_ms:.3g} → {m_after * 1e3:.3g} | {got:.2f} ({ci}){' tie' if tie else ''} | {ok} |"
                )
                print(f"  {pipeline}: predicted x{pred:.2f}, measured x{got:.2f}", flush=True)

    # A second pass over every model, minutes after its first: a slow spell of the shared cores
    # once doubled two small models' medians for a whole pass; it rarely lasts through both.
    for name, path, feeds, report, analyse_s, first_ms in firsts:
        series = interleaved_rounds([session(str(path), level="all")], feeds, rounds=args.rounds)[0]
        measured_ms = min(first_ms, statistics.median(round_medians(series)) * 1e3)
        t = report.totals
        ratio = t.est_latency_ms / measured_ms
        est.append(t.est_latency_ms)
        meas.append(measured_ms)
        ratios.append((ratio, name))
        logs.append(abs(math.log(ratio)))
        flag = "" if BAND[0] <= ratio <= BAND[1] else " **outside**"
        rows.append(
            f"| {name} | {human(t.macs)} | {len(report.nodes)} / {report.executed_nodes} | {t.est_latency_ms:.3g} "
            f"| {measured_ms:.3g} | {ratio:.2f}{flag} | {analyse_s:.1f} |"
        )
        print(f"{name}: est {t.est_latency_ms:.3g} ms, measured {measured_ms:.3g} ms, ratio {ratio:.2f}", flush=True)

    exported = list_exports()
    mac_rows = []
    for name, spec in EXPORTS.items():
        if name not in exported or spec.reference_gmacs is None:
            continue
        shapes = {i.name: tuple(i.shape) for i in spec.inputs}
        got = analyze(modelio.load(exported[name]).model, shapes=shapes, target=profile, probe=False, executed=False)
        gmacs = got.totals.macs / 1e9
        err = (gmacs - spec.reference_gmacs) / spec.reference_gmacs * 100
        shape = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())
        mac_rows.append(f"| {name} | {shape} | {gmacs:.3f} | {spec.reference_gmacs} | {err:+.1f}% | {spec.reference_source} |")

    rho = spearman(est, meas)
    med = statistics.median(logs)
    lo, hi = min(ratios), max(ratios)
    inside = sum(BAND[0] <= r <= BAND[1] for r, _ in ratios)
    outside = sorted((r, n) for r, n in ratios if not BAND[0] <= r <= BAND[1])
    agree = sum(sign_agrees(p, m, tie) for _, _, p, m, tie in pairs)
    strict = sum((p > 1) == (m > 1) for _, _, p, m, _ in pairs)
    ties = sum(tie for *_, tie in pairs)
    rho_pairs = spearman([p for _, _, p, _, _ in pairs], [m for _, _, _, m, _ in pairs])
    ov = {k: f"{v * 1e6:.2f}" for k, v in cal.overhead.items()}
    machine_traits = [t for t in (vector_isa(), f"{l2_cache_bytes() >> 10} KiB L2 per core") if t]
    lines = [
        "# Cost model: estimates against measurements",
        "",
        "Generated by `make bench-cost` (`python -m benchmarks.cost_model`).",
        f"Machine: {platform.machine()}, {cpu_name()} ({', '.join(machine_traits)}), onnxruntime "
        f"{ort.__version__}, 1 thread; "
        f"latency = median of up to {args.rounds} interleaved runs at ORT_ENABLE_ALL (what users run), the lower of two "
        "passes over the corpus (the pairs below: the first pass). The machine's two cores are shared with other jobs: "
        "a slow spell once doubled two small models' medians for a whole pass, and repeated runs of this table moved "
        "single models by up to ~20%.",
        "",
        "## Calibration (this machine, micro-benchmarks only)",
        "",
        f"Measured in {calib_s:.1f} s (`onnxforge.cost.calibrate`, cached per CPU model, core count and onnxruntime "
        f"version under `$ONNXFORGE_CACHE`). No parameter is fitted to the models below: every one is the time of a "
        f"synthetic graph (MatMul on a {len(cal.gemm)}-shape grid, {len(cal.conv)} 2-D, {len(cal.conv1d)} 1-D, "
        f"{len(cal.depthwise)} depthwise and {len(cal.depthwise1d)} 1-D depthwise convolutions, 1-D convolutions "
        f"across the GEMM's column panels ({cal.conv_panel} positions here), {len(cal.recurrent)} LSTMs, Add over "
        f"5 working-set sizes, "
        f"MatMul chains over {len(cal.stream_sets)} weight-set sizes, chains of tiny ops per class).",
        "",
        f"- products: {cal.rate('gemm', 1, 256, 256) / 1e9:.0f} GFLOP/s at 1x256x256 (a matrix-vector product), "
        f"{cal.rate('gemm', 64, 256, 256) / 1e9:.0f} at 64x256x256, {cal.rate('gemm', 512, 1024, 1024) / 1e9:.0f} at "
        f"512x1024x1024; int8 x{cal.int8_speedup:.1f}",
        f"- memory: {cal.bandwidth_at(1e4) / 1e9:.0f} GB/s at 10 kB moved, {cal.bandwidth_at(1e6) / 1e9:.0f} at 1 MB, "
        f"{cal.bandwidth_at(5e7) / 1e9:.0f} at 50 MB",
        "- weight streaming (ps per weight byte beyond resident weights): a matrix-vector product over "
        + ", ".join(f"{b / 2**20:g} MB {c * 1e12:.1f}" for b, c in cal.stream_sets)
        + "; over 16 MB at " + ", ".join(f"{r:g} rows {c * 1e12:.1f}" for r, c in cal.stream),
        f"- per-node overhead (us): {ov}; per run {cal.run_overhead * 1e6:.1f} us, "
        f"+{cal.io_overhead * 1e6:.2f} us per extra graph input/output",
        "",
        "## MACs of the transformers exports against independent figures",
        "",
        "| model | input | counted GMACs | reference | error | source |",
        "|---|---|---:|---:|---:|---|",
        *(mac_rows or ["| (run `make exports`) | | | | | |"]),
        "",
        "## Estimated vs measured latency",
        "",
        f"**median |log(est/measured)| = {med:.3f}; est/measured from {lo[0]:.2f} ({lo[1]}) to {hi[0]:.2f} ({hi[1]}); "
        f"{inside} of {len(ratios)} models within {BAND[0]}–{BAND[1]}x; Spearman {rho:.3f}.**",
        "",
        "nodes: in the model / in the graph onnxruntime executes (where the latency is estimated).",
        "",
        "| model | MACs | nodes | est. ms | measured ms | est / measured | analysis s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    if outside:
        lines += ["Outside the band: " + ", ".join(f"{n} ({r:.2f})" for r, n in outside) + ". " + OUTSIDE_NOTE, ""]
    else:
        low = sorted(ratios)[:3]
        lines += ["No model outside the band; the lowest: " + ", ".join(f"{n} ({r:.2f})" for r, n in low) + ". " + OUTSIDE_NOTE, ""]
    if pairs:
        lines += [
            "## Predicted effect of transforms",
            "",
            f"Before/after pairs of the `optimize` (fusion) and `int8` pipelines on the corpus: predicted speed-up = "
            f"estimate before / after, measured = median before / after (the original and both outputs measured "
            f"interleaved, in brackets the 95% bootstrap interval over rounds). A pair whose interval contains 1, or "
            f"whose measured change is under {SMALL:.0%}, is a tie (no effect to decide on); a prediction of no effect "
            f"(within {TIE:.0%}) or on the measured median's side agrees with it.",
            "",
            f"**Right sign in {agree} of {len(pairs)} pairs ({100 * agree / len(pairs):.0f}%; {ties} ties; comparing "
            f"signs only, {strict} of {len(pairs)}); Spearman {rho_pairs:.3f} between predicted and measured "
            f"speed-ups.**",
            "",
            "| model | pipeline | est. ms | predicted | measured ms | measured | sign |",
            "|---|---|---:|---:|---:|---:|---|",
            *pair_rows,
            "",
        ]
        if failures:
            lines += ["Pipelines that did not produce a model: " + "; ".join(failures), ""]
    print(f"median |log| {med:.3f}, ratios {lo[0]:.2f}..{hi[0]:.2f}, Spearman {rho:.3f}; pairs: sign {agree}/{len(pairs)}, "
          f"Spearman {rho_pairs:.3f}")
    return write_markdown(args.out, lines)


#: Why models stay outside the band (written from the per-node profiles, not fitted).
OUTSIDE_NOTE = (
    "The Silero VAD models (one LSTM step and a few 1-D convolutions per call, about 0.1 ms, most of it inside If "
    "branches) are among the lowest. Timing every node onnxruntime runs in place (prefixes of its graph, Ifs inlined) "
    "against the estimate found two causes, now in the calibration: 1-D convolutions cost whole 16-column panels of "
    "the GEMM (2 to 16 output positions take the same time, 17 take 60% more), and 1-D depthwise convolutions run as "
    "one small GEMM per channel (oww_silero_vad's 258-channel one: 32 us, estimated 1.2 us at the 2-D depthwise "
    "rate). What remains: an If whose branch holds the model costs 3-4 us more than its nodes inlined (the estimate "
    "charges the measured ~0.8 us of a small If), and 4-5 us more when the branch's LSTM weights are initializers of "
    "the main graph, which no synthetic graph reproduced; silero_vad_op18_ifless sits near 0.85."
)


if __name__ == "__main__":
    raise SystemExit(main())
