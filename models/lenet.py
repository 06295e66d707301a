"""LeNet-300-100 and LeNet-5 style networks trained on scikit-learn's 8x8 digits, in pure numpy.

The two networks Deep Compression (Han et al., ICLR 2016) compressed first, scaled to the 8x8
digits bundled with scikit-learn (no download, no binary in the repository):

* :func:`train_lenet_300_100`: an MLP ``64 → 300 → ReLU → 100 → ReLU → 10`` (50,200 weights;
  the paper's has a 784-pixel input).
* :func:`train_lenet5`: Caffe's LeNet-5 variant the paper used, ``Conv 5x5 (20) → ReLU →
  MaxPool 2x2 → Conv 5x5 (50) → ReLU → MaxPool 2x2 → Flatten → Gemm (500) → ReLU → Gemm (10)``,
  with padding 2 so that the 8x8 input keeps its size through the convolutions (130,500
  weights; the paper's 430,500 come from the 28x28 input).

Training: AdamW (decoupled weight decay 1e-4), cosine learning-rate decay, mini-batches of 32,
He initialization, seeded; the data split is the one of :func:`onnxforge.models.digits.train_digits_cnn`
(the same seed holds out the same 20%). Each trains in a few seconds on one core. Both return
``(model, (x_test, y_test))`` like the digits CNN: input ``input`` float32 ``[batch, 1, 8, 8]``
(pixels in [0, 1]; the MLP flattens it itself), output ``logits`` ``[batch, 10]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from onnxforge.models.digits import load_digits_split
from onnxforge.models.model_proto import make_model

log = logging.getLogger(__name__)

WEIGHT_DECAY = 1e-4

Params = dict[str, np.ndarray]


# --- layers -----------------------------------------------------------------------------------


def _im2col(x: np.ndarray, k: int) -> np.ndarray:
    """[N, C, H, W] → [N*H*W, C*k*k] patches of a k x k window, 'same' padding, stride 1."""
    n, c, h, w = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))  # [N, C, H, W, k, k]
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * h * w, c * k * k)


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    cols = _im2col(x, k)
    out = cols @ w.reshape(o, -1).T + b
    return out.reshape(n, h, wd, o).transpose(0, 3, 1, 2), (x.shape, cols)


def _conv_back(dout: np.ndarray, w: np.ndarray, cache: Any, need_dx: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    (n, c, h, wd), cols = cache
    o, _, k, _ = w.shape
    d2 = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (d2.T @ cols).reshape(w.shape)
    db = d2.sum(axis=0)
    if not need_dx:
        return None, dw, db
    p = k // 2
    dcols = (d2 @ w.reshape(o, -1)).reshape(n, h, wd, c, k, k)
    dxp = np.zeros((n, c, h + 2 * p, wd + 2 * p), dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i : i + h, j : j + wd] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, p : p + h, p : p + wd], dw, db


def _pool(x: np.ndarray) -> tuple[np.ndarray, Any]:
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)
    return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0], (x.shape, arg)


def _pool_back(dout: np.ndarray, cache: Any) -> np.ndarray:
    (n, c, h, w), arg = cache
    dwin = np.zeros((n, c, h // 2, w // 2, 4), dtype=dout.dtype)
    np.put_along_axis(dwin, arg[..., None], dout[..., None], axis=-1)
    return dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


# --- the two networks: forward returns logits and what backward needs --------------------------


class _Mlp:
    """LeNet-300-100 (weights stored [out, in], Gemm transB=1 as PyTorch exports Linear)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.p: Params = {
            "fc1.weight": _he(rng, (300, 64), 64),
            "fc1.bias": np.zeros(300, np.float32),
            "fc2.weight": _he(rng, (100, 300), 300),
            "fc2.bias": np.zeros(100, np.float32),
            "fc3.weight": _he(rng, (10, 100), 100) * np.float32(0.5),
            "fc3.bias": np.zeros(10, np.float32),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        p = self.p
        a0 = x.reshape(len(x), -1)
        h1 = np.maximum(a0 @ p["fc1.weight"].T + p["fc1.bias"], 0)
        h2 = np.maximum(h1 @ p["fc2.weight"].T + p["fc2.bias"], 0)
        return h2 @ p["fc3.weight"].T + p["fc3.bias"], (a0, h1, h2)

    def backward(self, d: np.ndarray, cache: Any) -> Params:
        p = self.p
        a0, h1, h2 = cache
        g = {"fc3.weight": d.T @ h2, "fc3.bias": d.sum(0)}
        d2 = (d @ p["fc3.weight"]) * (h2 > 0)
        g["fc2.weight"], g["fc2.bias"] = d2.T @ h1, d2.sum(0)
        d1 = (d2 @ p["fc2.weight"]) * (h1 > 0)
        g["fc1.weight"], g["fc1.bias"] = d1.T @ a0, d1.sum(0)
        return g

    def export(self) -> onnx.ModelProto:
        nodes = [
            helper.make_node("Flatten", ["input"], ["flat"], name="Flatten", axis=1),
            helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], name="Gemm_1", transB=1),
            helper.make_node("Relu", ["fc1"], ["relu1"], name="Relu_1"),
            helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["fc2"], name="Gemm_2", transB=1),
            helper.make_node("Relu", ["fc2"], ["relu2"], name="Relu_2"),
            helper.make_node("Gemm", ["relu2", "fc3.weight", "fc3.bias"], ["logits"], name="Gemm_3", transB=1),
        ]
        return _model(nodes, "lenet_300_100", self.p)


class _LeNet5:
    """Caffe's LeNet-5 variant (20 and 50 channels, 500 hidden units), 'same' 5x5 convolutions."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.p: Params = {
            "conv1.weight": _he(rng, (20, 1, 5, 5), 25),
            "conv1.bias": np.zeros(20, np.float32),
            "conv2.weight": _he(rng, (50, 20, 5, 5), 500),
            "conv2.bias": np.zeros(50, np.float32),
            "fc1.weight": _he(rng, (500, 200), 200),
            "fc1.bias": np.zeros(500, np.float32),
            "fc2.weight": _he(rng, (10, 500), 500) * np.float32(0.5),
            "fc2.bias": np.zeros(10, np.float32),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        p = self.p
        c1, cc1 = _conv(x, p["conv1.weight"], p["conv1.bias"])
        r1 = np.maximum(c1, 0)
        p1, pc1 = _pool(r1)
        c2, cc2 = _conv(p1, p["conv2.weight"], p["conv2.bias"])
        r2 = np.maximum(c2, 0)
        p2, pc2 = _pool(r2)
        flat = p2.reshape(len(x), -1)
        h = np.maximum(flat @ p["fc1.weight"].T + p["fc1.bias"], 0)
        return h @ p["fc2.weight"].T + p["fc2.bias"], (cc1, c1, pc1, cc2, c2, pc2, flat, h)

    def backward(self, d: np.ndarray, cache: Any) -> Params:
        p = self.p
        cc1, c1, pc1, cc2, c2, pc2, flat, h = cache
        g = {"fc2.weight": d.T @ h, "fc2.bias": d.sum(0)}
        dh = (d @ p["fc2.weight"]) * (h > 0)
        g["fc1.weight"], g["fc1.bias"] = dh.T @ flat, dh.sum(0)
        dflat = dh @ p["fc1.weight"]
        dr2 = _pool_back(dflat.reshape(pc2[0][0], 50, 2, 2), pc2) * (c2 > 0)
        dp1, g["conv2.weight"], g["conv2.bias"] = _conv_back(dr2, p["conv2.weight"], cc2, need_dx=True)
        assert dp1 is not None
        dr1 = _pool_back(dp1, pc1) * (c1 > 0)
        _, g["conv1.weight"], g["conv1.bias"] = _conv_back(dr1, p["conv1.weight"], cc1, need_dx=False)
        return g

    def export(self) -> onnx.ModelProto:
        conv: dict[str, Any] = {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}
        pool: dict[str, Any] = {"kernel_shape": [2, 2], "strides": [2, 2]}
        nodes = [
            helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], name="Conv_1", **conv),
            helper.make_node("Relu", ["conv1"], ["relu1"], name="Relu_1"),
            helper.make_node("MaxPool", ["relu1"], ["pool1"], name="MaxPool_1", **pool),
            helper.make_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"], name="Conv_2", **conv),
            helper.make_node("Relu", ["conv2"], ["relu2"], name="Relu_2"),
            helper.make_node("MaxPool", ["relu2"], ["pool2"], name="MaxPool_2", **pool),
            helper.make_node("Flatten", ["pool2"], ["flat"], name="Flatten", axis=1),
            helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], name="Gemm_1", transB=1),
            helper.make_node("Relu", ["fc1"], ["relu3"], name="Relu_3"),
            helper.make_node("Gemm", ["relu3", "fc2.weight", "fc2.bias"], ["logits"], name="Gemm_2", transB=1),
        ]
        return _model(nodes, "lenet5", self.p)


def _model(nodes: list[onnx.NodeProto], name: str, params: Params) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()]
    return make_model(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )


# --- training ---------------------------------------------------------------------------------


def _train(
    make: Callable[[np.random.Generator], Any],
    label: str,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    test_fraction: float,
) -> tuple[onnx.ModelProto, tuple[np.ndarray, np.ndarray]]:
    (x_train, y_train), (x_test, y_test) = load_digits_split(seed, test_fraction)
    rng = np.random.default_rng(seed + 1)
    net = make(rng)
    m = {k: np.zeros_like(v) for k, v in net.p.items()}
    v = {k: np.zeros_like(v) for k, v in net.p.items()}
    beta1, beta2, step = 0.9, 0.999, 0
    start = time.perf_counter()
    for epoch in range(epochs):
        perm = rng.permutation(len(x_train))
        epoch_lr = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            logits, cache = net.forward(x_train[idx])
            z = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(z)
            probs /= probs.sum(axis=1, keepdims=True)
            probs[np.arange(len(idx)), y_train[idx]] -= 1
            grads = net.backward((probs / len(idx)).astype(np.float32), cache)
            step += 1
            for k, gk in grads.items():
                m[k] = beta1 * m[k] + (1 - beta1) * gk
                v[k] = beta2 * v[k] + (1 - beta2) * gk * gk
                update = (m[k] / (1 - beta1**step)) / (np.sqrt(v[k] / (1 - beta2**step)) + 1e-8)
                decay = WEIGHT_DECAY * net.p[k] if k.endswith("weight") else 0.0
                net.p[k] = (net.p[k] - epoch_lr * (update + decay)).astype(np.float32)
    logits, _ = net.forward(x_test)
    acc = float((logits.argmax(axis=1) == y_test).mean())
    log.info("%s: %d epochs in %.1f s, test accuracy %.4f", label, epochs, time.perf_counter() - start, acc)
    return net.export(), (x_test, y_test)


def train_lenet_300_100(
    seed: int = 0, *, epochs: int = 30, batch_size: int = 32, lr: float = 2e-3, test_fraction: float = 0.2
) -> tuple[onnx.ModelProto, tuple[np.ndarray, np.ndarray]]:
    """Train the LeNet-300-100 MLP and export it (see the module docstring). Deterministic for
    a given seed; raises ImportError when scikit-learn is missing."""
    return _train(_Mlp, "LeNet-300-100", seed, epochs, batch_size, lr, test_fraction)


def train_lenet5(
    seed: int = 0, *, epochs: int = 15, batch_size: int = 32, lr: float = 2e-3, test_fraction: float = 0.2
) -> tuple[onnx.ModelProto, tuple[np.ndarray, np.ndarray]]:
    """Train the LeNet-5 style CNN and export it (see the module docstring). Deterministic for
    a given seed; raises ImportError when scikit-learn is missing."""
    return _train(_LeNet5, "LeNet-5", seed, epochs, batch_size, lr, test_fraction)
