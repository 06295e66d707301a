"""The ``ort-attention`` rule: exported self-attention → ``com.microsoft::Attention``.

Synthetic blocks (:mod:`onnxforge.models.attention_blocks`) check the structure of the rewrite and
unchanged outputs on onnxruntime's CPU provider (optimizations off) for every supported form;
refusals check the reason the rule gives. The slow tests run the rule on the real exports."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
import pytest
from corpus_required import export_model
from onnx import TensorProto, helper, numpy_helper
from pass_helpers import apply, rule_pass

from onnxforge import modelio
from onnxforge.equivalence import assert_equivalent
from onnxforge.ir import to_proto
from onnxforge.models.attention_blocks import attention_block
from onnxforge.passes.fusion.attention import AttentionFusion
from onnxforge.passes.fusion.attention.context import match_context
from onnxforge.passes.fusion.attention.heads import K_PERM, Q_PERM, V_PERM, match_head
from onnxforge.passes.fusion.attention.scores import match_scores
from onnxforge.passes.fusion.attention.shape_ints import Dim, ShapeInts
from onnxforge.passes.fusion.attention.shapes import check_shapes
from onnxforge.passmanager import PassContext
from onnxforge.rules import MatchFailed, RewriteContext, rule_trace

B, S, H, N = 2, 5, 16, 2
MIN32 = float(np.finfo(np.float32).min)
#: Padding at the end of the first sequence, none in the second.
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=np.int64)


def feeds(mask: bool, dtype: type = np.float32, mask_rows: np.ndarray = MASK) -> dict[str, np.ndarray]:
    f: dict[str, np.ndarray] = {"x": np.random.default_rng(7).standard_normal((B, S, H)).astype(dtype)}
    if mask:
        f["attention_mask"] = mask_rows.copy()
    return f


def fuse(
    proto: onnx.ModelProto, f: dict[str, np.ndarray], *, rtol: float = 1e-4, atol: float = 1e-5
) -> onnx.ModelProto:
    """Run the rule (through ``apply``: IR verified, onnx checker), check that every block (one
    Softmax each) became one ``com.microsoft::Attention`` -- equal outputs alone would also pass
    when nothing fired -- and compare outputs on ``f``."""
    blocks = op_counts(proto)["Softmax"]
    done = apply(proto, rule_pass(AttentionFusion()), equivalent=False)
    assert blocks > 0 and len(attention_nodes(done.after)) == blocks, op_counts(done.after)
    assert op_counts(done.after)["Softmax"] == 0, op_counts(done.after)
    assert_equivalent(proto, done.after, feeds=f, rtol=rtol, atol=atol)
    return done.after


def op_counts(m: onnx.ModelProto) -> Counter[str]:
    return Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in m.graph.node)


def attention_nodes(m: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in m.graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def initializer(m: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == name))


def why_not(proto: onnx.ModelProto) -> str:
    """The rule's reason for not firing on the block's output Reshape (and that it did not)."""
    model = modelio.load(proto).model
    ctx = PassContext()
    result = ctx.run(rule_pass(AttentionFusion()), model)
    assert not result.stats.get("ort-attention")
    return rule_trace(ctx).misses["out_reshape"]["ort-attention"]


# -- fused forms ---------------------------------------------------------------------------------


def test_bert_like_block_with_padding_mask_and_biases() -> None:
    m = attention_block(mask="vmap", bias=True)
    after = fuse(m, feeds(True))
    (att,) = attention_nodes(after)
    assert op_counts(after)["Softmax"] == 0 and op_counts(after)["MatMul"] == 0
    a = attrs(att)
    assert a["num_heads"] == N and a["mask_filter_value"] == pytest.approx(MIN32)
    assert "unidirectional" not in a and "scale" not in a  # 1/sqrt(d) is the default
    w, bias = initializer(after, att.input[1]), initializer(after, att.input[2])
    assert w.shape == (H, 3 * H) and bias.shape == (3 * H,) and np.all(bias != 0)
    # mask_index = Cast(Cast(attention_mask, bool), int32): nonzero means attend, as in the model
    cast_i32 = next(n for n in after.graph.node if att.input[3] in n.output)
    assert cast_i32.op_type == "Cast" and attrs(cast_i32)["to"] == TensorProto.INT32
    cast_bool = next(n for n in after.graph.node if cast_i32.input[0] in n.output)
    assert cast_bool.input[0] == "attention_mask" and attrs(cast_bool)["to"] == TensorProto.BOOL


def test_mask_values_other_than_one_and_fully_masked_rows() -> None:
    """Any nonzero value attends (the model casts to bool), and a fully masked sequence gives
    the model's result because the fill value is the model's."""
    m = attention_block(mask="vmap")
    odd = np.array([[0, 0, 0, 0, 0], [2, -1, 1, 0, 7]], dtype=np.int64)
    fuse(m, feeds(True, mask_rows=odd))


def test_classic_additive_mask_and_missing_biases() -> None:
    m = attention_block(mask="additive", bias=(True, False, True))
    after = fuse(m, feeds(True))
    (att,) = attention_nodes(after)
    bias = initializer(after, att.input[2])
    assert np.all(bias[H : 2 * H] == 0) and np.all(bias[:H] != 0)
    cast = next(n for n in after.graph.node if att.input[3] in n.output)
    assert cast.input[0] == "attention_mask" and attrs(cast)["to"] == TensorProto.INT32


def test_vit_like_block_without_mask_static_shapes() -> None:
    m = attention_block(dynamic=False, mask="none", scaling="mul")
    after = fuse(m, feeds(False))
    (att,) = attention_nodes(after)
    assert len(att.input) == 3 and attrs(att) == {"num_heads": N}
    assert set(op_counts(after)) == {"com.microsoft::Attention"}


def test_gpt2_like_conv1d_split_causal_and_padding() -> None:
    """GPT-2's export: Conv1D (Reshape → Gemm → Reshape) + Split, head reshapes computed from
    Shape of the split values, one vmap mask with the causal and the padding leaves."""
    m = attention_block(packing="conv1d", shapes_from_split=True, mask="vmap", causal="vmap")
    after = fuse(m, feeds(True))
    (att,) = attention_nodes(after)
    a = attrs(att)
    assert a["unidirectional"] == 1 and len(att.input) == 4
    # the shape computations that read the split values went with the pattern
    assert not {"Split", "Gemm", "Transpose", "Softmax"} & set(op_counts(after))


def test_gpt2_left_padding_fully_masked_rows() -> None:
    """Left padding with a causal mask leaves the first query rows with no visible key: the
    model's fill value makes them equal too."""
    m = attention_block(packing="conv1d", mask="vmap", causal="vmap")
    left = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=np.int64)
    fuse(m, feeds(True, mask_rows=left))


@pytest.mark.parametrize("dynamic", [True, False])
def test_classic_gpt2_causal_buffer(dynamic: bool) -> None:
    m = attention_block(packing="split", causal="tril", mask="additive", scaling="div", dynamic=dynamic)
    after = fuse(m, feeds(True))
    (att,) = attention_nodes(after)
    assert attrs(att)["unidirectional"] == 1 and len(att.input) == 4


def test_causal_only() -> None:
    after = fuse(attention_block(causal="vmap"), feeds(False))
    (att,) = attention_nodes(after)
    assert attrs(att)["unidirectional"] == 1 and len(att.input) == 3


@pytest.mark.parametrize("scaling", ["div", "qk", "q-before-reshape", "custom"])
def test_scale_placements(scaling: str) -> None:
    after = fuse(attention_block(mask="vmap", scaling=scaling), feeds(True))
    (att,) = attention_nodes(after)
    default = 1 / np.sqrt(H // N)
    # q * d^-0.25 and k * d^-0.25 multiply to 1/sqrt(d) up to the rounding of the constants
    assert attrs(att).get("scale", default) == pytest.approx(
        0.3 if scaling == "custom" else default, rel=1e-6
    )


def test_layers_share_one_mask_cast() -> None:
    m = attention_block(layers=3, mask="vmap")
    after = fuse(m, feeds(True), atol=1e-4)
    atts = attention_nodes(after)
    assert len(atts) == 3 and len({a.input[3] for a in atts}) == 1
    assert sum(n.op_type == "Cast" and attrs(n)["to"] == TensorProto.INT32 for n in after.graph.node) == 1


def test_float16() -> None:
    m = attention_block(mask="vmap", dtype=np.float16)
    after = fuse(m, feeds(True, np.float16), rtol=1e-2, atol=2e-3)
    (att,) = attention_nodes(after)
    assert initializer(after, att.input[1]).dtype == np.float16
    assert attrs(att)["mask_filter_value"] == pytest.approx(float(np.finfo(np.float16).min))


def test_k_transposed_in_two_steps() -> None:
    """Transpose(0,2,1,3) then Transpose(0,1,3,2) on K composes to (0,2,3,1)."""
    m = attention_block()
    kt = next(
        n for n in m.graph.node if n.op_type == "Transpose" and list(n.attribute[0].ints) == [0, 2, 3, 1]
    )
    kt.attribute[0].ints[:] = [0, 2, 1, 3]
    mid = kt.output[0]
    kt.output[0] = mid + "_bnsd"
    idx = list(m.graph.node).index(kt)
    m.graph.node.insert(idx + 1, helper.make_node("Transpose", [mid + "_bnsd"], [mid], perm=[0, 1, 3, 2]))
    fuse(m, feeds(False))


# -- refusals ------------------------------------------------------------------------------------


def _to_graph_input(m: onnx.ModelProto, name: str) -> None:
    t = next(t for t in m.graph.initializer if t.name == name)
    m.graph.initializer.remove(t)
    m.graph.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))


def test_refuses_non_constant_weight() -> None:
    m = attention_block()
    q_mm = next(n for n in m.graph.node if n.op_type == "MatMul" and n.input[0] == "x")
    _to_graph_input(m, q_mm.input[1])
    assert why_not(m) == "Q weight is not a constant"


def test_refuses_non_constant_scale() -> None:
    m = attention_block(scaling="mul")
    mul = next(n for n in m.graph.node if n.op_type == "Mul")
    _to_graph_input(m, mul.input[1])
    assert why_not(m) == "scores are scaled by Mul with a non-scalar or non-constant operand"


def test_refuses_wrong_perm() -> None:
    m = attention_block()
    kt = next(
        n for n in m.graph.node if n.op_type == "Transpose" and list(n.attribute[0].ints) == [0, 2, 3, 1]
    )
    kt.attribute[0].ints[:] = [0, 3, 2, 1]
    assert why_not(m) == "K heads are transposed with [0, 3, 2, 1], not [0, 2, 3, 1]"


def test_refuses_unreadable_head_shape() -> None:
    m = attention_block()
    reshape = next(n for n in m.graph.node if n.op_type == "Reshape")
    reshape.input[1] = "head_shape"
    m.graph.input.append(helper.make_tensor_value_info("head_shape", TensorProto.INT64, [4]))
    assert why_not(m) == "Q head Reshape target is not a known 4-element shape"


def test_refuses_reshape_to_other_batch_and_sequence() -> None:
    """[S, B, -1, d] has the right element count but is not the head split."""
    m = attention_block(dynamic=False, batch=2, seq=5)
    reshape = next(n for n in m.graph.node if n.op_type == "Reshape")
    t = next(t for t in m.graph.initializer if t.name == reshape.input[1])
    t.CopyFrom(numpy_helper.from_array(np.array([5, 2, -1, H // N], dtype=np.int64), t.name))
    assert why_not(m).startswith("Q head Reshape target [5, 2, -1, 8] is not [2, 5, 2, 8]")


def test_refuses_intermediate_read_elsewhere() -> None:
    m = attention_block()
    sm = next(n for n in m.graph.node if n.op_type == "Softmax")
    m.graph.output.append(helper.make_tensor_value_info(sm.output[0], TensorProto.FLOAT, ["b", N, "s", "s"]))
    assert "(inside the pattern) is a graph output" in why_not(m)


def test_refuses_double() -> None:
    assert why_not(attention_block(dtype=np.float64)) == "input dtype is DOUBLE, not float32/float16"


def test_refuses_unknown_mask_form() -> None:
    m = attention_block()
    sm = next(n for n in m.graph.node if n.op_type == "Softmax")
    sm.input[0], scores = "masked", sm.input[0]
    m.graph.node.append(helper.make_node("Add", [scores, "bias_mask"], ["masked"]))
    m.graph.input.append(helper.make_tensor_value_info("bias_mask", TensorProto.FLOAT, [B, 1, 1, S]))
    assert why_not(m) == "unrecognized attention mask form (the added mask comes from a graph input)"


def test_refuses_small_fill_value() -> None:
    m = attention_block(mask="additive")
    mul = next(n for n in m.graph.node if n.op_type == "Mul" and n.input[0].startswith("sub"))
    fill = next(t for t in m.graph.initializer if t.name == mul.input[1])
    fill.CopyFrom(numpy_helper.from_array(np.array(-10.0, dtype=np.float32), fill.name))
    assert why_not(m) == "mask fill value -10 is not a finite value <= -10000"


def test_refuses_mask_on_query_axis() -> None:
    """A padding mask that lands on the query axis (mask[:, None, :, None]) is not a key mask."""
    m = attention_block(mask="additive")
    u2 = next(n for n in m.graph.node if n.op_type == "Unsqueeze" and n.input[0].startswith("unsqueeze"))
    axis = next(t for t in m.graph.initializer if t.name == u2.input[1])
    axis.CopyFrom(numpy_helper.from_array(np.array([3], dtype=np.int64), axis.name))
    assert why_not(m) == "mask axes land on [0, 2] of the scores, not [0, 3]"


def test_shape_evaluation() -> None:
    """The symbolic evaluation behind the Reshape checks."""
    m = attention_block(packing="conv1d")
    model = modelio.load(m).model
    rc = RewriteContext(model, model.graph)
    ints = ShapeInts(rc)
    x = next(v for v in model.graph.inputs if v.name == "x")
    bd, sd = Dim.sym("B"), Dim.sym("S")
    ints.know(x, (bd, sd, Dim(H)))
    flat = next(n for n in model.graph.nodes if n.op_type == "Reshape" and n.input(0) is x)
    assert ints.value(flat.input(1)) == ((Dim(-1), Dim(H)), False)
    assert str(bd + sd.scaled(2) - Dim(3)) == "B+2*S+-3"


def test_stages_one_at_a_time() -> None:
    """Each stage of the match runs on its own and returns its typed part, or its reason."""
    m = attention_block(packing="split", mask="vmap", causal="vmap", scaling="qk")
    model = modelio.load(m).model
    rc = RewriteContext(model, model.graph)
    anchor = next(n for n in model.graph if n.name == "out_reshape")
    context = match_context(anchor, rc)
    assert (context.transpose.op_type, context.matmul.op_type, context.softmax.op_type) == (
        "Transpose",
        "MatMul",
        "Softmax",
    )
    scores = match_scores(context.softmax.input(0), rc)
    assert scores.qk.op_type == "MatMul" and scores.mask.causal and scores.mask.fill == MIN32
    assert scores.mask.source is not None and scores.mask.source.producer is not None
    assert scores.mask.source.producer.op_type == "Cast"  # Cast(attention_mask, bool)
    q = match_head(scores.qk.input(0), Q_PERM, rc, "Q", scalable=True)
    k = match_head(scores.qk.input(1), K_PERM, rc, "K", scalable=True)
    v = match_head(context.matmul.input(1), V_PERM, rc, "V", scalable=False)
    assert q.proj.x is k.proj.x is v.proj.x and q.proj.weight.shape == (H, H)
    assert q.proj.nodes[0].op_type == "Split"
    assert q.scale * k.scale * scores.scale == pytest.approx(1 / np.sqrt(H // N))
    assert check_shapes(anchor, context, scores, [q, k, v], rc) == (N, H // N)
    with pytest.raises(MatchFailed, match=r"K heads are transposed with \[0, 2, 1, 3\], not \[0, 2, 3, 1\]"):
        match_head(scores.qk.input(0), K_PERM, rc, "K", scalable=True)
    with pytest.raises(MatchFailed, match="Softmax input comes from Softmax"):
        match_scores(context.softmax.output(0), rc)


# -- the real exports ----------------------------------------------------------------------------


EXPORTS = {"bert_base": 12, "vit_base": 12, "gpt2": 12, "minilm_l6": 6}


def _ort(model: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_real_exports(name: str) -> None:
    import onnxforge
    from onnxforge.models.exports import feeds_for_export, list_exports
    from onnxforge.passes import DeadCodeElimination

    path = export_model(name, list_exports())
    result = onnxforge.compile(path, "lossless")
    before = to_proto(result.ir).SerializeToString()
    ctx = PassContext()
    stats = ctx.run(rule_pass(AttentionFusion()), result.ir).stats
    ctx.run(DeadCodeElimination(), result.ir)
    after = to_proto(result.ir)
    assert stats.get("ort-attention") == EXPORTS[name]
    assert len(attention_nodes(after)) == EXPORTS[name]

    text = name != "vit_base"
    f = feeds_for_export(name, batch=2 if text else 1)
    if text:
        f["attention_mask"][1, -20:] = 0  # the last 20 tokens of the second sequence are padding
    ref = _ort(before).run(None, f)
    got = _ort(after.SerializeToString()).run(None, f)
    for r, g in zip(ref, got):
        scale = float(np.abs(r).max())
        tol = 1e-4 * scale
        if text and r.ndim == 3:
            keep = f["attention_mask"].astype(bool)
            np.testing.assert_allclose(g[keep], r[keep], rtol=1e-4, atol=tol)
            # padding positions are queries like any other (only keys are masked): equal too
            np.testing.assert_allclose(g[~keep], r[~keep], rtol=1e-4, atol=tol)
        else:
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=tol)
