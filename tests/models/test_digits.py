"""The numpy-trained digits CNN: a valid model with trained weights and high test accuracy."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner


@pytest.fixture(scope="module")
def trained() -> tuple[onnx.ModelProto, tuple[np.ndarray, np.ndarray]]:
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'models' extra)")
    from onnxforge.models import train_digits_cnn

    return train_digits_cnn(seed=0)


def test_digits_cnn_is_accurate_in_onnxruntime(trained) -> None:
    model, (x_test, y_test) = trained
    onnx.checker.check_model(model, full_check=True)
    modelio.load(model)
    assert x_test.dtype == np.float32 and x_test.shape[1:] == (1, 8, 8)
    assert y_test.dtype == np.int64 and len(y_test) == len(x_test) > 300
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0
    logits = OrtRunner().run(model, {"input": x_test})["logits"]
    assert logits.shape == (len(x_test), 10)
    accuracy = float((logits.argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.985, accuracy  # 99.16% for seed 0


def test_digits_cnn_structure(trained) -> None:
    model, _ = trained
    ops = [n.op_type for n in model.graph.node]
    assert ops == [
        "Conv", "BatchNormalization", "Relu", "Conv", "BatchNormalization", "Relu", "MaxPool", "Flatten", "Gemm",
    ]  # fmt: skip
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"
    # Trained BatchNorm statistics, not the initial zeros/ones.
    var = next(t for t in model.graph.initializer if t.name == "bn2.running_var")
    assert not np.allclose(onnx.numpy_helper.to_array(var), 1.0)


def test_digits_cnn_is_deterministic(trained) -> None:
    from onnxforge.models import train_digits_cnn

    model, (x_test, _) = trained
    again, (x_again, _) = train_digits_cnn(seed=0)
    np.testing.assert_array_equal(x_test, x_again)
    a = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    b = {t.name: onnx.numpy_helper.to_array(t) for t in again.graph.initializer}
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_missing_sklearn_gives_a_clear_message(monkeypatch) -> None:
    from onnxforge.models import train_digits_cnn

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        train_digits_cnn()
