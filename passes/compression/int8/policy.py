"""Which ops get Q/DQ, and where, per target.

Three roles:

* **compute ops** (Conv, ConvTranspose, Gemm, MatMul): activation inputs get a Q/DQ pair,
  weights become int8 (per output channel, symmetric) behind a DequantizeLinear, biases become
  int32 with scale ``input_scale * weight_scale``;
* **pass-through ops** (Reshape, Transpose, MaxPool, Concat, ...): their output shares the
  quantization parameters of their input, so that the runtime can drop the Q/DQ around them;
* **quantized elementwise ops** (residual Add, Mul, pooling averages, ...): their inputs and
  output get Q/DQ where the target has integer kernels for them.

Targets:

* ``cpu`` (onnxruntime): Q/DQ on inputs *and* outputs of compute ops, so onnxruntime fuses
  ``DQ → Conv → Q`` into QLinearConv, ``DQ → MatMul → Q`` into QLinearMatMul and
  ``DQ → MatMul`` into MatMulIntegerToFloat; a Relu between a compute op and its Q is removed by
  onnxruntime when the zero point is the type's minimum, so Q goes after the Relu; activations
  uint8 asymmetric, weights int8 symmetric (the U8S8 kernels).
* ``tensorrt``: TensorRT's explicit-quantization rules: Q/DQ on the inputs of
  Conv/Gemm/MatMul and of residual Adds, none on outputs (TensorRT propagates the scales
  itself); activations int8 symmetric.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxforge.runtime.machine import u8s8_saturates

#: Ops whose heavy work runs on integer kernels; value: (weight input index, weight channel axis
#: as a function of attributes is resolved in weights.py, bias input index or None).
COMPUTE_OPS: dict[str, tuple[int, int | None]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (1, None),
}

#: Ops whose output can share the input's quantization parameters (data movement, max).
PASS_THROUGH_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "MaxPool",
        "GlobalMaxPool",
        "Slice",
        "Split",
        "Gather",
        "Identity",
        "Resize",
        "DepthToSpace",
        "SpaceToDepth",
        "Pad",
    }
)

#: Activations that may sit between a compute op and its output Q (onnxruntime removes a Relu
#: whose Q has the type's minimum as zero point, and clips Clip(0, 6) the same way).
FOLDABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})


@dataclass(frozen=True)
class TargetPolicy:
    """Where Q/DQ go for one target."""

    name: str
    #: Activation element type: "uint8" (asymmetric) or "int8" (symmetric).
    activation_type: str
    quantize_outputs: bool
    #: Elementwise ops whose inputs (and, with quantize_outputs, outputs) get Q/DQ.
    elementwise_ops: frozenset[str] = field(default_factory=frozenset)
    pass_through: frozenset[str] = PASS_THROUGH_OPS
    #: Elementwise ops quantized only where they join two activations (residual Adds, gates):
    #: with a constant operand (``x + 3``, a learned scale) int8 does not pay for them and every
    #: pair adds noise (measured: PP-OCR rec 1.20x -> 1.31x, magika 1.79x -> 1.93x over fp32).
    joins_only: frozenset[str] = frozenset({"Add", "Mul"})
    #: Ops the target runs on integer kernels when they sit between Q/DQ pairs (for the
    #: report's list of pairs the target will not fuse).
    fused_ops: frozenset[str] = field(default_factory=frozenset)
    #: Give the bias Add after a quantized MatMul an int32 bias where onnxruntime turns MatMul +
    #: Add into Gemm (2-D or fully static input): its QGemm needs all three Gemm inputs
    #: dequantized, and with a float bias the Gemm runs in float on weights dequantized at every
    #: call (ViT-B/16 int8 was 0.94x of fp32; 3.2x with int32 biases).
    int32_bias_adds: bool = False

    @property
    def saturates(self) -> bool:
        """Whether the target's uint8 x int8 kernels can saturate on this CPU (no VNNI,
        :func:`onnxforge.runtime.machine.u8s8_saturates`): weights are then kept from it."""
        return self.activation_type == "uint8" and u8s8_saturates()


CPU = TargetPolicy(
    name="cpu",
    activation_type="uint8",
    quantize_outputs=True,
    elementwise_ops=frozenset({"Add", "Mul", "AveragePool", "GlobalAveragePool", "Concat", "Sigmoid", "LeakyRelu"}),
    fused_ops=frozenset(
        set(COMPUTE_OPS)
        | {"Add", "Mul", "AveragePool", "GlobalAveragePool", "Concat", "Sigmoid", "LeakyRelu", "Relu", "Clip"}
        | PASS_THROUGH_OPS
    ),
    int32_bias_adds=True,
)

TENSORRT = TargetPolicy(
    name="tensorrt",
    activation_type="int8",
    quantize_outputs=False,
    elementwise_ops=frozenset({"Add"}),
    fused_ops=frozenset(set(COMPUTE_OPS) | {"Add"} | PASS_THROUGH_OPS),
)

#: Placement rules by name; a :class:`~onnxforge.runtime.target.Target` names its own
#: (``qdq_policy``): onnxruntime's cpu, cpu-native and cuda take ``cpu``, TensorRT ``tensorrt``.
POLICIES = {"cpu": CPU, "tensorrt": TENSORRT}


def policy_for(name: str | None) -> TargetPolicy:
    """The placement rules called ``name`` (None → cpu, onnxruntime being the default runtime)."""
    return POLICIES[name or "cpu"]
