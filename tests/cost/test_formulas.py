"""Cost formulas against hand-computed counts (one case per formula family)."""

from __future__ import annotations

import pytest
from onnx import TensorProto

from onnxforge.kernels.costs.registry import (
    MATMUL,
    MOVEMENT,
    MS_DOMAIN,
    VECTOR,
    CostCall,
    MissingShape,
    OpCost,
    TensorInfo,
    elem_bits,
    get_formula,
    op_cost,
)
from onnxforge.kernels.registry import registered_ops

F = TensorProto.FLOAT


def t(*shape: int, et: int = F) -> TensorInfo:
    return TensorInfo(tuple(shape), et)


def cost(op: str, ins, outs, domain: str = "", **attrs) -> OpCost:  # type: ignore[no-untyped-def]
    return op_cost(CostCall(op, domain, ins, outs, attrs, 17))


def test_conv_counts_output_times_kernel_volume_plus_bias() -> None:
    # Y = 1x4x8x8 = 256 outputs, each 3 (C/group) * 3 * 3 = 27 MACs
    c = cost("Conv", [t(1, 3, 8, 8), t(4, 3, 3, 3), t(4)], [t(1, 4, 8, 8)])
    assert c == OpCost(macs=6912, flops=2 * 6912 + 256)


def test_depthwise_conv_uses_channels_per_group() -> None:
    c = cost("Conv", [t(1, 4, 8, 8), t(4, 1, 3, 3)], [t(1, 4, 8, 8)], group=4)
    assert c.macs == 256 * 9 and c.flops == 2 * 256 * 9


def test_tap_fraction_counts_kernel_taps_inside_the_input() -> None:
    from onnxforge.kernels.costs.linalg import conv_tap_fraction

    # no padding: every tap reads the input
    assert conv_tap_fraction((1, 8, 8, 8), (8, 1, 3, 3), (1, 8, 6, 6), {}) == 1.0
    # 3x3, padding 1 over 8x8: per axis the two edge outputs read 2 of 3 taps -> (22/24)^2
    same = conv_tap_fraction((1, 8, 8, 8), (8, 1, 3, 3), (1, 8, 8, 8), {"pads": [1, 1, 1, 1]})
    assert same == pytest.approx((22 / 24) ** 2)
    assert conv_tap_fraction((1, 8, 8, 8), (8, 1, 3, 3), (1, 8, 8, 8), {"auto_pad": "SAME_UPPER"}) == pytest.approx(same)
    # 5x5, padding 2 over a 2-row map: each output row reads 2 of its 5 kernel rows
    rows = conv_tap_fraction((1, 200, 2, 96), (200, 1, 5, 5), (1, 200, 2, 96), {"pads": [2, 2, 2, 2]})
    assert rows == pytest.approx(0.4 * (96 * 5 - 6) / (96 * 5))
    # stride 2 over 8 with padding 1: tap 0 of output 0 is in the padding, output 3 reads 3 taps
    assert conv_tap_fraction((1, 1, 8), (1, 1, 3), (1, 1, 4), {"pads": [1, 1], "strides": [2]}) == pytest.approx(11 / 12)
    # dilation 2, padding 2, size 4: outputs 0..3 read taps {1,2}, {1,2}, {0,1}, {0,1} -> 8 of 12
    assert conv_tap_fraction((1, 1, 4), (1, 1, 3), (1, 1, 4), {"pads": [2, 2], "dilations": [2]}) == pytest.approx(8 / 12)
    # channels last (NhwcConv) and shapes that do not fit
    assert conv_tap_fraction((1, 8, 8, 8), (8, 1, 3, 3), (1, 8, 8, 8), {"pads": [1] * 4}, channels_last=True) == pytest.approx(same)
    assert conv_tap_fraction((1, 8, 8), (8, 1, 3, 3), (1, 8, 8, 8), {}) == 1.0


def test_panel_positions_round_up_to_whole_gemm_panels() -> None:
    from onnxforge.kernels.costs.linalg import panel_positions

    # one position is a matrix-vector product; 2-16 fill one 16-column panel, 17 two
    assert panel_positions(1, 16) == 1
    assert panel_positions(2, 16) == panel_positions(16, 16) == 16
    assert panel_positions(17, 16) == 32 and panel_positions(256, 16) == 256
    assert panel_positions(5, 1) == 5  # no panels measured: positions as they are


def test_conv_transpose_scatters_each_input_through_the_kernel() -> None:
    # X has 2*4*4 = 32 elements; each feeds C_out/group * 3 * 3 = 27 outputs
    c = cost("ConvTranspose", [t(1, 2, 4, 4), t(2, 3, 3, 3)], [t(1, 3, 9, 9)], strides=[2, 2])
    assert c.macs == 32 * 27


def test_gemm_reads_k_from_a_respecting_trans_a() -> None:
    assert cost("Gemm", [t(2, 5), t(5, 3), t(3)], [t(2, 3)]) == OpCost(30, 66)
    assert cost("Gemm", [t(5, 2), t(3, 5)], [t(2, 3)], transA=1, transB=1) == OpCost(30, 60)


def test_batched_matmul() -> None:
    assert cost("MatMul", [t(2, 3, 4), t(4, 5)], [t(2, 3, 5)]) == OpCost(120, 240)
    assert cost("MatMul", [t(4), t(4, 5)], [t(5)]).macs == 20  # 1-D operand


def test_quantized_products_count_the_same_macs_plus_requantization() -> None:
    u8, i8 = TensorProto.UINT8, TensorProto.INT8
    mmi = cost("MatMulInteger", [t(2, 4, et=u8), t(4, 3, et=i8)], [t(2, 3, et=TensorProto.INT32)])
    assert mmi == OpCost(24, 48)
    scalar = t(et=F)
    qconv = cost(
        "QLinearConv",
        [t(1, 3, 8, 8, et=u8), scalar, t(et=u8), t(4, 3, 3, 3, et=i8), scalar, t(et=i8), scalar, t(et=u8)],
        [t(1, 4, 8, 8, et=u8)],
    )
    assert qconv == OpCost(6912, 2 * 6912 + 3 * 256)
    nbits = cost("MatMulNBits", [t(1, 8, 16), t(4, 1, 8, et=TensorProto.UINT8), t(4)], [t(1, 8, 4)], MS_DOMAIN, K=16, N=4)
    assert nbits.macs == 8 * 16 * 4 and nbits.flops == 2 * 512 + 2 * 16 * 4


def test_einsum_is_the_loop_nest_over_all_indices() -> None:
    c = cost("Einsum", [t(2, 3, 4), t(2, 4, 5)], [t(2, 3, 5)], equation="bij,bjk->bik")
    assert c == OpCost(120, 240)
    ell = cost("Einsum", [t(7, 2, 3, 4), t(7, 2, 4, 5)], [t(7, 2, 3, 5)], equation="...ij,...jk->...ik")
    assert ell.macs == 7 * 2 * 3 * 4 * 5
    assert cost("Einsum", [t(3, 4)], [t(4, 3)], equation="ij->ji") == OpCost(0, 0)
    assert cost("Einsum", [t(3, 4)], [t(3)], equation="ij->i") == OpCost(0, 12)


def test_lstm_gru_rnn() -> None:
    # seq 5, batch 2, input 3, hidden 4, one direction
    x, out = t(5, 2, 3), t(5, 1, 2, 4)
    lstm = cost("LSTM", [x, t(1, 16, 3), t(1, 16, 4), t(1, 32)], [out], hidden_size=4)
    assert lstm.macs == 5 * 2 * 4 * 4 * (3 + 4)
    assert lstm.flops == 2 * lstm.macs + 5 * 2 * 4 * (18 + 8)
    gru = cost("GRU", [x, t(1, 12, 3), t(1, 12, 4)], [out], hidden_size=4)
    assert gru.macs == 5 * 2 * 3 * 4 * 7
    bi = cost("RNN", [t(2, 5, 3), t(2, 4, 3), t(2, 4, 4)], [t(5, 2, 2, 4)], layout=1)
    assert bi.macs == 5 * 2 * 2 * 4 * 7  # batch-first layout, two directions


def test_attention_contrib_op_counts_projection_scores_and_context() -> None:
    # B=1, S=4, D=8, packed weights 8x24, 2 heads
    c = cost("Attention", [t(1, 4, 8), t(8, 24), t(24)], [t(1, 4, 8)], MS_DOMAIN, num_heads=2)
    proj = 4 * 8 * 24
    core = 4 * 4 * (8 + 8)
    assert c.macs == proj + core
    assert c.flops == 2 * (proj + core) + 4 * 24 + 6 * 4 * 2 * 4


def test_elementwise_and_windows() -> None:
    assert cost("Add", [t(2, 3), t(3)], [t(2, 3)]) == OpCost(0, 6)
    assert cost("Sigmoid", [t(10)], [t(10)]) == OpCost(0, 40)
    assert cost("Sum", [t(4), t(4), t(4)], [t(4)]) == OpCost(0, 8)
    assert cost("Softmax", [t(2, 3)], [t(2, 3)]) == OpCost(0, 30)
    assert cost("MaxPool", [t(1, 1, 4, 4)], [t(1, 1, 2, 2)], kernel_shape=[2, 2]) == OpCost(0, 16)
    assert cost("AveragePool", [t(1, 1, 4, 4)], [t(1, 1, 2, 2)], kernel_shape=[2, 2]) == OpCost(0, 20)
    assert cost("GlobalMaxPool", [t(1, 2, 4, 4)], [t(1, 2, 1, 1)]) == OpCost(0, 32)
    assert cost("ReduceMean", [t(2, 6)], [t(2, 1)]) == OpCost(0, 14)
    assert cost("Resize", [t(1, 1, 2, 2)], [t(1, 1, 4, 4)], mode="nearest") == OpCost(0, 0)
    assert cost("Resize", [t(1, 1, 2, 2)], [t(1, 1, 4, 4)], mode="linear") == OpCost(0, 16 * 9)
    assert cost("BatchNormalization", [t(1, 3, 2, 2)] + [t(3)] * 4, [t(1, 3, 2, 2)]) == OpCost(0, 2 * 12 + 12)
    assert cost("LayerNormalization", [t(2, 8), t(8), t(8)], [t(2, 8)]) == OpCost(0, 7 * 16)


def test_movement_ops_cost_nothing_and_say_so() -> None:
    for op in ("Reshape", "Transpose", "Gather", "Concat", "Shape"):
        f = get_formula(op)
        assert f is not None and f.kind == MOVEMENT
    assert get_formula("Conv").kind == MATMUL  # type: ignore[union-attr]
    assert get_formula("Relu").kind == VECTOR  # type: ignore[union-attr]


def test_missing_shapes_are_reported_not_guessed() -> None:
    with pytest.raises(MissingShape):
        cost("Conv", [t(1, 3, 8, 8), None], [t(1, 4, 8, 8)])
    with pytest.raises(MissingShape):
        cost("Relu", [t(3)], [None])
    with pytest.raises(KeyError):
        op_cost(CostCall("NoSuchOp", "", [t(1)], [t(1)]))


def test_every_op_constant_folding_can_evaluate_has_a_cost_formula() -> None:
    missing = [op for op in registered_ops() if get_formula(op) is None]
    assert missing == []


def test_sub_byte_types_are_packed() -> None:
    assert elem_bits(TensorProto.INT4) == 4
    assert TensorInfo((3,), TensorProto.UINT4).nbytes == 2
    assert TensorInfo((2, 2), TensorProto.FLOAT16).nbytes == 8
