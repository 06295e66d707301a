"""Lowering codebook weights to onnxruntime's MatMulNBits / GatherBlockQuantized: the rewrite,
the numpy kernels agreeing with onnxruntime, exact zeros, and the error of the re-quantization."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pass_helpers import const, make_model, vi

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner
from onnxforge.ir import to_proto
from onnxforge.kernels.contrib import pack_bits, unpack_bits
from onnxforge.kernels.registry import evaluate
from onnxforge.metrics.sqnr import cosine
from onnxforge.passes.compression.weight_sharing import ShareWeights
from onnxforge.passes.lowering.packed_weights import REPORT_KEY, LowerPackedWeights, quantize_blocks
from onnxforge.passmanager import PassContext

RNG = np.random.default_rng(3)


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)  # the same model whichever tests ran before
    emb = rng.standard_normal((50, 64)).astype(np.float32)
    w1 = rng.standard_normal((64, 96)).astype(np.float32)
    w1[rng.random(w1.shape) < 0.5] = 0  # pruned
    w2 = rng.standard_normal((32, 96)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed", axis=0),
        helper.make_node("MatMul", ["e", "w1"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="gemm", transB=1, alpha=0.5, beta=2.0),
    ]
    return make_model(
        nodes, [vi("ids", TensorProto.INT64, [4])], [vi("y", shape=[4, 32])],
        [const("emb", emb), const("w1", w1), const("w2", w2), const("b2", rng.standard_normal(32))],
    )


def _compressed(bits: int) -> onnx.ModelProto:
    ctx = PassContext()
    return to_proto(ctx.run(ShareWeights(bits=bits), modelio.load(_model()).model).model)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_bits_pack_lowest_first_and_round_trip(bits):
    codes = RNG.integers(0, 1 << bits, (3, 37)).astype(np.uint8)
    packed = pack_bits(codes, bits)
    assert packed.shape == (3, -(-37 * bits // 8))
    np.testing.assert_array_equal(unpack_bits(packed, bits, 37), codes)


def test_block_quantization_keeps_zeros_exact():
    w = RNG.standard_normal((8, 70)).astype(np.float32)
    w[:, ::3] = 0
    codes, scales, zp = quantize_blocks(w, 4, 32)
    d = ((codes.astype(np.float32) - zp[:, :, None]) * scales[:, :, None]).reshape(8, -1)[:, :70]
    assert np.all(d[w == 0] == 0)
    assert np.sqrt(np.square(d - w).mean() / np.square(w).mean()) < 0.1


# 4 bits: re-quantizing 16 shared values into uniform int4 blocks adds an error of the
# codebook's own order (cosine 0.982-0.992 to the codebook model over five seeded models)
@pytest.mark.parametrize("bits, min_cos", [(4, 0.985), (8, 0.9999)])
def test_codebook_model_lowers_to_packed_contrib_ops(bits, min_cos):
    src = _compressed(bits)
    ctx = PassContext()
    ir = modelio.load(src).model
    assert ctx.run(LowerPackedWeights(), ir).modified
    out = to_proto(ir)
    onnx.checker.check_model(out)
    ops = sorted(n.op_type for n in out.graph.node)
    # the Mul applies the embedding codebook's per-column scales to the looked-up rows
    assert ops == ["GatherBlockQuantized", "MatMulNBits", "MatMulNBits", "Mul", "Relu"]
    report = ctx.records[REPORT_KEY]
    assert {w.bits for w in report.weights} == {4 if bits <= 4 else 8}
    assert all(w.sqnr_db > (20 if bits == 4 else 40) for w in report.weights)
    feeds = {"ids": np.array([0, 7, 49, 3], np.int64)}
    want = OrtRunner().run(src, feeds)["y"]
    got = OrtRunner().run(out, feeds)["y"]
    assert cosine(want, got) > min_cos


def test_contrib_kernels_agree_with_onnxruntime():
    ir = modelio.load(_compressed(4)).model
    PassContext().run(LowerPackedWeights(), ir)
    out = to_proto(ir)
    feeds = {"ids": np.array([0, 7, 49, 3], np.int64)}
    ort_vals = OrtRunner().run(out, feeds)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    env = {**inits, **feeds}
    for node in out.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ins = [env[i] if i else None for i in node.input]
        (env[node.output[0]],) = evaluate(node.op_type, ins, attrs, opset=17, domain=node.domain)
    np.testing.assert_allclose(env["y"], ort_vals["y"], rtol=1e-4, atol=1e-4)
