"""Layer fusion: rewrite-rule sets and the passes that apply them.

* :class:`FusePortable` (``fuse``): standard ONNX ops only, good for every runtime.
* :class:`FuseOnnxRuntime` (``fuse-onnxruntime``): onnxruntime contrib ops (com.microsoft) where
  they pay; used by ``--target cpu`` / ``--target cuda``.

Rule sets are the explicit tuples below; each rule lives in the module of its family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onnxforge.ir import Model
from onnxforge.passes.fusion.activations import FuseGelu, FuseHardSigmoid, FuseHardSwish, FuseSoftmax
from onnxforge.passes.fusion.affine import (
    FoldOffsetIntoBias,
    FoldScaleIntoLinear,
    GemmOnFlattenedInput,
    MatMulAddToGemm,
)
from onnxforge.passes.fusion.attention import AttentionFusion
from onnxforge.passes.fusion.batchnorm import FuseConvBatchNorm, FuseLinearBatchNorm
from onnxforge.passes.fusion.layout import FuseReshapeChain, FuseTransposeChain, FuseTransposeIntoGemm
from onnxforge.passes.fusion.normalization import FuseLayerNorm
from onnxforge.passes.fusion.ort_fused_ops import (
    FuseBiasGelu,
    FuseConvActivation,
    FuseGemmActivation,
    FuseSkipLayerNorm,
)
from onnxforge.passes.fusion.padding import FusePadIntoConvPool
from onnxforge.passmanager import PassOptions
from onnxforge.rules import RewritePass, Rule

#: Standard-op fusions, in the order they are tried on each anchor.
PORTABLE_RULES: tuple[Rule, ...] = (
    FuseConvBatchNorm(),
    FuseLinearBatchNorm(),
    FoldScaleIntoLinear(),
    FoldOffsetIntoBias(),
    FusePadIntoConvPool(),
    FuseTransposeChain(),
    FuseTransposeIntoGemm(),
    FuseReshapeChain(),
    GemmOnFlattenedInput(),
    FuseLayerNorm(),
    FuseGelu(),
    FuseHardSigmoid(),
    FuseHardSwish(),
    FuseSoftmax(),
    MatMulAddToGemm(),
)

#: onnxruntime contrib fusions (run after the portable ones).
ONNXRUNTIME_RULES: tuple[Rule, ...] = (
    AttentionFusion(),
    FuseConvActivation(),
    FuseGemmActivation(),
    FuseBiasGelu(),
    FuseSkipLayerNorm(),
)


class FusePortable(RewritePass):
    """Fuses with standard ONNX ops (BatchNorm/affine folding, Gemm, Pad, Transpose and Reshape
    chains, LayerNormalization, Gelu, HardSigmoid/HardSwish, Softmax)."""

    name = "fuse"
    summary = "Fuse layers into standard ONNX ops (BN folding, Gemm, LayerNormalization, Gelu, ...)."
    rules: ClassVar[tuple[Rule, ...]] = PORTABLE_RULES


@dataclass(frozen=True)
class FuseOnnxRuntimeOptions(PassOptions):
    #: Fuse residual Add + LayerNormalization into SkipLayerNormalization. The pipelines decide
    #: it per target unless set: on for cuda (fewer kernel launches), and for cpu only where it
    #: measures faster (onnxruntime 1.32's CPU kernel took 216 vs 41 us for Add +
    #: LayerNormalization on [1, 128, 384], one thread, on our machines; see onnxforge.runtime.choices).
    skip_layer_norm: bool = False


class FuseOnnxRuntime(RewritePass):
    """Fuses into onnxruntime contrib ops (Attention, FusedConv, FusedGemm, BiasGelu/FastGelu,
    and optionally SkipLayerNormalization)."""

    name = "fuse-onnxruntime"
    summary = "Fuse into onnxruntime contrib ops (Attention, FusedConv, FusedGemm, BiasGelu, ...)."
    Options = FuseOnnxRuntimeOptions
    rules: ClassVar[tuple[Rule, ...]] = ONNXRUNTIME_RULES

    def active_rules(self, model: Model) -> tuple[Rule, ...]:
        opts = self.options
        assert isinstance(opts, FuseOnnxRuntimeOptions)
        rules = super().active_rules(model)
        if not opts.skip_layer_norm:
            rules = tuple(r for r in rules if r.name != FuseSkipLayerNorm.name)
        return rules
