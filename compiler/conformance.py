"""The ONNX project's backend test cases as a conformance suite for onnxforge pipelines.

Cases: ``onnx.backend.test.case.node.collect_testcases()`` (with their own inputs) plus the
``pytorch-converted``, ``pytorch-operator``, ``simple`` and ``light`` model sets shipped inside the
``onnx`` wheel (``light`` models get seeded random feeds). A case counts when onnxruntime (CPU,
graph optimizations off) can run the original and gives the same result twice; the pipeline
must then give the same outputs.

Run the whole suite: ``python -m onnxforge.conformance --out benchmarks/conformance.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxforge.api import compile as compile_model
from onnxforge.equivalence import OrtRunner, compare_outputs, random_feeds

log = logging.getLogger(__name__)

MODEL_SETS = ("pytorch-converted", "pytorch-operator", "simple", "light")


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    feeds: dict[str, Any]


@dataclass
class Outcome:
    name: str
    status: str  # "pass", "fail", "error" (pipeline raised), "skip" (ORT cannot run the original)
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def runnable(self) -> int:
        c = self.counts()
        return c["pass"] + c["fail"] + c["error"]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("fail", "error")]


def _read_input(path: Path, vi: onnx.ValueInfoProto) -> Any:
    data = path.read_bytes()
    if vi.type.HasField("sequence_type"):
        sp = onnx.SequenceProto()
        sp.ParseFromString(data)
        return numpy_helper.to_list(sp)
    if vi.type.HasField("optional_type"):
        op = onnx.OptionalProto()
        op.ParseFromString(data)
        return numpy_helper.to_optional(op)
    tp = onnx.TensorProto()
    tp.ParseFromString(data)
    return numpy_helper.to_array(tp)


def _data_root() -> Path:
    import onnx.backend.test

    return Path(onnx.backend.test.__file__).parent / "data"


def iter_cases(include_node: bool = True, model_sets: tuple[str, ...] = MODEL_SETS) -> Iterator[Case]:
    """Every conformance case, node cases first, in a stable order."""
    if include_node:
        from onnx.backend.test.case.node import collect_testcases

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            node_cases = collect_testcases()
        for c in sorted(node_cases, key=lambda c: c.name):
            if not c.data_sets or c.model is None:
                continue
            inputs = c.data_sets[0][0]
            real_inputs = [vi for vi in c.model.graph.input if vi.name not in {t.name for t in c.model.graph.initializer}]
            feeds = {vi.name: x for vi, x in zip(real_inputs, inputs)}
            yield Case(f"node/{c.name}", c.model, feeds)
    root = _data_root()
    for set_name in model_sets:
        folder = root / set_name
        if not folder.is_dir():
            continue
        if set_name == "light":
            for path in sorted(folder.glob("*.onnx")):
                model = onnx.load(path)
                yield Case(f"{set_name}/{path.stem}", model, random_feeds(model, seed=0))
            continue
        for case_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            model = onnx.load(case_dir / "model.onnx")
            inits = {t.name for t in model.graph.initializer}
            real_inputs = [vi for vi in model.graph.input if vi.name not in inits]
            data = case_dir / "test_data_set_0"
            feeds = {}
            for i, vi in enumerate(real_inputs):
                p = data / f"input_{i}.pb"
                if p.exists():
                    feeds[vi.name] = _read_input(p, vi)
            yield Case(f"{set_name}/{case_dir.name}", model, feeds)


def run_case(
    case: Case, pipeline: str = "optimize", rtol: float = 1e-5, atol: float = 1e-6, target: str | None = None
) -> Outcome:
    """Compile one case (for ``target``, see :data:`onnxforge.runtime.target.TARGETS`) and compare
    onnxruntime outputs before/after."""
    start = time.perf_counter()
    runner = OrtRunner()
    try:
        ref = runner.run(case.model, case.feeds)
        again = runner.run(case.model, case.feeds)
    except Exception as e:
        return Outcome(case.name, "skip", _line(e))
    if compare_outputs(ref, again, rtol=0, atol=0):
        return Outcome(case.name, "skip", "original is non-deterministic under onnxruntime")
    try:
        compiled = compile_model(case.model, pipeline, target=target).model
    except Exception as e:
        return Outcome(case.name, "error", f"{type(e).__name__}: {_line(e)}", time.perf_counter() - start)
    # The interface is part of the contract: names, types and shapes of graph inputs/outputs.
    if list(compiled.graph.input) != list(case.model.graph.input):
        return Outcome(case.name, "fail", "graph inputs changed", time.perf_counter() - start)
    if list(compiled.graph.output) != list(case.model.graph.output):
        return Outcome(case.name, "fail", "graph outputs changed", time.perf_counter() - start)
    try:
        got = runner.run(compiled, case.feeds)
    except Exception as e:
        return Outcome(case.name, "fail", f"compiled model does not run: {_line(e)}", time.perf_counter() - start)
    problems = compare_outputs(ref, got, rtol=rtol, atol=atol)
    status = "fail" if problems else "pass"
    return Outcome(case.name, status, "; ".join(problems[:3]), time.perf_counter() - start)


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:240]


def run_suite(
    pipeline: str = "optimize",
    *,
    target: str | None = None,
    sample_every: int = 1,
    names: set[str] | None = None,
    progress: bool = False,
) -> Summary:
    """Run the suite (every ``sample_every``-th case, plus any case named in ``names``)."""
    summary = Summary()
    for i, case in enumerate(iter_cases()):
        if not (i % sample_every == 0 or (names and case.name in names)):
            continue
        outcome = run_case(case, pipeline, target=target)
        summary.outcomes.append(outcome)
        if progress and len(summary.outcomes) % 100 == 0:
            c = summary.counts()
            print(f"  {len(summary.outcomes)} cases: {dict(c)}", file=sys.stderr, flush=True)
    return summary


def to_markdown(summary: Summary, pipeline: str, seconds: float, target: str | None = None) -> str:
    c = summary.counts()
    what = f"`{pipeline}`" + (f" with `--target {target}`" if target is not None else "")
    lines = [
        "# ONNX backend conformance",
        "",
        f"Pipeline {what} on onnx {onnx.__version__}; regenerate with `make conformance`.",
        "",
        "| cases | runnable by onnxruntime | preserved | failed | pipeline errors | skipped | time |",
        "|---|---|---|---|---|---|---|",
        f"| {len(summary.outcomes)} | {summary.runnable} | {c['pass']} | {c['fail']} | {c['error']} | {c['skip']} | {seconds:.0f} s |",
        "",
    ]
    if summary.failures:
        lines += ["## Failures", "", "| case | status | detail |", "|---|---|---|"]
        for o in summary.failures:
            lines.append(f"| {o.name} | {o.status} | {o.detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default="optimize")
    ap.add_argument("--target", help="compile for this target (cpu, cuda, cpu-native, tensorrt)")
    ap.add_argument("--sample-every", type=int, default=1)
    ap.add_argument("--out", help="write a markdown summary here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    start = time.perf_counter()
    summary = run_suite(args.pipeline, target=args.target, sample_every=args.sample_every, progress=True)
    seconds = time.perf_counter() - start
    text = to_markdown(summary, args.pipeline, seconds, args.target)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0 if not summary.failures else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
