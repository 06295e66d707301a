"""Layer fusion: rewrite-rule sets and the passes that apply them.

* :class:`FusePortable` (``fuse``): standard ONNX ops only, good for every runtime.
* :class:`FuseOnnxRuntime` (``fuse-onnxruntime``): onnxruntime contrib ops (com.microsoft) where
  they pay; used by ``--target cpu`` / ``--target cuda``.

Rule sets are the explicit tuples below; each rule lives in the module of its family.
"""

from __future__ import annotations

from typing import ClassVar

from onnxforge.rules import RewritePass, Rule

PORTABLE_RULES: tuple[Rule, ...] = ()
ONNXRUNTIME_RULES: tuple[Rule, ...] = ()


class FusePortable(RewritePass):
    """Fuses with standard ONNX ops (BatchNorm/affine folding, Gemm, Pad, Transpose and Reshape
    chains, LayerNormalization, Gelu, HardSigmoid/HardSwish, Softmax)."""

    name = "fuse"
    summary = "Fuse layers into standard ONNX ops (BN folding, Gemm, LayerNormalization, Gelu, ...)."
    rules: ClassVar[tuple[Rule, ...]] = PORTABLE_RULES


class FuseOnnxRuntime(RewritePass):
    """Fuses into onnxruntime contrib ops (FusedConv, FusedGemm, BiasGelu, SkipLayerNormalization,
    Attention)."""

    name = "fuse-onnxruntime"
    summary = "Fuse into onnxruntime contrib ops (FusedConv, FusedGemm, SkipLayerNorm, Attention, ...)."
    rules: ClassVar[tuple[Rule, ...]] = ONNXRUNTIME_RULES
