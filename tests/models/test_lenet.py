"""The numpy-trained LeNet-300-100 and LeNet-5 style models on scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'models' extra)")

from onnxforge.models.digits import load_digits_split  # noqa: E402
from onnxforge.models.lenet import train_lenet5, train_lenet_300_100  # noqa: E402


@pytest.mark.parametrize(
    "train, epochs, ops, weights",
    [
        (train_lenet_300_100, 30, ["Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"], 64 * 300 + 300 * 100 + 100 * 10),
        (train_lenet5, 5, ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"],
         20 * 25 + 50 * 20 * 25 + 200 * 500 + 500 * 10),
    ],
    ids=["lenet-300-100", "lenet-5"],
)  # fmt: skip
def test_trained_lenets_are_accurate_in_onnxruntime(train, epochs, ops, weights):
    model, (x_test, y_test) = train(epochs=epochs)  # LeNet-5: 5 of its 15 epochs keep the test fast
    onnx.checker.check_model(model, full_check=True)
    modelio.load(model)
    assert [n.op_type for n in model.graph.node] == ops
    assert sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims) > 1) == weights
    logits = OrtRunner().run(model, {"input": x_test})["logits"]
    assert float((logits.argmax(axis=1) == y_test).mean()) >= 0.97


def test_split_and_training_are_deterministic():
    (_, _), (x_test, y_test) = load_digits_split(0)
    a, (xa, ya) = train_lenet_300_100(seed=0, epochs=3)
    b, _ = train_lenet_300_100(seed=0, epochs=3)
    np.testing.assert_array_equal(xa, x_test)
    np.testing.assert_array_equal(ya, y_test)
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(ta), onnx.numpy_helper.to_array(tb))
