"""Cost formulas of elementwise operators, activations, casts, quantize/dequantize,
normalizations and softmax: no MACs, a fixed number of operations per output element.

The per-element counts follow the ONNX specification's formula, one per arithmetic operation
(a transcendental function counts one): ``Sigmoid = 1 / (1 + exp(-x))`` is 4, ``HardSwish =
x * max(0, min(1, alpha * x + beta))`` is 4, ``LayerNormalization`` is 7 (mean, subtract,
square, variance, scale by the inverse deviation, gamma, beta), ``Softmax`` is 5 (max, subtract,
exp, sum, divide). Variadic ``Sum``/``Max``/``Min`` count ``inputs - 1`` per element, ``Mean``
one more.
"""

from __future__ import annotations

from onnxforge.kernels.costs.formula import (
    MS_DOMAIN,
    CostCall,
    FormulaSet,
    OpCost,
    elementwise,
)

#: The cost formulas this module defines (collected by onnxforge.kernels.table).
FORMULAS = FormulaSet()

#: Operations per output element of one-operation elementwise ops.
_ONE = (
    "Add Sub Mul Div Mod Pow Neg Abs Sqrt Reciprocal Exp Log Floor Ceil Round Sign Relu Erf Tanh "
    "Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh IsNaN IsInf Not And Or Xor Equal Less "
    "Greater LessOrEqual GreaterOrEqual BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot Where "
    "ThresholdedRelu Cast CastLike Hardmax"
).split()

#: Operations per output element of the other elementwise ops and activations.
PER_ELEMENT = {
    **dict.fromkeys(_ONE, 1),
    "Clip": 2,
    "LeakyRelu": 2,
    "PRelu": 2,
    "Shrink": 2,
    "Elu": 3,
    "Celu": 3,
    "Softsign": 2,
    "Softplus": 3,
    "HardSigmoid": 3,
    "HardSwish": 4,
    "Sigmoid": 4,
    "Selu": 4,
    "Mish": 5,  # x * tanh(softplus(x))
    "Gelu": 5,  # 0.5 * x * (1 + erf(x / sqrt 2)); the tanh form is counted the same
    "QuantizeLinear": 3,  # divide, round (+ zero point), saturate
    "DequantizeLinear": 2,  # subtract zero point, scale
    "DynamicQuantizeLinear": 5,  # min/max scan, divide, round, add zero point, saturate
    "Softmax": 5,
    "LogSoftmax": 6,
    "LayerNormalization": 7,
    "InstanceNormalization": 7,
    "GroupNormalization": 7,
    "RMSNormalization": 5,
    "MeanVarianceNormalization": 5,
    "LpNormalization": 3,
    "Swish": 5,  # x * sigmoid(alpha * x)
    "SwiGLU": 6,
    "RotaryEmbedding": 3,  # x * cos + rotate(x) * sin
    "RandomNormal": 1,
    "RandomUniform": 1,
    "RandomNormalLike": 1,
    "RandomUniformLike": 1,
    "Bernoulli": 2,
    "HannWindow": 3,
    "HammingWindow": 3,
    "BlackmanWindow": 5,
    "NegativeLogLikelihoodLoss": 1,
    "SoftmaxCrossEntropyLoss": 6,
}

#: onnxruntime contrib (com.microsoft) elementwise ops.
MS_PER_ELEMENT = {
    "BiasGelu": 6,
    "FastGelu": 9,  # tanh approximation (+ bias)
    "Gelu": 5,
    "QuickGelu": 5,
    "BiasAdd": 2,
    "SkipLayerNormalization": 9,  # skip add, bias add, layer normalization
    "SkipSimplifiedLayerNormalization": 7,
    "SimplifiedLayerNormalization": 5,
    "LayerNormalization": 7,
    "EmbedLayerNormalization": 9,  # embedding adds + layer normalization
    "QuantizeLinear": 3,
    "DequantizeLinear": 2,
    "BiasSoftmax": 6,
    "QLinearAdd": 7,  # dequantize both (4), add, requantize (3) -> per output element ~ 7
    "QLinearMul": 7,
    "QLinearSigmoid": 8,
    "QLinearLeakyRelu": 6,
    "QLinearSoftmax": 9,
    "RotaryEmbedding": 3,
}

#: Activation names of FusedConv / FusedGemm, with their per-element cost.
_ACTIVATIONS = {
    "Relu": 1,
    "Tanh": 1,
    "Sigmoid": 4,
    "LeakyRelu": 2,
    "Clip": 2,
    "HardSigmoid": 3,
    "HardSwish": 4,
    "Elu": 3,
}


def activation_flops(activation: object, elements: int) -> int:
    """Operations of a fused activation named by a FusedConv/FusedGemm ``activation`` attribute."""
    if isinstance(activation, bytes):
        activation = activation.decode()
    if not activation:
        return 0
    return _ACTIVATIONS.get(str(activation), 1) * elements


for _op, _n in PER_ELEMENT.items():
    FORMULAS.register(_op)(elementwise(_n))
for _op, _n in MS_PER_ELEMENT.items():
    FORMULAS.register(_op, domain=MS_DOMAIN)(elementwise(_n))
# onnxruntime's optimizer writes its RMS-norm fusion in the default domain.
FORMULAS.register("SimplifiedLayerNormalization")(elementwise(MS_PER_ELEMENT["SimplifiedLayerNormalization"]))


@FORMULAS.register(["Sum", "Max", "Min", "Mean"])
def _variadic(call: CostCall) -> OpCost:
    n = sum(1 for t in call.inputs if t is not None) or len(call.inputs)
    per = max(n - 1, 0) + (1 if call.op_type == "Mean" else 0)
    return OpCost(0, per * call.require_output(0).numel)


@FORMULAS.register("BatchNormalization")
def _batch_norm(call: CostCall) -> OpCost:
    """Inference form: per channel, ``scale / sqrt(var + eps)`` and the shift (4 operations),
    then a multiply and an add per element. Training mode adds the statistics (3 per element)."""
    y = call.require_output(0)
    channels = y.shape[1] if y.rank >= 2 else 1
    training = int(call.attr("training_mode", 0) or 0) or len([o for o in call.outputs if o is not None]) > 1
    return OpCost(0, (5 if training else 2) * y.numel + 4 * channels)
