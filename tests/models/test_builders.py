"""The seeded model builders: valid, runnable, the intended structure, and deterministic."""

from __future__ import annotations

import collections
import math
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner, random_feeds
from onnxforge.models import big_external_model, residual_mlp_chain, small_cnn, transformer_block
from onnxforge.models.synthetic import BLOCK_NODES, EXTERNAL_ALIGN


def _ops(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


def _check_and_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    modelio.load(model)  # onnxforge's validated load accepts it too
    out = OrtRunner().run(model, feeds)
    for name, arr in out.items():
        assert np.isfinite(arr).all(), name
    return out


# --- small_cnn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_small_cnn_runs(batch: int) -> None:
    model, feeds = small_cnn(seed=0, batch=batch)
    assert feeds["input"].shape == (batch, 3, 32, 32)
    out = _check_and_run(model, feeds)
    probs = out["probs"]
    assert probs.shape == (batch, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert probs.std() > 1e-3  # not a degenerate constant output


def test_small_cnn_structure_has_the_exporter_waste() -> None:
    model, _ = small_cnn()
    ops = _ops(model)
    assert len(model.graph.node) == 24
    for op in ["Conv", "BatchNormalization", "Relu"]:
        assert ops[op] == 2
    for op in [
        "Identity",
        "Dropout",
        "Shape",
        "Concat",
        "Reshape",
        "MaxPool",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
        "Softmax",
    ]:
        assert ops[op] == 1, op
    assert ops["Gather"] == 2 and ops["Unsqueeze"] == 2 and ops["Constant"] == 2
    (cast,) = [n for n in model.graph.node if n.op_type == "Cast"]
    assert onnx.helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.FLOAT  # float → float
    # Exactly one pair of initializers with the same bytes under two names.
    by_bytes = collections.defaultdict(list)
    for t in model.graph.initializer:
        by_bytes[(t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())].append(t.name)
    dups = [names for names in by_bytes.values() if len(names) > 1]
    assert dups == [["bn1.running_mean", "bn2.running_mean"]]


def test_small_cnn_is_seeded() -> None:
    a, fa = small_cnn(seed=3)
    b, fb = small_cnn(seed=3)
    c, _ = small_cnn(seed=4)
    assert a.SerializeToString() == b.SerializeToString()
    np.testing.assert_array_equal(fa["input"], fb["input"])
    assert a.SerializeToString() != c.SerializeToString()


def test_small_cnn_rejects_bad_batch() -> None:
    with pytest.raises(ValueError):
        small_cnn(batch=0)


# --- transformer_block -------------------------------------------------------------------------


def test_transformer_block_runs_and_has_the_torch_spelling() -> None:
    model, feeds = transformer_block(seed=0)
    out = _check_and_run(model, feeds)
    assert out["output"].shape == (1, 16, 64)
    ops = _ops(model)
    assert 80 <= len(model.graph.node) <= 95
    assert ops["ReduceMean"] == 4 and ops["Sqrt"] == 2 and ops["Pow"] == 2  # two decomposed LayerNorms
    assert ops["Erf"] == 1 and ops["Softmax"] == 1 and ops["MatMul"] == 8
    assert ops["Shape"] == 4 and ops["Reshape"] == 4 and ops["Transpose"] == 5
    # LayerNorm output: per-position mean ≈ mean(beta), i.e. normalized.
    beta = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "ffn_norm.bias"))
    np.testing.assert_allclose(out["output"].mean(axis=-1), beta.mean(), atol=0.05)


def _reference(model: onnx.ModelProto, x: np.ndarray, mask: np.ndarray, heads: int) -> np.ndarray:
    """The same encoder layer written directly in numpy (float64)."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = x.astype(np.float64)
    b, s, h = x.shape
    d = h // heads

    def lin(t: np.ndarray, name: str) -> np.ndarray:
        return t @ w[f"{name}.weight"] + w[f"{name}.bias"]

    def ln(t: np.ndarray, name: str) -> np.ndarray:
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + 1e-12) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(b, s, heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(lin(x, n)) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + (1.0 - mask[:, None, None, :]) * -10000.0
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(b, s, h)
    h1 = ln(lin(ctx, "attn_out") + x, "attn_norm")
    f = lin(h1, "ffn_in")
    from math import erf

    g = f * 0.5 * (1.0 + np.vectorize(erf)(f / math.sqrt(2.0)))
    return ln(lin(g, "ffn_out") + h1, "ffn_norm")


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_transformer_block_matches_a_numpy_reference(dynamic_batch: bool) -> None:
    model, feeds = transformer_block(seed=1, batch=2, seq=8, hidden=32, heads=4, dynamic_batch=dynamic_batch)
    out = _check_and_run(model, feeds)["output"]
    ref = _reference(model, feeds["hidden_states"], feeds["attention_mask"], heads=4)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_transformer_block_dynamic_batch_is_symbolic_and_accepts_any_batch() -> None:
    model, _ = transformer_block(dynamic_batch=True)
    for vi in [*model.graph.input, *model.graph.output]:
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"
    _, feeds = transformer_block(dynamic_batch=True, batch=3)
    out = _check_and_run(model, feeds)
    assert out["output"].shape == (3, 16, 64)
    static, _ = transformer_block(dynamic_batch=False)
    assert static.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_transformer_block_masked_positions_do_not_leak() -> None:
    model, feeds = transformer_block(seed=2, batch=1, seq=8)
    feeds["attention_mask"][:] = 1
    feeds["attention_mask"][0, 6:] = 0
    base = OrtRunner().run(model, feeds)["output"]
    changed = dict(feeds)
    changed["hidden_states"] = feeds["hidden_states"].copy()
    changed["hidden_states"][0, 6:] += 5.0
    after = OrtRunner().run(model, changed)["output"]
    np.testing.assert_allclose(after[0, :6], base[0, :6], atol=1e-5)
    assert not np.allclose(after[0, 6:], base[0, 6:])


def test_transformer_block_rejects_bad_heads() -> None:
    with pytest.raises(ValueError):
        transformer_block(hidden=30, heads=4)


# --- residual_mlp_chain ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 50, 701])
def test_residual_mlp_chain_node_count_and_run(n: int) -> None:
    model = residual_mlp_chain(n, width=16, seed=0)
    assert len(model.graph.node) == max(n, BLOCK_NODES)
    out = _check_and_run(model, random_feeds(model))
    assert out["y"].shape == (1, 16)


def test_residual_mlp_chain_block_structure_and_no_duplicates() -> None:
    model = residual_mlp_chain(70, width=8)
    ops = _ops(model)
    assert ops == {"Identity": 10, "MatMul": 10, "Add": 20, "Relu": 10, "Shape": 10, "Reshape": 10}
    contents = {numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}
    assert len(contents) == len(model.graph.initializer) == 20
    assert all(numpy_helper.to_array(t).shape in {(8, 8), (8,)} for t in model.graph.initializer)


def test_residual_mlp_chain_100k_nodes_is_fast_and_small() -> None:
    start = time.perf_counter()
    model = residual_mlp_chain(100_000)
    elapsed = time.perf_counter() - start
    assert abs(len(model.graph.node) - 100_000) <= 10_000
    assert elapsed < 20, f"building took {elapsed:.1f} s"
    assert model.ByteSize() < 64 << 20


def test_residual_mlp_chain_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        residual_mlp_chain(0)
    with pytest.raises(ValueError):
        residual_mlp_chain(10, width=0)


# --- big_external_model ------------------------------------------------------------------------


def test_big_external_model_small(tmp_path) -> None:
    total = 3 * 10**6
    path = big_external_model(tmp_path / "big.onnx", total, width=256, max_tensor_bytes=1 << 20, seed=1)
    data = tmp_path / "big.onnx.data"
    assert path == tmp_path / "big.onnx" and data.is_file()
    assert path.stat().st_size < 4096  # all weight bytes are external
    onnx.checker.check_model(str(path), full_check=True)

    proto = onnx.load(str(path), load_external_data=False)
    lengths = []
    for t in proto.graph.initializer:
        assert t.data_location == onnx.TensorProto.EXTERNAL
        info = {e.key: e.value for e in t.external_data}
        assert info["location"] == "big.onnx.data"
        assert int(info["offset"]) % EXTERNAL_ALIGN == 0
        lengths.append(int(info["length"]))
    assert len(lengths) == 3  # 3 MB in tensors of at most 1 MiB
    assert max(lengths) <= 1 << 20
    assert total <= sum(lengths) < total + 4 * 256

    loaded = modelio.load(path)
    assert loaded.uses_external_data
    weights = [loaded.model.tensor_store.to_array(t) for t in proto.graph.initializer]
    w = np.concatenate(weights, axis=1)
    assert w.shape == (256, sum(lengths) // (4 * 256))
    assert np.abs(w).max() <= 1 / 16 + 1e-7 and w.std() > 0.01

    feeds = random_feeds(proto)
    out = OrtRunner().run(path, feeds)["y"]
    np.testing.assert_allclose(out, feeds["x"] @ w, rtol=1e-4, atol=1e-4)

    again = big_external_model(tmp_path / "again.onnx", total, width=256, max_tensor_bytes=1 << 20, seed=1)
    assert (tmp_path / "again.onnx.data").read_bytes() == data.read_bytes()
    assert again.stat().st_size > 0


def test_big_external_model_single_tensor(tmp_path) -> None:
    path = big_external_model(tmp_path / "one.onnx", 100_000, width=64)
    proto = onnx.load(str(path), load_external_data=False)
    assert [n.op_type for n in proto.graph.node] == ["MatMul"]
    out = OrtRunner().run(path, random_feeds(proto))["y"]
    assert out.shape == (1, -(-100_000 // 256))
