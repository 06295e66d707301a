"""Per-machine calibration of the CPU roofline from micro-benchmarks (about twenty seconds, cached with
the ``cpu`` profile by :mod:`onnxforge.cost.roofline`).

Nothing here is fitted to a real model: every parameter is the time of a synthetic graph built
below and run by onnxruntime on one thread, as the cost model's users run it.

* **Matrix products by shape class**: MatMul against a constant weight on a grid of
  ``(M, K, N)``; 2-D convolutions (which onnxruntime's CPU optimizer lays out as NCHWc, timed
  as chains that stay in that layout), 3x3 and 5x5 depthwise convolutions (their work counted
  in the taps inside the input, as their direct kernels run), 1-D convolutions on grids of
  spatial size and channels (their output positions counted in the GEMM's column panels,
  whose width is measured: :func:`_conv_panel`) and 1-D depthwise convolutions (one small GEMM
  per channel in onnxruntime, several times slower per MAC than 2-D ones). A node's
  rate is interpolated in log space between the nearest measured shapes of its class
  (:func:`interpolate`), so a 1-row product (a matrix-vector product, bound by reading its
  weights) is not credited with the throughput of a large square one.
* **Memory bandwidth by working-set size**: an Add over tensors from a few KiB (L1) to tens of
  MiB (memory), per node bytes moved.
* **Per-node overhead by op class** (:func:`op_class`): the per-node time of chains of tiny ops
  (elementwise, views, copies, reductions and normalizations, products, convolutions, recurrent
  cells, control flow), from the difference of a long and a short chain (which cancels the fixed
  cost of a run, measured as the intercept). onnxruntime's dispatch cost per node dominates
  small models, and it differs by kind: a tiny Conv costs several times a tiny Relu.
* **Elementwise compute**: a cache-resident Sigmoid (transcendental work per element) and a
  cache-resident Mul by a scalar (output elements per second of a simple op); and, one by one,
  13 common ops (:data:`PER_ELEMENT_OPS`: binary with and without broadcasting, GELU variants,
  Softmax, the layer norms, a 4-D Transpose) on a cache-resident activation, whose rates differ
  by 20x.
* **Recurrent cells**: an LSTM as exporters write it, over 1 and 4 steps (a step's rate, and
  what a call costs beyond its steps).
* **Weight streaming** (:func:`_stream_point`): what a product pays per weight byte when its
  weights are not cache-resident, at 1, 16 and 128 input rows over 16 MB of weights, and for a
  matrix-vector product over weight sets of 0.5 to 16 MB (:data:`STREAM_SETS`): where the
  penalty starts depends on the whole cache hierarchy (a 512 KB L2 in front of a 32 MB L3 pays
  little until the L3 runs out; a 2 MB L2 with a small L3 pays at 4 MB), so it is measured, not
  read off the L2 size.
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge.kernels.costs.linalg import conv_tap_fraction, panel_positions
from onnxforge.progress import Stage, current_hook
from onnxforge.runtime.session import create_session

log = logging.getLogger(__name__)

#: Bytes of distinct weights in the weight-streaming measurement: beyond any core's L2.
STREAM_SET_BYTES = 16 << 20

#: Weight-set sizes at which a matrix-vector product's streaming cost is measured.
STREAM_SETS = (1 << 19, 1 << 20, 2 << 20, 4 << 20, 8 << 20, STREAM_SET_BYTES)

#: (M, K, N, FLOP/s) measured points of one product class.
RatePoints = tuple[tuple[float, float, float, float], ...]


@dataclass(frozen=True)
class Calibration:
    """Measured parameters of this machine (all from synthetic graphs, see the module doc)."""

    gemm: RatePoints = ()
    conv: RatePoints = ()
    conv1d: RatePoints = ()
    depthwise: RatePoints = ()
    #: 1-D depthwise convolutions by (positions, kernel, channels): onnxruntime has no direct
    #: kernel for them and runs one small GEMM per channel (a 256-channel, length-8 one took
    #: 31 us here, 120 ns per channel, against 1.2 us at the 2-D depthwise rate).
    depthwise1d: RatePoints = ()
    #: One step of an LSTM cell (batch 1) by hidden size: (batch, input + hidden, 4 x hidden).
    recurrent: RatePoints = ()
    #: int8 products as onnxruntime runs a QDQ MatMul (its integer kernel), (M, K, N = K).
    gemm_int8: RatePoints = ()
    #: int8 2-D convolutions as onnxruntime runs a QDQ Conv (QLinearConv).
    conv_int8: RatePoints = ()
    #: Seconds per graph input or output beyond one of each (feeding, allocating, fetching).
    io_overhead: float = 0.0
    #: (bytes moved by a node, bytes/s) by working-set size, increasing.
    bandwidth: tuple[tuple[float, float], ...] = ()
    #: Seconds of dispatch per node, by :func:`op_class`.
    overhead: dict[str, float] = field(default_factory=dict)
    #: Transcendental elementwise FLOP/s (cache-resident Sigmoid).
    vector: float = 0.0
    #: Output elements per second of a simple elementwise op (a cache-resident Mul by a scalar):
    #: onnxruntime's binary kernels run below the cache bandwidth.
    elementwise: float = 0.0
    #: Seconds per output element of common ops measured one by one on an L2-resident
    #: activation (:data:`PER_ELEMENT_OPS`; ``binary`` / ``binary/bcast``: Add of two full tensors
    #: / of a bias row): a transcendental Erf-GELU or a 4-D Transpose costs several times an Add.
    per_element: dict[str, float] = field(default_factory=dict)
    #: (input rows, seconds per weight byte) a product pays on top of its work when its weights
    #: are not cache-resident: a chain of distinct 256x256 weights (:data:`STREAM_SET_BYTES` in
    #: all) against the same chain sharing one weight. Measured here: ~30 ps per byte for a
    #: matrix-vector product, ~17 at 16 rows, 75-90 at 128-512 rows (the kernel's row blocks
    #: read the weight panels more than once).
    stream: tuple[tuple[float, float], ...] = ()
    #: (bytes of distinct weights, seconds per weight byte) a matrix-vector product pays over
    #: weight sets of :data:`STREAM_SETS` sizes (never decreasing with the set; the last is
    #: ``stream``'s first point): how much of :attr:`stream` a model of that many weight bytes pays.
    stream_sets: tuple[tuple[float, float], ...] = ()
    #: int8 over float32 throughput of a large product (MatMulInteger vs MatMul).
    int8_speedup: float = 1.0
    #: Seconds of one run outside its nodes (inputs, outputs, scheduling).
    run_overhead: float = 0.0
    #: Columns per panel of the GEMM under 1-D convolutions (:func:`_conv_panel`; 1: none):
    #: their output positions count in whole panels (:attr:`conv1d` is indexed the same way).
    conv_panel: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        def pts(key: str) -> RatePoints:
            return tuple(tuple(float(x) for x in p) for p in d.get(key, ()))  # type: ignore[misc]

        return cls(
            gemm=pts("gemm"),
            conv=pts("conv"),
            conv1d=pts("conv1d"),
            depthwise=pts("depthwise"),
            depthwise1d=pts("depthwise1d"),
            recurrent=pts("recurrent"),
            gemm_int8=pts("gemm_int8"),
            conv_int8=pts("conv_int8"),
            io_overhead=float(d.get("io_overhead", 0.0)),
            bandwidth=tuple((float(a), float(b)) for a, b in d.get("bandwidth", ())),
            overhead={str(k): float(v) for k, v in dict(d.get("overhead", {})).items()},
            vector=float(d.get("vector", 0.0)),
            elementwise=float(d.get("elementwise", 0.0)),
            per_element={str(k): float(v) for k, v in dict(d.get("per_element", {})).items()},
            stream=tuple((float(r), float(c)) for r, c in d.get("stream", ())),
            stream_sets=tuple((float(b), float(c)) for b, c in d.get("stream_sets", ())),
            int8_speedup=float(d.get("int8_speedup", 1.0)),
            run_overhead=float(d.get("run_overhead", 0.0)),
            conv_panel=int(d.get("conv_panel", 1)),
            seconds=float(d.get("seconds", 0.0)),
        )

    def bandwidth_at(self, nbytes: float) -> float:
        """Bytes/s for a node moving ``nbytes`` (log-linear between measured sizes)."""
        return _log_interp(self.bandwidth, nbytes) if self.bandwidth else 1e10

    def stream_cost(self, rows: float, working_set: float) -> float:
        """Seconds per weight byte a product of ``rows`` input rows pays to stream weights out of
        a set of ``working_set`` bytes: the cost measured over :data:`STREAM_SET_BYTES`
        (log-linear in rows between measured points, flat beyond them), times the share of it a
        matrix-vector product paid over a set of that size (:attr:`stream_sets`; flat below the
        smallest); slower memory beyond :data:`STREAM_SET_BYTES` scales it up."""
        if not self.stream:
            return 0.0
        cost = _log_interp(self.stream, max(rows, 1.0))
        if working_set > STREAM_SET_BYTES:
            return cost * max(1.0, self.bandwidth_at(STREAM_SET_BYTES) / self.bandwidth_at(working_set))
        full = self.stream_sets[-1][1] if self.stream_sets else 0.0
        if full <= 0:
            return 0.0
        return cost * min(_log_interp(self.stream_sets, max(working_set, 1.0)) / full, 1.0)

    def rate(self, cls: str, m: float, k: float, n: float) -> float:
        """FLOP/s of a product of class ``cls`` (gemm, conv, conv1d, depthwise, depthwise1d, recurrent) at
        (M, K, N)."""
        points = getattr(self, cls, ()) or self.gemm
        if cls == "conv1d" and self.conv_panel > 1:
            # one output position runs the matrix-vector path, more run whole panels: the two
            # paths' rates differ several times over, so each interpolates among its own points
            points = tuple(p for p in points if (p[0] <= 1) == (m <= 1)) or points
        return interpolate(points, m, k, n)


def _log_interp(points: tuple[tuple[float, float], ...], x: float) -> float:
    """``y`` at ``x`` between measured ``(x, y)`` points, increasing in ``x``: linear in
    log-log space, flat beyond the first and last points (a zero ``y`` stays reachable)."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            if y0 <= 0 or y1 <= 0:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            f = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))
    return points[-1][1]


def interpolate(points: RatePoints, m: float, k: float, n: float) -> float:
    """Inverse-distance-weighted rate of the 4 measured shapes nearest to (M, K, N) in
    log2 space (an exact hit returns its own rate); shapes outside the grid take the edge."""
    if not points:
        return 1e10
    q = (math.log2(max(m, 1.0)), math.log2(max(k, 1.0)), math.log2(max(n, 1.0)))
    scored = []
    for pm, pk, pn, r in points:
        d2 = (q[0] - math.log2(pm)) ** 2 + (q[1] - math.log2(pk)) ** 2 + (q[2] - math.log2(pn)) ** 2
        if d2 < 1e-9:
            return r
        scored.append((d2, r))
    scored.sort()
    near = scored[:4]
    w = [1.0 / d2 for d2, _ in near]
    return math.exp(sum(wi * math.log(r) for wi, (_, r) in zip(w, near)) / sum(w))


# -- op classes ---------------------------------------------------------------------------

_VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"})
_COPIES = frozenset(
    {"Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Pad", "Expand", "Tile",
     "ReorderInput", "ReorderOutput", "Shape", "Size", "ConstantOfShape", "Range", "Where", "ScatterND",
     "DepthToSpace", "SpaceToDepth", "Resize", "Upsample", "Cast"}
)
_REDUCES = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare",
     "ReduceLogSumExp", "Softmax", "LogSoftmax", "LayerNormalization", "SkipLayerNormalization",
     "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "GlobalAveragePool",
     "GlobalMaxPool", "MaxPool", "AveragePool", "InstanceNormalization", "ArgMax", "ArgMin", "TopK",
     "CumSum", "EmbedLayerNormalization", "GroupNorm"}
)
_PRODUCTS = frozenset(
    {"MatMul", "Gemm", "FusedGemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat",
     "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm", "MatMulNBits", "Attention", "MultiHeadAttention", "Einsum",
     "QAttention", "GroupQueryAttention"}
)
_CONVS = frozenset({"Conv", "FusedConv", "ConvInteger", "QLinearConv", "ConvTranspose", "NhwcConv"})
_RECURRENT = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})
_CONTROL = frozenset({"If", "Loop", "Scan"})

#: Op classes with a measured per-node overhead.
OP_CLASSES = ("elementwise", "view", "copy", "reduce", "product", "conv", "recurrent", "control")


def op_class(op_type: str) -> str:
    """The overhead class of an op (domain-agnostic: onnxruntime's fused and NCHWc forms share
    their plain op's dispatch)."""
    if op_type in _VIEWS:
        return "view"
    if op_type in _COPIES:
        return "copy"
    if op_type in _REDUCES:
        return "reduce"
    if op_type in _PRODUCTS:
        return "product"
    if op_type in _CONVS:
        return "conv"
    if op_type in _RECURRENT:
        return "recurrent"
    if op_type in _CONTROL:
        return "control"
    return "elementwise"


#: Binary arithmetic, timed as ``binary`` or ``binary/bcast`` by whether an input broadcasts.
BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
#: Ops timed one by one for :attr:`Calibration.per_element` (key, op, domain, extra inputs).
_PER_ELEMENT_ROWS, _PER_ELEMENT_COLS = 128, 1536  # a transformer MLP activation: 786 kB, L2-resident
PER_ELEMENT_OPS: tuple[tuple[str, str, str, tuple[str, ...], dict[str, Any]], ...] = (
    ("binary", "Add", "", ("full",), {}),
    ("binary/bcast", "Add", "", ("row",), {}),
    ("Relu", "Relu", "", (), {}),
    ("Erf", "Erf", "", (), {}),
    ("Tanh", "Tanh", "", (), {}),
    ("Sigmoid", "Sigmoid", "", (), {}),
    ("Gelu", "Gelu", "com.microsoft", (), {}),
    ("BiasGelu", "BiasGelu", "com.microsoft", ("row",), {}),
    ("FastGelu", "FastGelu", "com.microsoft", ("row",), {}),
    ("Softmax", "Softmax", "", (), {"axis": -1}),
    ("LayerNormalization", "LayerNormalization", "", ("row", "row"), {"axis": -1}),
    ("SkipLayerNormalization", "SkipLayerNormalization", "com.microsoft", ("full", "row", "row"), {}),
    ("Transpose", "Transpose", "", (), {"perm": [0, 2, 1, 3]}),
)


_PER_ELEMENT_KEYS = frozenset(k for k, *_ in PER_ELEMENT_OPS)


def per_element_key(op_type: str, domain: str, broadcast: bool) -> str | None:
    """The :attr:`Calibration.per_element` entry timing this node, or None."""
    if op_type in BINARY_OPS and domain in ("", "ai.onnx"):
        return "binary/bcast" if broadcast else "binary"
    return op_type if op_type in _PER_ELEMENT_KEYS else None


# -- micro-benchmarks -------------------------------------------------------------------------

_F32 = TensorProto.FLOAT


def _vi(name: str, shape: Sequence[int], et: int = _F32) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, et, list(shape))


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           inits: Sequence[onnx.TensorProto] = ()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "calibration", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _time(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, level: str = "all", budget_s: float = 0.04,
          min_runs: int = 7, max_runs: int = 201, fixed: float = 0.0) -> float:
    """Median seconds per run (one thread, optimization ``level``), runs while under budget,
    less ``fixed`` (the run's and the node's dispatch, not the work)."""
    sess = create_session(model, optimization=level, threads=1)
    t = _time_session(sess, feeds, budget_s=budget_s, min_runs=min_runs, max_runs=max_runs)
    return max(t - fixed, t / 10)


def _time_session(sess: Any, feeds: dict[str, np.ndarray], *, budget_s: float = 0.015, min_runs: int = 7,
                  max_runs: int = 201) -> float:
    sess.run(None, feeds)
    sess.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _per_node(build: Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]], fixed: float, dispatch: float) -> float:
    """Seconds of the work of one node: ``build(r)`` gives a graph with ``r`` copies of the node
    reading the same input and weights. Small nodes are timed as the difference between 9 copies
    and 1 (which cancels the run's fixed cost) less the node's ``dispatch``; large ones as one
    run less ``fixed``."""
    model, feeds = build(1)
    single = create_session(model, optimization="all", threads=1)
    one = _time_session(single, feeds)
    if one > 2e-3:
        return max(one - fixed, one / 10)
    # Three (1, 9) pairs for small nodes, each count keeping its lowest time: another job on the
    # shared cores only ever slows a turn down (a single pair once read a 2x slower
    # matrix-vector product, and a slow spell across two pairs once halved a grid's rates).
    model9, feeds9 = build(9)
    nine = create_session(model9, optimization="all", threads=1)
    # (the first turn of a 9-copy graph of megabyte operands can run 25% slow, warm-up runs
    # notwithstanding: every node gets a second)
    tries = 3 if one < 2e-4 else 2
    singles, nines = [one], []
    for i in range(tries):
        if i:
            singles.append(_time_session(single, feeds))
        nines.append(_time_session(nine, feeds9, budget_s=0.03))
    per = (min(nines) - min(singles)) / 8
    return max(per - dispatch, per / 10, 1e-9)


def _matmul_rate(m: int, k: int, n: int, int8: bool = False, fixed: float = 0.0, dispatch: float = 0.0) -> float:
    rng = _rng()
    if int8:
        w = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "w")
        op, x_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        x = rng.integers(0, 255, (m, k), dtype=np.uint8)
    else:
        w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
        op, x_type, y_type = "MatMul", _F32, _F32
        x = rng.standard_normal((m, k)).astype(np.float32)

    def build(r: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = [helper.make_node(op, ["x", "w"], [f"y{i}"]) for i in range(r)]
        outs = [_vi(f"y{i}", [m, n], y_type) for i in range(r)]
        return _model(nodes, [_vi("x", [m, k], x_type)], outs, [w]), {"x": x}

    return 2 * m * k * n / _per_node(build, fixed, dispatch)


def _qdq_matmul_rate(m: int, k: int, n: int, *, fixed: float, dispatch: float) -> float:
    """FLOP/s of an int8 product as onnxruntime runs a QDQ MatMul at ORT_ENABLE_ALL (its
    integer kernel, e.g. MatMulIntegerToFloat or QGemm): activations quantized once, shared by
    the copies, int8 weights."""
    rng = _rng()
    inits = [
        numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "xz"),
    ]
    x = rng.standard_normal((m, k)).astype(np.float32)

    def build(r: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        ]
        nodes += [helper.make_node("MatMul", ["xd", "wd"], [f"y{i}"]) for i in range(r)]
        outs = [_vi(f"y{i}", [m, n]) for i in range(r)]
        return _model(nodes, [_vi("x", [m, k])], outs, inits), {"x": x}

    return 2 * m * k * n / _per_node(build, fixed, dispatch)


def _qdq_conv_rate(channels: int, size: int, kernel: int, *, fixed: float, dispatch: float) -> tuple[float, float, float, float]:
    """(M, K, N, FLOP/s) of an int8 2-D convolution as onnxruntime runs a QDQ Conv at
    ORT_ENABLE_ALL (QLinearConv): quantized input and output, int8 weights."""
    rng = _rng()
    inits = [
        numpy_helper.from_array(rng.integers(-127, 127, (channels, channels, kernel, kernel), dtype=np.int8), "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0.02, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
    ]
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    pad = kernel // 2

    def build(r: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        ]
        for i in range(r):
            nodes.append(helper.make_node("Conv", ["xd", "wd"], [f"c{i}"], pads=[pad] * 4))
            nodes.append(helper.make_node("QuantizeLinear", [f"c{i}", "s", "z"], [f"y{i}"]))
        outs = [_vi(f"y{i}", [1, channels, size, size], TensorProto.UINT8) for i in range(r)]
        return _model(nodes, [_vi("x", [1, channels, size, size])], outs, inits), {"x": x}

    m, k, n = float(size * size), float(channels * kernel * kernel), float(channels)
    return m, k, n, 2 * m * k * n / _per_node(build, fixed, dispatch)


def _conv_graph(
    c_in: int, c_out: int, size: int, kernel: int, *, group: int = 1, dims: int = 2,
) -> Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """``build(r)``: a graph of ``r`` copies of one convolution (stride 1, same padding).

    2-D convolutions with as many output as input channels are built as a chain, each reading
    the one before, as a network runs them: onnxruntime keeps the chain in
    its blocked NCHWc layout, where a fan-out of convolutions of one input would convert every
    output back to NCHW (on a 1x1 convolution of 64 channels over 32x32, 20% of the time).
    """
    rng = _rng()
    spatial = [size] * dims
    kshape = [kernel] * dims
    w_shape = (c_out, c_in // group, *kshape)
    # scaled to keep a chain's activations of the same magnitude (no overflow, no denormals)
    scale = 1.0 / math.sqrt(c_in // group * kernel**dims)
    w = numpy_helper.from_array((rng.standard_normal(w_shape) * scale).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(c_out, np.float32), "b")
    pad = kernel // 2
    x = rng.standard_normal((1, c_in, *spatial)).astype(np.float32)
    chained = dims == 2 and c_in == c_out

    def build(r: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        sources = ["x", *(f"y{i}" for i in range(r - 1))] if chained else ["x"] * r
        nodes = [
            helper.make_node("Conv", [src, "w", "b"], [f"y{i}"], group=group, pads=[pad] * (2 * dims), kernel_shape=kshape)
            for i, src in enumerate(sources)
        ]
        outs = [_vi(f"y{i}", [1, c_out, *spatial]) for i in ([r - 1] if chained else range(r))]
        return _model(nodes, [_vi("x", [1, c_in, *spatial])], outs, [w, b]), {"x": x}

    return build


def _conv_seconds(
    c_in: int, c_out: int, size: int, kernel: int, *, group: int = 1, dims: int = 2, fixed: float = 0.0,
    dispatch: float = 0.0,
) -> float:
    """Seconds of the work of one convolution (:func:`_conv_graph`, :func:`_per_node`)."""
    return _per_node(_conv_graph(c_in, c_out, size, kernel, group=group, dims=dims), fixed, dispatch)


def _conv_rate(
    c_in: int, c_out: int, size: int, kernel: int, *, group: int = 1, dims: int = 2, fixed: float = 0.0,
    dispatch: float = 0.0, panel: int = 1,
) -> tuple[float, float, float, float]:
    """(M, K, N, FLOP/s) of one convolution (stride 1, same padding; :func:`_conv_seconds`).

    A depthwise convolution's ``K`` and MACs count the taps inside the input only
    (:func:`onnxforge.kernels.costs.linalg.conv_tap_fraction`), as its direct kernel runs them.
    A 1-D convolution's ``M`` and work count the output positions its GEMM computes, in panels
    of ``panel`` columns (:func:`onnxforge.kernels.costs.linalg.panel_positions`).
    """
    t = _conv_seconds(c_in, c_out, size, kernel, group=group, dims=dims, fixed=fixed, dispatch=dispatch)
    m = float(size**dims)
    k = float(c_in // group * kernel**dims)
    n = float(c_out // group)
    if group > 1 and dims == 1:  # 1-D depthwise: a GEMM per channel, padding taps included
        return m, k, float(c_out), 2 * m * k * c_out / t
    if group > 1:  # depthwise: indexed by (spatial, taps inside the input, channels)
        pad = kernel // 2
        spatial = (size,) * dims
        w_shape = (c_out, c_in // group, *(kernel,) * dims)
        k *= conv_tap_fraction((1, c_in, *spatial), w_shape, (1, c_out, *spatial), {"pads": [pad] * (2 * dims)})
        return m, k, float(c_out), 2 * m * k * c_out / t
    if dims == 1:
        m = panel_positions(m, panel)
    return m, k, n, 2 * m * k * n * group / t


#: Candidate panel widths: :func:`_conv_panel` times a 1-D convolution over each of them, one
#: position more and twice as many (besides 2 positions).
_PANEL_WIDTHS = (4, 8, 16, 32)


def _conv_panel(*, rounds: int = 5) -> int:
    """Columns per panel of the GEMM under 1-D convolutions (:func:`panel_positions`).

    A 64->64, kernel-3 convolution is timed at 2 positions and at each candidate width ``w``
    (:data:`_PANEL_WIDTHS`) and ``w + 1``, as nine copies against one, ``rounds`` times in turn;
    each length keeps its lowest time (another job on the shared cores only ever slows a
    turn down). A width qualifies when the times form its staircase: one more position costs
    over 25% more, the time at the width is within 30% of the time at 2 positions, and at
    twice the width within 30% of the time one past it. The panel is the qualifying width with
    the largest step; 1 when none qualifies (the time grows with the positions: no panels)."""
    lengths = sorted({2, *_PANEL_WIDTHS, *(w + 1 for w in _PANEL_WIDTHS)})
    sessions = {}
    for length in lengths:
        build = _conv_graph(64, 64, length, 3, dims=1)
        (one, feeds), (nine, _) = build(1), build(9)
        sessions[length] = (create_session(one, optimization="all", threads=1),
                            create_session(nine, optimization="all", threads=1), feeds)  # fmt: skip
    singles: dict[int, list[float]] = {n: [] for n in lengths}
    nines: dict[int, list[float]] = {n: [] for n in lengths}
    for _ in range(rounds):
        for length, (one_s, nine_s, feeds) in sessions.items():
            singles[length].append(_time_session(one_s, feeds))
            nines[length].append(_time_session(nine_s, feeds, budget_s=0.03))
    t = {n: max((min(nines[n]) - min(singles[n])) / 8, 1e-9) for n in lengths}

    def staircase(w: int) -> bool:  # flat up to w, a step after it, flat again up to 2w
        return t[w + 1] > 1.25 * t[w] and t[w] < 1.3 * t[2] and (2 * w not in t or t[2 * w] < 1.3 * t[w + 1])

    steps = [w for w in _PANEL_WIDTHS if staircase(w)]
    return max(steps, key=lambda w: t[w + 1] / t[w]) if steps else 1


def _chain(make: Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]], short: int, long: int,
           level: str = "disable") -> tuple[float, float]:
    """(seconds per node, seconds per run outside the chain) from two chain lengths."""
    a = _time(*make(short), level=level, budget_s=0.05, min_runs=21)
    b = _time(*make(long), level=level, budget_s=0.05, min_runs=21)
    per = max((b - a) / (long - short), 1e-9)
    return per, max(a - short * per, 0.0)


def _unary_chain(op: str, shape: Sequence[int], **attrs: Any) -> Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    def make(n: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], **attrs) for i in range(n)]
        x = _rng().standard_normal(shape).astype(np.float32) * 1e-3
        return _model(nodes, [_vi("t0", shape)], [_vi(f"t{n}", shape)]), {"t0": x}

    return make


def _with_init_chain(op: str, shape: Sequence[int], weight: np.ndarray, out_shape: Sequence[int] | None = None,
                     **attrs: Any) -> Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """A chain of ``op(t_i, w) -> t_{i+1}`` sharing one constant ``w``."""

    def make(n: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = [helper.make_node(op, [f"t{i}", "w"], [f"t{i + 1}"], **attrs) for i in range(n)]
        x = _rng().standard_normal(shape).astype(np.float32) * 1e-3
        return (
            _model(nodes, [_vi("t0", shape)], [_vi(f"t{n}", out_shape or shape)], [numpy_helper.from_array(weight, "w")]),
            {"t0": x},
        )

    return make


def _alternating_chain(ops: Sequence[tuple[str, list[str], dict[str, Any]]], shape: Sequence[int],
                       inits: Sequence[onnx.TensorProto] = ()) -> Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """A chain cycling through ``ops`` (each: op type, extra input names, attributes)."""

    def make(n: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = []
        for i in range(n):
            op, extra, attrs = ops[i % len(ops)]
            nodes.append(helper.make_node(op, [f"t{i}", *extra], [f"t{i + 1}"], **attrs))
        x = _rng().standard_normal(shape).astype(np.float32)
        return _model(nodes, [_vi("t0", shape)], [_vi(f"t{n}", shape)], inits), {"t0": x}

    return make


def _if_chain(n: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = []
    for i in range(n):
        then = helper.make_graph([helper.make_node("Relu", [f"t{i}"], [f"a{i}"])], f"then{i}", [], [_vi(f"a{i}", [4])])
        other = helper.make_graph([helper.make_node("Neg", [f"t{i}"], [f"b{i}"])], f"else{i}", [], [_vi(f"b{i}", [4])])
        nodes.append(helper.make_node("If", ["c"], [f"t{i + 1}"], then_branch=then, else_branch=other))
    model = _model(nodes, [_vi("t0", [4]), _vi("c", [], TensorProto.BOOL)], [_vi(f"t{n}", [4])])
    return model, {"t0": np.ones(4, np.float32), "c": np.array(True)}


def _lstm_chain(n: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = _rng()
    h = 4
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * h, h)).astype(np.float32) * 0.1, "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * h, h)).astype(np.float32) * 0.1, "R"),
        numpy_helper.from_array(np.array([2], np.int64), "ax"),
    ]
    nodes = []
    for i in range(n):  # [1, 1, h] -> LSTM -> Y [1, 1, 1, h] -> Squeeze axis 2 (view) -> [1, 1, h]
        nodes.append(helper.make_node("LSTM", [f"t{i}", "W", "R"], [f"y{i}"], hidden_size=h))
        nodes.append(helper.make_node("Squeeze", [f"y{i}", "ax"], [f"t{i + 1}"]))
    model = _model(nodes, [_vi("t0", [1, 1, h])], [_vi(f"t{n}", [1, 1, h])], inits)
    return model, {"t0": rng.standard_normal((1, 1, h)).astype(np.float32)}


#: What :func:`measure` reports doing, in order (one progress step each).
MEASURE_STEPS = (
    "per-node overheads", "matrix products", "int8 matrix products", "convolutions", "depthwise convolutions",
    "1-D depthwise convolutions", "int8 convolutions", "1-D convolutions", "recurrent cells", "memory bandwidth",
    "elementwise ops", "weight streaming",
)


def measure(*, quick: bool = False) -> Calibration:
    """Run the micro-benchmarks (about twenty seconds; ``quick``: a coarse grid for tests),
    reporting each of :data:`MEASURE_STEPS` to the current progress hook
    (:func:`onnxforge.progress.reporting`) as stage ``"profile"``."""
    label = "calibrating the CPU profile (once)"
    with Stage(current_hook(), "profile", label, unit="steps", total=len(MEASURE_STEPS)) as progress:
        steps = enumerate(MEASURE_STEPS)

        def step() -> None:
            done, name = next(steps)
            progress.step(done, f"{label}: {name}")

        calibration = _measure(quick, step)
        progress.step(len(MEASURE_STEPS), label)
        return calibration


def _measure(quick: bool, step: Callable[[], None]) -> Calibration:
    start = time.perf_counter()
    step()
    overhead: dict[str, float] = {}
    overhead["elementwise"], run_overhead = _chain(_unary_chain("Relu", [4]), 8, 72)
    overhead["view"], _ = _chain(_alternating_chain(
        [("Reshape", ["s1"], {}), ("Reshape", ["s0"], {})], [2, 2],
        [numpy_helper.from_array(np.array([4], np.int64), "s1"), numpy_helper.from_array(np.array([2, 2], np.int64), "s0")],
    ), 8, 72)
    overhead["copy"], _ = _chain(_unary_chain("Transpose", [2, 2], perm=[1, 0]), 8, 72)
    overhead["reduce"], _ = _chain(_unary_chain("Softmax", [1, 8], axis=-1), 8, 72)
    overhead["product"], _ = _chain(_with_init_chain("MatMul", [1, 8], np.eye(8, dtype=np.float32)), 8, 72)
    conv_w = np.eye(8, dtype=np.float32).reshape(8, 8, 1, 1)
    overhead["conv"], _ = _chain(_with_init_chain("Conv", [1, 8, 2, 2], conv_w), 8, 40, level="all")
    lstm, _ = _chain(_lstm_chain, 4, 20)
    overhead["recurrent"] = max(lstm - overhead["view"], 1e-9)
    overhead["control"], _ = _chain(_if_chain, 4, 20)

    # Rates of the work itself: the run's fixed cost and the node's dispatch are subtracted.
    fixed_mm = run_overhead + overhead["product"]
    fixed_conv = run_overhead + overhead["conv"]
    ms = (1, 8, 64, 512) if not quick else (1, 64)
    ks = (16, 64, 256, 1024) if not quick else (64, 256)
    d_mm, d_conv = overhead["product"], overhead["conv"]
    step()
    gemm = tuple(
        (float(m), float(k), float(n), _matmul_rate(m, k, n, fixed=fixed_mm, dispatch=d_mm)) for m in ms for k in ks for n in ks
    )
    int8_ms = (1, 8, 64, 512) if not quick else (1, 64)
    int8_ks = (64, 256, 1024) if not quick else (64, 256)
    step()
    gemm_int8 = tuple(
        (float(m), float(k), float(k), _qdq_matmul_rate(m, k, k, fixed=fixed_mm, dispatch=d_mm)) for m in int8_ms for k in int8_ks
    )
    big = (256, 512, 512) if not quick else (64, 256, 256)
    int8_speedup = _matmul_rate(*big, int8=True, fixed=fixed_mm, dispatch=d_mm) / _matmul_rate(*big, fixed=fixed_mm, dispatch=d_mm)

    chans = (16, 64, 256) if not quick else (16, 64)
    sizes = (8, 32, 64) if not quick else (8, 32)
    step()
    conv = tuple(_conv_rate(c, c, s, k, fixed=fixed_conv, dispatch=d_conv) for c in chans for s in sizes for k in (1, 3))
    conv = conv + tuple(_conv_rate(3, 32, s, 3, fixed=fixed_conv, dispatch=d_conv) for s in sizes)  # an image stem (3 channels)
    step()
    depthwise = tuple(
        _conv_rate(c, c, s, k, group=c, fixed=fixed_conv, dispatch=d_conv) for c in chans for s in sizes for k in (3, 5)
    )
    step()
    depthwise1d = tuple(
        _conv_rate(c, c, s, k, group=c, dims=1, fixed=fixed_conv, dispatch=d_conv)
        # time grows with channels about linearly (so the rate is flat in them) and barely with
        # positions (so the rate climbs steeply with them): a fine grid in positions
        for c in (16, 256) for s in ((2, 8, 32, 256) if not quick else (8,)) for k in (3, 5)
    )
    lengths = (1, 4, 32, 256) if not quick else (4, 64)
    step()
    conv_int8 = tuple(
        _qdq_conv_rate(c, sz, k, fixed=fixed_conv, dispatch=d_conv) for c in chans for sz in sizes[:2] for k in (1, 3)
    )
    step()
    panel = _conv_panel()
    conv1d = tuple(
        _conv_rate(c, c, s, k, dims=1, fixed=fixed_conv, dispatch=d_conv, panel=panel) for c in chans for s in lengths for k in (1, 3)
    )

    step()
    hiddens = (16, 64, 128, 256) if not quick else (16, 64)
    lstms = [_lstm_rate(h, fixed=run_overhead + overhead["recurrent"], dispatch=overhead["recurrent"]) for h in hiddens]
    recurrent = tuple(point for point, _ in lstms)
    # what a call costs beyond its steps (gates' buffers, bias, initial states), for every size
    overhead["recurrent"] += statistics.median(call for _, call in lstms)
    io = _io_cost(overhead["elementwise"])

    step()
    bandwidth = []
    for elems in ((1 << 10, 1 << 13, 1 << 16, 1 << 19, 1 << 22) if not quick else (1 << 10, 1 << 16)):
        chain = functools.partial(_add_chain, elems=elems)
        short, long = (2, 6) if elems > 1 << 18 else (4, 20)
        per = statistics.median(_chain(chain, short, long)[0] for _ in range(3))  # robust to one noisy slice
        moved = 3 * 4 * elems
        bandwidth.append((float(moved), moved / max(per - overhead["elementwise"], per / 10)))
    for i in range(len(bandwidth) - 2, -1, -1):  # a larger working set never streams faster
        bandwidth[i] = (bandwidth[i][0], max(bandwidth[i][1], bandwidth[i + 1][1]))
    step()
    mid = 1 << 16  # L2-resident: the per-element cost of a simple elementwise op, not memory's
    mul = statistics.median(_chain(functools.partial(_scale_chain, elems=mid), 4, 20)[0] for _ in range(3))
    elementwise = mid / max(mul - overhead["elementwise"], 1e-9)
    small = 1 << 14
    sig, _ = _chain(_unary_chain("Sigmoid", [small]), 4, 20)
    vector = 4 * small / max(sig - overhead["elementwise"], 1e-9)
    per_element = _per_element(overhead) if not quick else {}
    step()
    stream = tuple((float(r), _stream_point(r, STREAM_SET_BYTES >> (1 if quick else 0))) for r in ((1, 16) if quick else (1, 16, 128)))
    sets = STREAM_SETS[:3:2] if quick else STREAM_SETS[:-1]
    stream_sets = [(float(b), _stream_point(1, b)) for b in sets] + [(float(STREAM_SET_BYTES), stream[0][1])]
    for i in range(len(stream_sets) - 2, -1, -1):  # a smaller weight set never streams dearer
        stream_sets[i] = (stream_sets[i][0], min(stream_sets[i][1], stream_sets[i + 1][1]))
    seconds = time.perf_counter() - start
    log.info("calibrated the CPU roofline in %.1f s", seconds)
    return Calibration(
        gemm=gemm,
        conv=conv,
        conv1d=conv1d,
        depthwise=depthwise,
        depthwise1d=depthwise1d,
        recurrent=recurrent,
        gemm_int8=gemm_int8,
        conv_int8=conv_int8,
        elementwise=elementwise,
        per_element=per_element,
        stream=stream,
        stream_sets=tuple(stream_sets),
        io_overhead=io,
        bandwidth=tuple(bandwidth),
        overhead=overhead,
        vector=vector,
        int8_speedup=int8_speedup,
        run_overhead=run_overhead,
        conv_panel=panel,
        seconds=seconds,
    )


def _lstm_rate(hidden: int, *, fixed: float, dispatch: float) -> tuple[tuple[float, float, float, float], float]:
    """((batch, input + hidden, 4 x hidden, FLOP/s of one step), seconds per call beyond the
    steps) of an LSTM (input size = hidden) as exporters write it (bias, initial states), from
    runs of 1 and 4 steps: a streaming model's single step costs ~2x a step of a sequence."""
    rng = _rng()
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.1, "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.1, "R"),
        numpy_helper.from_array(rng.standard_normal((1, 8 * hidden)).astype(np.float32) * 0.1, "B"),
    ]
    h0 = rng.standard_normal((1, 1, hidden)).astype(np.float32)

    def build_for(steps: int) -> Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
        x = rng.standard_normal((steps, 1, hidden)).astype(np.float32)

        def build(r: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
            nodes = [
                helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "h0"], [f"y{i}"], hidden_size=hidden)
                for i in range(r)
            ]
            outs = [_vi(f"y{i}", [steps, 1, 1, hidden]) for i in range(r)]
            return _model(nodes, [_vi("x", [steps, 1, hidden]), _vi("h0", [1, 1, hidden])], outs, inits), {"x": x, "h0": h0}

        return build

    one = _per_node(build_for(1), fixed, dispatch)
    four = _per_node(build_for(4), fixed, dispatch)
    step = max((four - one) / 3, four / 8)
    macs = 4 * hidden * 2 * hidden
    return (1.0, 2.0 * hidden, 4.0 * hidden, 2 * macs / step), max(one - step, 0.0)


def _stream_point(rows: int, total: int) -> float:
    """Seconds per weight byte: a chain of 256x256 MatMuls on ``rows`` rows with distinct
    weights (``total`` bytes in all) against the same chain sharing one weight."""
    side = 256
    count = max(total // (side * side * 4), 2)
    rng = _rng()
    weights = [rng.standard_normal((side, side)).astype(np.float32) * (1 / 16) for _ in range(count)]

    def build(distinct: bool) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights if distinct else weights[:1])]
        nodes = [helper.make_node("MatMul", [f"t{i}", f"w{i if distinct else 0}"], [f"t{i + 1}"]) for i in range(count)]
        return _model(nodes, [_vi("t0", [rows, side])], [_vi(f"t{count}", [rows, side])], inits)

    x = {"t0": rng.standard_normal((rows, side)).astype(np.float32)}
    shared = create_session(build(False), optimization="all", threads=1)
    distinct = create_session(build(True), optimization="all", threads=1)
    # three interleaved pairs, the median difference: a slice of another job on the shared cores
    # once erased the difference of a single pair
    diffs = [_time_session(distinct, x, budget_s=0.03) - _time_session(shared, x, budget_s=0.03) for _ in range(3)]
    return max(statistics.median(diffs), 0.0) / (count * side * side * 4)


def _per_element_chain(op: str, domain: str, extras: Sequence[str], attrs: Mapping[str, Any]) -> Callable[[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """A chain of ``op`` on a [1, 128, 1536] activation (Transpose: [1, 128, 12, 128] under
    its own inverse permutation); extra inputs are a full tensor or a row of 1536."""
    rows, cols = _PER_ELEMENT_ROWS, _PER_ELEMENT_COLS
    shape = [1, rows, 12, cols // 12] if op == "Transpose" else [1, rows, cols]
    rng = _rng()
    inits = []
    names = []
    for i, kind in enumerate(extras):
        arr = rng.standard_normal(shape if kind == "full" else [cols]).astype(np.float32) * 1e-2
        inits.append(numpy_helper.from_array(arr, f"e{i}"))
        names.append(f"e{i}")

    def make(n: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = [helper.make_node(op, [f"t{i}", *names], [f"t{i + 1}"], domain=domain, **attrs) for i in range(n)]
        g = helper.make_graph(nodes, "calibration", [_vi("t0", shape)], [_vi(f"t{n}", shape)], inits)
        opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
        x = rng.standard_normal(shape).astype(np.float32) * 0.5
        return helper.make_model(g, opset_imports=opsets, ir_version=8), {"t0": x}

    return make


def _per_element(dispatch: Mapping[str, float]) -> dict[str, float]:
    """Seconds per output element of each of :data:`PER_ELEMENT_OPS` (an op onnxruntime does
    not have is left out)."""
    out: dict[str, float] = {}
    elems = _PER_ELEMENT_ROWS * _PER_ELEMENT_COLS
    for key, op, domain, extras, attrs in PER_ELEMENT_OPS:
        try:
            per, _ = _chain(_per_element_chain(op, domain, extras, attrs), 2, 6)
        except Exception as e:  # an older onnxruntime without the contrib op
            log.info("per-element rate of %s not measured: %s", key, str(e).splitlines()[0][:120])
            continue
        out[key] = max(per - dispatch.get(op_class(op), 0.0), per / 10) / elems
    return out


def _io_cost(dispatch: float) -> float:
    """Seconds per extra graph input and output: 5 inputs each through a Relu to its own output
    against 1, less the Relus' dispatch."""

    def build(r: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        nodes = [helper.make_node("Relu", [f"x{i}"], [f"y{i}"]) for i in range(r)]
        model = _model(nodes, [_vi(f"x{i}", [4]) for i in range(r)], [_vi(f"y{i}", [4]) for i in range(r)])
        return model, {f"x{i}": np.ones(4, np.float32) for i in range(r)}

    one = _time(*build(1), budget_s=0.05, min_runs=21)
    five = _time(*build(5), budget_s=0.05, min_runs=21)
    return max((five - one) / 4 - dispatch, 0.0) / 2


def _scale_chain(n: int, elems: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [helper.make_node("Mul", [f"t{i}", "k"], [f"t{i + 1}"]) for i in range(n)]
    x = _rng().standard_normal(elems).astype(np.float32)
    k = numpy_helper.from_array(np.array([1.0001], np.float32), "k")
    return _model(nodes, [_vi("t0", [elems])], [_vi(f"t{n}", [elems])], [k]), {"t0": x}


def _add_chain(n: int, elems: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [helper.make_node("Add", [f"t{i}", "t0"], [f"t{i + 1}"]) for i in range(n)]
    x = _rng().standard_normal(elems).astype(np.float32) * 1e-3
    return _model(nodes, [_vi("t0", [elems])], [_vi(f"t{n}", [elems])]), {"t0": x}
