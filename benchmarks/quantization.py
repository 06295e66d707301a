"""Quantization benchmark (``make bench-quant``): onnxforge's int8 pipeline and onnxruntime's
``quantize_static`` side by side, on the same calibration data.

Models: the digits CNN trained here (calibrated on 160 of its held-out test digits, accuracy and
cosine on the other 199, which no quantizer saw), the transformers exports
(ResNet-50, MobileNetV2, ViT-B/16: seeded images; BERT-base, GPT-2: seeded token ids, 128
tokens; MiniLM-L6: real sentences, sentence-embedding cosine on held-out sentences) and every
corpus model (realistic seeded feeds). For each: whether a valid model came out, output cosine
against fp32 on held-out inputs, and latency at ORT_ENABLE_ALL on one thread (median of
interleaved runs of fp32, ours and onnxruntime's). onnxruntime's quantizer
runs after its own pre-processing (``quant_pre_process``), QDQ format, per-channel weights,
minmax calibration, its defaults otherwise. Ours runs with its defaults too (its budget measured
on every fifth calibration batch from the second, held out of its calibration), except that a
budget it cannot meet is reported instead of failing the row. Writes a markdown report to
``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.latency import interleaved_medians, session, write_markdown
from onnxforge.calibration.data import FeedReader
from onnxforge.metrics.sqnr import cosine, worst

log = logging.getLogger("benchmarks.quantization")

Feeds = dict[str, np.ndarray]


def _output_cosine(ref: Any, got: Any, feeds: Sequence[Feeds], score: Callable[..., float] | None) -> float:
    """Worst cosine over held-out feeds and outputs (each output on its own), or the model's
    own score; NaN when an output is not finite where fp32's is."""
    values = [1.0]
    names = [o.name for o in ref.get_outputs()]
    for f in feeds:
        a = ref.run(names, f)
        b = got.run(names, f)
        if score is not None:
            values.append(score(f, a, b))
        else:
            values += [cosine(x, y) for x, y in zip(a, b) if np.size(x)]
    return worst(values)


def _sentence_cosine(feed: Feeds, a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mask = feed["attention_mask"][..., None].astype(np.float64)
    ea = (a[0] * mask).sum(1) / mask.sum(1)
    eb = (b[0] * mask).sum(1) / mask.sum(1)
    return cosine(ea, eb)


def _cases(quick: bool) -> list[dict[str, Any]]:
    from onnxforge.models.corpus import feeds_for, list_corpus
    from onnxforge.models.digits import train_digits_cnn
    from onnxforge.models.exports import feeds_for_export, list_exports, load_sentences

    cases: list[dict[str, Any]] = []
    proto, (x, y) = train_digits_cnn(0)
    tmp = Path(tempfile.mkdtemp(prefix="onnxforge-bench-"))
    onnx.save(proto, tmp / "digits_cnn.onnx")
    inp = proto.graph.input[0].name
    cases.append(
        {
            "name": "digits_cnn",
            "path": tmp / "digits_cnn.onnx",
            # deployment-like batches of 32; the last 199 digits are never calibrated on
            "calib": [{inp: x[i : i + 32]} for i in range(0, 160, 32)],
            "held": [{inp: x[160:]}],
            "labels": (inp, x[160:], y[160:]),
        }
    )
    exports = list_exports()
    for name in ("resnet50", "mobilenet_v2", "vit_base", "bert_base", "gpt2"):
        if name in exports:
            cases.append(
                {
                    "name": name,
                    "path": exports[name],
                    "calib": [feeds_for_export(name, seed=s) for s in range(8 if quick else 16)],
                    "held": [feeds_for_export(name, seed=100 + s) for s in range(4)],
                }
            )
    sentences = load_sentences()
    if "minilm_l6" in exports and sentences is not None:
        keys = ("input_ids", "attention_mask", "token_type_ids")
        feeds = [{k: sentences[k][i : i + 1] for k in keys} for i in range(len(sentences["input_ids"]))]
        cases.append(
            {"name": "minilm_l6", "path": exports["minilm_l6"], "calib": feeds[:32], "held": feeds[32:], "score": _sentence_cosine}
        )
    for name, path in list_corpus().items():
        proto_c = onnx.load(path, load_external_data=False)
        cases.append(
            {
                "name": name,
                "path": path,
                "calib": [feeds_for(name, proto_c, seed=s) for s in range(8 if quick else 16)],
                "held": [feeds_for(name, proto_c, seed=100 + s) for s in range(4)],
            }
        )
    return cases


def _ours(case: dict[str, Any], out: Path) -> tuple[Path | None, str]:
    import onnxforge
    from onnxforge.api import QuantizationOptions

    try:
        r = onnxforge.compile(
            case["path"], "int8", quantization=QuantizationOptions(calibration=case["calib"], allow_budget_miss=True)
        )
        r.save(out)
        q = r.report.quantization
        speed = f", {len(q.kept_for_speed)} float for speed" if q.kept_for_speed else ""
        missed = f", BUDGET MISSED: {q.budget_missed[0]}" if q.budget_missed else ""
        return out, f"{len(q.quantized)} int8, {len(q.weight_only)} weight-only, {len(q.kept_float)} kept float{speed}{missed}"
    except Exception as e:
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"


def _onnxruntime(case: dict[str, Any], tmp: Path) -> tuple[Path | None, str]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / f"{case['name']}.pre.onnx"
    out = tmp / f"{case['name']}.ort_int8.onnx"
    cwd = os.getcwd()
    os.chdir(tmp)  # onnxruntime's pre-processing leaves external-data files in the working folder
    try:
        try:
            try:
                quant_pre_process(str(case["path"]), str(pre))
                note = "pre-processed"
            except ImportError:  # its symbolic shape inference needs sympy
                quant_pre_process(str(case["path"]), str(pre), skip_symbolic_shape=True)
                note = "pre-processed (without symbolic shapes: no sympy)"
            src = pre
        except Exception as e:
            src = case["path"]
            note = f"pre-processing failed ({type(e).__name__})"
        quantize_static(
            str(src), str(out), FeedReader(case["calib"]), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
        onnx.checker.check_model(str(out))
        session(str(out), level="disable")
        return out, note
    except Exception as e:
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    finally:
        os.chdir(cwd)


def _accuracy(path: Path, inp: str, x: np.ndarray, y: np.ndarray) -> float:
    s = session(str(path), level="all")
    return float((s.run(None, {inp: x})[0].argmax(1) == y).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/quantization.md")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--quick", action="store_true", help="fewer calibration samples")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("onnxforge").setLevel(logging.WARNING)
    ort.set_default_logger_severity(3)

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="onnxforge-quant-"))
    for case in _cases(args.quick):
        if args.only and case["name"] not in args.only:
            continue
        t0 = time.perf_counter()
        ours, ours_note = _ours(case, tmp / f"{case['name']}.int8.onnx")
        ours_s = time.perf_counter() - t0
        theirs, theirs_note = _onnxruntime(case, tmp)
        ref = session(str(case["path"]), level="disable")
        score = case.get("score")
        cells = {}
        sessions = [session(str(case["path"]), level="all")]
        for label, path in (("ours", ours), ("ort", theirs)):
            if path is None:
                cells[label] = None
                continue
            try:
                got = session(str(path), level="disable")
                cells[label] = _output_cosine(ref, got, case["held"], score)
                sessions.append(session(str(path), level="all"))
            except Exception as e:
                cells[label] = None
                if label == "ours":
                    ours_note = f"does not run: {str(e).splitlines()[0][:100]}"
                else:
                    theirs_note = f"does not run: {str(e).splitlines()[0][:100]}"
        times = interleaved_medians(sessions, case["held"][0], rounds=args.rounds)
        fp32 = times[0]
        speed = {}
        i = 1
        for label in ("ours", "ort"):
            if cells.get(label) is not None:
                speed[label] = fp32 / times[i]
                i += 1
        acc = ""
        if "labels" in case:
            inp, x, y = case["labels"]
            parts = [f"fp32 {_accuracy(case['path'], inp, x, y) * 100:.2f}%"]
            for label, path in (("ours", ours), ("ort", theirs)):
                if path is not None and cells.get(label) is not None:
                    parts.append(f"{label} {_accuracy(path, inp, x, y) * 100:.2f}%")
            acc = ", ".join(parts)

        cos = {k: ("invalid" if cells.get(k) is None else f"{cells[k]:.4f}") for k in ("ours", "ort")}
        spd = {k: (f"{speed[k]:.2f}x" if k in speed else "-") for k in ("ours", "ort")}
        rows.append(
            f"| {case['name']} | {cos['ours']} | {spd['ours']} | {cos['ort']} | {spd['ort']} | {fp32 * 1e3:.3g} "
            f"| {ours_note} | {theirs_note} | {acc} | {ours_s:.1f} |"
        )
        log.info(rows[-1])

    lines = [
        "# int8 quantization: onnxforge and onnxruntime's quantizer side by side",
        "",
        "Generated by `make bench-quant` (`python -m benchmarks.quantization`).",
        f"Machine: {platform.machine()}, onnxruntime {ort.__version__}, 1 thread, ORT_ENABLE_ALL; latency = median of up "
        f"to {args.rounds} interleaved runs of fp32, ours and onnxruntime's.",
        "",
        "Cosine: the worst over held-out inputs and over outputs (each output compared on its own) against fp32 "
        "(MiniLM-L6: mean-pooled sentence embeddings of held-out real sentences; PP-OCR: rendered text lines and pages). "
        "Both quantizers calibrate with minmax on the same data; ours runs `--pipeline int8` with its defaults "
        "(output-cosine guard 0.99 on the worst held-out batch: every fifth calibration batch from the second, "
        "not calibrated on). digits_cnn: calibrated on 160 test digits, cosine and accuracy on the other 199.",
        "",
        "| model | ours: cosine | ours: speed-up | onnxruntime: cosine | onnxruntime: speed-up | fp32 ms | ours | onnxruntime "
        "| accuracy | our compile s |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---:|",
        *rows,
        "",
    ]
    return write_markdown(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
