"""Named pipelines: explicit lists of passes, built fresh for each compilation."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnxforge.passes as p
from onnxforge.errors import UsageError
from onnxforge.passes.compression.budgeted import KeepReference
from onnxforge.passes.compression.int8 import Int8Options, QuantizeInt8
from onnxforge.passes.compression.pruning import PruneChannels, PruneMagnitude
from onnxforge.passes.compression.weight_sharing import ShareWeights
from onnxforge.passmanager import CompositePass, FixedPoint, Pass, PassOptions, Sequential
from onnxforge.runtime.choices import skip_layer_norm_pays
from onnxforge.runtime.target import Target, get_target


def _target(target: str | Target | None) -> Target | None:
    return get_target(target)


def _portable(target: Target | None) -> Target | None:
    """The target the standard-op part of a pipeline is built for: None (portable) for targets
    that take onnxruntime's contrib ops, whose fusions run after the lossy step."""
    return None if target is None or target.contrib_ops else target


def lossless(options: Mapping[str, Mapping[str, Any]] | None = None, target: str | None = None) -> Pass:
    """Cleanup that keeps every output: constants normalized and shapes inferred, then folding,
    no-op elimination, CSE, initializer dedup and dead-code elimination repeated to a fixed
    point, then a topological sort and a shape-inference refresh."""
    make = _maker(options)
    return Sequential(
        [
            make(p.NormalizeConstants),
            # Static shapes of intermediate values let Shape/Size and no-op checks fold.
            make(p.ShapeInference),
            FixedPoint(
                _cleanup(make),
                max_iterations=8,
                name="cleanup-to-fixed-point",
            ),
            make(p.TopologicalSort),
            make(p.ShapeInference),
        ],
        name="lossless",
    )


def _cleanup(make: Callable[[type[Pass]], Pass]) -> list[Pass]:
    """The cleanup passes repeated to a fixed point, by lossless and after every fusion round."""
    return [
        make(p.ConstantFolding),
        make(p.NoOpElimination),
        make(p.CommonSubexpressionElimination),
        make(p.DeduplicateInitializers),
        make(p.DeadCodeElimination),
    ]


def optimize(options: Mapping[str, Mapping[str, Any]] | None = None, target: str | Target | None = None) -> Pass:
    """The lossless pipeline, then layer fusion to a fixed point: standard ONNX ops for every
    target (BN folding, Gemm, LayerNormalization, Gelu, ...), plus onnxruntime contrib ops
    (FusedConv, SkipLayerNormalization, Attention, ...) for targets that take them (cpu,
    cpu-native, cuda); cpu-native then lowers convolution regions to onnxruntime's NCHWc layout
    for this CPU."""
    t = _target(target)
    make = _maker(options)
    fusions: list[Pass] = [make(p.FusePortable)]
    if t is not None and t.contrib_ops:
        fusions.append(p.FuseOnnxRuntime(**_ort_fusion_options(options, t)))
    steps: list[Pass] = [lossless(options)]
    if t is not None and t.raise_opset_to is not None:
        # onnxruntime runs opset 17: LayerNormalization can then be fused in older exports.
        steps.append(p.RaiseOpset(**{"target": t.raise_opset_to, **dict((options or {}).get(p.RaiseOpset.name, {}))}))
    steps += [
        FixedPoint(
            [*fusions, make(p.ShapeInference), *_cleanup(make)],
            max_iterations=6,
            name="fuse-to-fixed-point",
        ),
        make(p.TopologicalSort),
        make(p.ShapeInference),
    ]
    if t is not None and t.nchwc:
        steps.append(make(p.LowerNchwc))
    return Sequential(steps, name="optimize")


def int8(options: Mapping[str, Mapping[str, Any] | PassOptions] | None = None, target: str | Target | None = None) -> Pass:
    """The optimize pipeline with standard ops only, then static int8 QDQ quantization
    calibrated on real samples (--calibration): per-channel int8 weights, uint8 (cpu) or int8
    (tensorrt) activations, per-layer SQNR, layers kept in float until the accuracy budget
    holds on held-out data."""
    t = _target(target)
    given = (options or {}).get(QuantizeInt8.name)
    opts = given if isinstance(given, Int8Options) else Int8Options(**dict(given or {}))
    opts = opts.with_policy(t.qdq_policy if t is not None else "cpu")
    rest = {k: v for k, v in (options or {}).items() if k != QuantizeInt8.name}
    return Sequential([optimize(rest, _portable(t)), QuantizeInt8(opts)], name="int8")


def int4(options: Mapping[str, Mapping[str, Any]] | None = None, target: str | Target | None = None) -> Pass:
    """The optimize pipeline, then int4 weight-only quantization of MatMul/Gemm weights
    (blocks of 32): com.microsoft MatMulNBits for onnxruntime (default, cpu, cuda), blockwise
    DequantizeLinear (opset >= 21) for tensorrt. No calibration data needed."""
    t = _target(target)
    opts = dict((options or {}).get(p.QuantizeWeightsInt4.name, {}))
    opts.setdefault("target", "portable" if t is not None and not t.contrib_ops else "onnxruntime")
    make = _maker(options)
    return Sequential(
        [optimize(options, _portable(t)), p.QuantizeWeightsInt4(**opts), make(p.DeadCodeElimination)],
        name="int4",
    )


def fp16(options: Mapping[str, Mapping[str, Any]] | None = None, target: str | Target | None = None) -> Pass:
    """The optimize pipeline with standard ops, then float16 weights and activations (model
    inputs/outputs stay float32; ops that need float32 stay there behind Casts), then the
    onnxruntime contrib fusions for --target cuda/cpu. Meant for GPUs (cuda, tensorrt)."""
    t = _target(target)
    make = _maker(options)
    steps: list[Pass] = [optimize(options, _portable(t)), make(p.ConvertFloat16)]
    if t is not None and t.contrib_ops:
        steps.append(p.FuseOnnxRuntime(**_ort_fusion_options(options, t)))
    steps += [make(p.DeadCodeElimination), make(p.TopologicalSort)]
    return Sequential(steps, name="fp16")


def _ort_fusion_options(options: Mapping[str, Mapping[str, Any]] | None, target: Target) -> dict[str, Any]:
    """fuse-onnxruntime's options: the user's, else the target's SkipLayerNormalization choice
    (``"measure"``: only where onnxruntime's kernel measured faster than Add +
    LayerNormalization here)."""
    opts = dict((options or {}).get(p.FuseOnnxRuntime.name, {}))
    if "skip_layer_norm" not in opts:
        choice = target.skip_layer_norm
        opts["skip_layer_norm"] = skip_layer_norm_pays() if choice == "measure" else bool(choice)
    return opts


def prune(options: Mapping[str, Mapping[str, Any] | PassOptions] | None = None, target: str | Target | None = None) -> Pass:
    """The optimize pipeline with standard ops, then pruning: unstructured or N:M weight pruning
    (prune, --sparsity/--n-m) or, with --structured, channel pruning that removes whole channels
    and attention heads and shrinks every tensor (prune-channels); with --calibration,
    activation-aware scores, least-squares repair and the accuracy budget on held-out data; then
    the lossless cleanup (and onnxruntime's contrib fusions for targets that take them)."""
    t = _target(target)
    opts = dict(options or {})
    cls: type[Pass] = PruneChannels if PruneChannels.name in opts else PruneMagnitude
    given = opts.get(cls.name)
    pruner = cls(given) if isinstance(given, PassOptions) else cls(**dict(given or {}))
    rest = {k: v for k, v in opts.items() if k not in (PruneMagnitude.name, PruneChannels.name)}
    steps: list[Pass] = [optimize(rest, _portable(t)), pruner, lossless(rest)]  # type: ignore[arg-type]
    if t is not None and t.contrib_ops:
        steps.append(p.FuseOnnxRuntime(**_ort_fusion_options(rest, t)))  # type: ignore[arg-type]
    return Sequential(steps, name="prune")


#: The budget options the compression pipelines hand to each budgeted pass.
_BUDGET_KEYS = ("calibration", "min_cosine", "min_sqnr", "max_accuracy_drop", "eval_data", "allow_budget_miss", "padding_mask", "dims")


def _share_of_budget(opts: Mapping[str, Any], parts: int) -> dict[str, Any]:
    """The budget of one of ``parts`` lossy steps that share it: output noise powers add, so
    each gets ``1/parts`` of the room below cosine 1 and of the accuracy drop, and its SQNR
    bound is raised by ``10 log10(parts)`` dB."""
    out = dict(opts)
    if parts > 1:
        if out.get("min_cosine") is not None:
            out["min_cosine"] = 1 - (1 - out["min_cosine"]) / parts
        if out.get("min_sqnr") is not None:
            out["min_sqnr"] = out["min_sqnr"] + 10 * math.log10(parts)
        if out.get("max_accuracy_drop") is not None:
            out["max_accuracy_drop"] = out["max_accuracy_drop"] / parts
    return out


def compress(options: Mapping[str, Mapping[str, Any]] | None = None, target: str | Target | None = None) -> Pass:
    """Deep Compression after the optimize pipeline (standard ops): magnitude pruning
    (``prune``, with --sparsity S), k-means weight sharing (``weight-sharing``, --bits B
    codebooks, more bits where the budget needs them) and exact sharing (identical and
    transposed constants), one accuracy budget for the whole pipeline (pruning gets half of its
    room, weight sharing is held to all of it against the uncompressed model); for --target
    cpu/cuda the codebook weights are lowered to MatMulNBits/GatherBlockQuantized, which
    onnxruntime keeps packed in memory. `onnxforge pack` then entropy-codes the result."""
    t = _target(target)
    opts = dict(options or {})
    share = dict(opts.pop(ShareWeights.name, {}) or {})
    prune = dict(opts.pop("prune", {}) or {})
    sparsity = float(prune.get("sparsity", 0) or 0)
    budget = {k: share[k] for k in _BUDGET_KEYS if k in share}
    steps: list[Pass] = [optimize(opts, _portable(t)), KeepReference()]
    if sparsity > 0:
        cls = p.PASSES_BY_NAME.get("prune")
        if cls is None:
            raise UsageError("--sparsity needs the pruning pass (prune), which this onnxforge does not have yet")
        steps.append(cls(**{**_share_of_budget(budget, 2), **prune}))
    steps.append(ShareWeights(**{**budget, **share}))
    make = _maker(opts)
    steps.append(p.DeduplicateInitializers(**{"transposed": True, **dict(opts.get(p.DeduplicateInitializers.name, {}))}))
    if t is not None and t.contrib_ops:
        steps.append(make(p.LowerPackedWeights))
    steps += [make(p.DeadCodeElimination), make(p.TopologicalSort)]
    return Sequential(steps, name="compress")


def low_rank(options: Mapping[str, Mapping[str, Any]] | None = None, target: str | Target | None = None) -> Pass:
    """The optimize pipeline with standard ops, then low-rank (SVD) factorization of MatMul/Gemm
    weights, data-aware with --calibration, the rank of each layer stepped up until the accuracy
    budget holds."""
    t = _target(target)
    opts = dict(options or {})
    lr = dict(opts.pop(p.FactorizeLowRank.name, {}) or {})
    make = _maker(opts)
    return Sequential(
        [optimize(opts, _portable(t)), p.FactorizeLowRank(**lr), make(p.DeadCodeElimination), make(p.TopologicalSort)],
        name="low-rank",
    )


def passthrough(options: Mapping[str, Mapping[str, Any]] | None = None, target: str | None = None) -> Pass:
    """No rewriting at all: load, validate and save (useful to re-save or inspect)."""
    return Sequential([], name="none")


@dataclass(frozen=True)
class Verification:
    """How ``--verify`` checks a pipeline's result against the original model.

    Lossless (``lossless=True``): onnxruntime runs both on a seeded random feed and every output
    must match within ``rtol``/``atol`` (float reordering). Lossy: every float output's cosine
    similarity (the worst of ``samples`` seeded random feeds) must reach ``min_cosine`` and its
    SQNR (feeds pooled) ``min_sqnr`` dB; other outputs must match exactly; a NaN or Inf the
    original does not produce fails. A lossy pipeline that calibrates (``calibrated``: int8)
    is checked on the data its accuracy guard held out of calibration instead, against the
    user's budget where one is given (``--min-cosine``, ``--min-sqnr``).
    """

    lossless: bool = True
    rtol: float = 1e-4
    atol: float = 1e-5
    min_cosine: float | None = None
    min_sqnr: float | None = None
    samples: int = 4
    calibrated: bool = False

    def describe(self) -> str:
        if self.lossless:
            return f"lossless: every output allclose (rtol {self.rtol:g}, atol {self.atol:g})"
        if self.min_cosine is None and self.min_sqnr is None:
            return "lossy: every output finite where the original's is, with its name, type and shape"
        bounds = [f"cosine >= {self.min_cosine:g}" if self.min_cosine is not None else ""]
        bounds.append(f"SQNR >= {self.min_sqnr:g} dB" if self.min_sqnr is not None else "")
        return "lossy: every output's " + " and ".join(b for b in bounds if b)

    def loosest(self, other: Verification) -> Verification:
        """A check both results of a combined pipeline can be held to."""
        if self.lossless:
            return other
        if other.lossless:
            return self

        def low(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else min(a, b)

        return Verification(
            lossless=False,
            min_cosine=low(self.min_cosine, other.min_cosine),
            min_sqnr=low(self.min_sqnr, other.min_sqnr),
            samples=max(self.samples, other.samples),
        )


#: Every rewrite of the lossless and optimize pipelines keeps outputs up to float reordering.
LOSSLESS = Verification()
#: float16 (11-bit significand): measured on the corpus and the builder models, the worst
#: output SQNR on realistic inputs was 42 dB (magika) and cosine 0.99997.
FP16 = Verification(lossless=False, min_cosine=0.999, min_sqnr=30.0)
#: int4 weight-only in blocks of 32: measured worst cosine 0.977 (magika, random inputs) and
#: SQNR 5.2 dB (openwakeword hey_jarvis's single near-zero probability on random inputs; 10.7
#: dB on real audio). The SQNR bound catches a wrong scale, which cosine cannot see.
INT4 = Verification(lossless=False, min_cosine=0.95, min_sqnr=3.0)
#: int8 is verified by its accuracy guard's figures, on data held out of calibration (or
#: --eval), against --min-cosine (default 0.99) and --min-sqnr.
INT8 = Verification(lossless=False, min_cosine=0.99, calibrated=True)
#: Pruning changes outputs as much as the user asks (--sparsity): --verify checks that every
#: output stays finite with its name and shape on seeded random feeds, and that the pass's own
#: budget (--min-cosine, --min-sqnr, --max-accuracy-drop), measured on held-out data, holds.
PRUNE = Verification(lossless=False, calibrated=True)
#: Weight sharing and low rank hold their own budget on held-out data; --verify checks the
#: result on seeded random inputs, which trained models meet less well than real ones.
COMPRESS = Verification(lossless=False, min_cosine=0.9)
#: What each lossy pass needs when it runs in a custom pass list (``--passes``).
LOSSY_PASSES: dict[str, Verification] = {
    ShareWeights.name: COMPRESS,
    "low-rank": COMPRESS,
    "lower-packed-weights": INT4,
    "fp16": FP16,
    "int4-weights": INT4,
    QuantizeInt8.name: INT8,
    PruneMagnitude.name: PRUNE,
    PruneChannels.name: PRUNE,
}


@dataclass(frozen=True)
class PipelineInfo:
    name: str
    build: Callable[[Mapping[str, Mapping[str, Any]] | None, str | None], Pass]
    verification: Verification = LOSSLESS

    @property
    def summary(self) -> str:
        doc = (self.build.__doc__ or "").strip()
        return " ".join(doc.split())


PIPELINES: dict[str, PipelineInfo] = {
    "optimize": PipelineInfo("optimize", optimize),
    "lossless": PipelineInfo("lossless", lossless),
    "int8": PipelineInfo("int8", int8, INT8),
    "int4": PipelineInfo("int4", int4, INT4),
    "fp16": PipelineInfo("fp16", fp16, FP16),
    "compress": PipelineInfo("compress", compress, COMPRESS),
    "low-rank": PipelineInfo("low-rank", low_rank, COMPRESS),
    "prune": PipelineInfo("prune", prune, PRUNE),
    "none": PipelineInfo("none", passthrough),
}


def get_pipeline(
    name: str, options: Mapping[str, Mapping[str, Any]] | None = None, target: str | None = None
) -> Pass:
    """The pipeline called ``name``, built for ``target`` (None: portable)."""
    info = PIPELINES.get(name)
    if info is None:
        raise UsageError(f"unknown pipeline {name!r} (known: {', '.join(PIPELINES)})")
    _check_option_targets(options)
    return info.build(options, get_target(target))


def verification_for(pipeline: str | Pass) -> Verification:
    """How ``--verify`` checks the result of ``pipeline`` (a registered name or pass objects):
    a named pipeline's declared :class:`Verification`; for passes, lossless unless one of them
    is lossy, then the loosest check of the lossy passes (an unknown lossy pass gets int4's)."""
    if isinstance(pipeline, str):
        info = PIPELINES.get(pipeline)
        if info is None:
            raise UsageError(f"unknown pipeline {pipeline!r} (known: {', '.join(PIPELINES)})")
        return info.verification
    leaves = pipeline.leaves() if isinstance(pipeline, CompositePass) else [pipeline]
    spec = LOSSLESS
    for leaf in leaves:
        if not leaf.lossless:
            spec = spec.loosest(LOSSY_PASSES.get(leaf.name, INT4))
    return spec


def from_pass_names(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> Pass:
    """A pipeline that runs the named passes once each, in the given order."""
    _check_option_targets(options)
    make = _maker(options)
    return Sequential([make(p.get_pass(n)) for n in names], name="custom")


def _maker(options: Mapping[str, Mapping[str, Any] | PassOptions] | None) -> Callable[[type[Pass]], Pass]:
    opts = options or {}

    def make(cls: type[Pass]) -> Pass:
        given = opts.get(cls.name)
        if isinstance(given, PassOptions):
            return cls(given)
        return cls(**dict(given or {}))

    return make


def _check_option_targets(options: Mapping[str, Mapping[str, Any]] | None) -> None:
    if not options:
        return
    for name in options:
        try:
            p.get_pass(name)
        except UsageError:
            raise UsageError(f"option given for unknown pass {name!r} (see `onnxforge passes`)") from None
