"""The per-machine calibration of the CPU roofline (issue 18): interpolation between measured
shapes, bandwidth by working set, overhead by op class, the cache, and the graph onnxruntime
executes. The micro-benchmarks run once here on the coarse ``quick`` grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.cost import analyze, roofline
from onnxforge.cost.calibrate import (
    MEASURE_STEPS,
    STREAM_SET_BYTES,
    Calibration,
    interpolate,
    measure,
    op_class,
    per_element_key,
)
from onnxforge.cost.executed import executed_model
from onnxforge.cost.roofline import NodeWork, TargetProfile
from onnxforge.ir import from_proto
from onnxforge.kernels.costs.registry import MATMUL, MOVEMENT, VECTOR
from onnxforge.progress import ProgressEvent, reporting

_CAL = Calibration(
    gemm=((1, 64, 64, 1e9), (64, 64, 64, 1e11), (1, 1024, 1024, 4e9), (64, 1024, 1024, 2e11)),
    bandwidth=((1e3, 1e11), (1e6, 1e11), (1e8, 1e10)),
    overhead={"elementwise": 1e-7, "conv": 1e-6, "product": 5e-7},
    vector=1e10,
    int8_speedup=4.0,
    run_overhead=5e-6,
    io_overhead=1e-6,
)


def _profile(cal: Calibration | None = _CAL) -> TargetProfile:
    return TargetProfile(
        name="cpu", description="test", matmul_fp32=1e11, matmul_fp16=5e10, matmul_int8=4e11, vector=1e10,
        bandwidth=1e10, overhead_s=1e-7, source="measured", run_overhead_s=5e-6, calibration=cal,
    )


def test_rates_interpolate_in_log_space_between_measured_shapes() -> None:
    pts = _CAL.gemm
    assert interpolate(pts, 64, 64, 64) == 1e11  # a measured shape: its own rate
    mid = interpolate(pts, 8, 64, 64)  # between 1 row (1e9) and 64 rows (1e11)
    assert 1e9 < mid < 1e11
    assert interpolate(pts, 1, 64, 64) < interpolate(pts, 64, 64, 64)  # a matrix-vector product is slower


def test_bandwidth_falls_with_the_working_set() -> None:
    assert _CAL.bandwidth_at(10) == 1e11
    assert _CAL.bandwidth_at(1e7) == pytest.approx(10 ** 10.5)
    assert _CAL.bandwidth_at(1e12) == 1e10


def test_work_time_adds_the_class_overhead_to_the_slower_of_work_and_traffic() -> None:
    p = _profile()
    t, bound = p.work_time(NodeWork("MatMul", MATMUL, "fp32", 2 * 64**3, 1000, ("gemm", 64, 64, 64)))
    assert bound == "compute" and t == pytest.approx(2 * 64**3 / 1e11 + 5e-7)
    q, _ = p.work_time(NodeWork("MatMul", MATMUL, "int8", 2 * 64**3, 1000, ("gemm", 64, 64, 64)))
    assert q == pytest.approx(2 * 64**3 / 4e11 + 5e-7)
    t, bound = p.work_time(NodeWork("Add", VECTOR, "fp32", 10, 10**8))
    assert bound == "memory" and t == pytest.approx(10**8 / 1e10 + 1e-7)
    t, _ = p.work_time(NodeWork("Conv", MOVEMENT, "fp32", 0, 0))
    assert t == pytest.approx(1e-6)
    # without a calibration, the plain roofline
    plain = _profile(None)
    assert plain.work_time(NodeWork("Add", VECTOR, "fp32", 10, 10**8)) == plain.node_time(VECTOR, "fp32", 10, 10**8)


def test_op_classes() -> None:
    assert op_class("Reshape") == "view" and op_class("Transpose") == "copy" and op_class("ReorderInput") == "copy"
    assert op_class("FusedConv") == op_class("Conv") == "conv" and op_class("FusedMatMul") == "product"
    assert op_class("LayerNormalization") == "reduce" and op_class("LSTM") == "recurrent" and op_class("If") == "control"
    assert op_class("Sigmoid") == "elementwise"


def test_the_calibration_round_trips_through_the_profile_cache(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ONNXFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(roofline, "measure_cpu_profile", _profile)
    first = roofline.cpu_profile()
    cached = json.loads(next(tmp_path.glob("cpu-profile-*.json")).read_text())
    assert cached["calibration"]["overhead"]["conv"] == 1e-6
    again = roofline.cpu_profile()
    assert again == first and again.calibration == _CAL


def _conv_relu() -> object:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w],
    )
    return from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_latency_is_estimated_on_the_graph_onnxruntime_executes() -> None:
    model = _conv_relu()
    ran = executed_model(model)  # type: ignore[arg-type]
    assert ran is not None and "Relu" not in {n.op_type for n in ran.graph}  # fused into the convolution
    r = analyze(model, target=_profile(), reorder=False)  # type: ignore[arg-type]
    assert r.executed_nodes == len(ran.graph) and any("ORT_ENABLE_ALL" in n for n in r.notes)
    plain = analyze(model, target=_profile(), reorder=False, executed=False)  # type: ignore[arg-type]
    assert plain.executed_nodes is None and r.totals.macs == plain.totals.macs


def test_quick_calibration_measures_every_parameter() -> None:
    events: list[ProgressEvent] = []
    with reporting(events.append):
        cal = measure(quick=True)
    # about twenty seconds on first use: each step is reported, then the stage ends complete
    assert [e.label.rsplit(": ", 1)[-1] for e in events[1:-2]] == list(MEASURE_STEPS)
    assert [e.done for e in events] == sorted(e.done for e in events) and all(e.stage == "profile" for e in events)
    assert events[-1].finished and events[-1].done == events[-1].total == len(MEASURE_STEPS)
    assert cal.gemm and cal.conv and cal.conv1d and cal.depthwise and cal.depthwise1d and cal.recurrent and cal.bandwidth
    assert all(r > 0 for *_, r in cal.gemm + cal.conv + cal.depthwise + cal.depthwise1d)
    assert cal.conv_panel in (1, 4, 8, 16, 32)
    assert set(cal.overhead) >= {"elementwise", "view", "copy", "reduce", "product", "conv", "recurrent", "control"}
    assert cal.run_overhead > 0 and cal.vector > 0 and cal.int8_speedup > 0
    assert [r for r, _ in cal.stream] == [1, 16] and cal.stream[0][1] > 0  # distinct weights cost more than one
    # the matrix-vector streaming cost against the weight-set size, ending at the full set
    sizes, costs = [b for b, _ in cal.stream_sets], [c for _, c in cal.stream_sets]
    assert len(sizes) == 3 and sizes == sorted(sizes) and sizes[-1] == STREAM_SET_BYTES
    assert all(c >= 0 for c in costs) and costs == sorted(costs) and costs[-1] == cal.stream[0][1]
    big = max(cal.gemm, key=lambda p: p[0] * p[1] * p[2])[3]
    assert cal.rate("gemm", 1, 64, 64) < big  # one row is slower per FLOP than a full product


def test_the_executed_latency_counts_the_if_branch_that_runs() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), "w")
    heavy = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"])], "heavy", [], [helper.make_tensor_value_info("h", TensorProto.FLOAT, [64, 256])]
    )
    light = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["l"])], "light", [], [helper.make_tensor_value_info("l", TensorProto.FLOAT, [64, 256])]
    )
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=heavy, else_branch=light)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 256])],
        [w],
    )
    model = from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal((64, 256)).astype(np.float32)
    taken = analyze(model, target=_profile(), feeds={"x": x, "c": np.array(True)}, reorder=False)
    skipped = analyze(model, target=_profile(), feeds={"x": x, "c": np.array(False)}, reorder=False)
    assert taken.totals.macs == skipped.totals.macs == 64 * 256 * 256  # MACs: the costlier branch, an upper bound
    assert skipped.totals.est_latency_ms < taken.totals.est_latency_ms / 5


def test_depthwise_work_counts_only_the_taps_inside_the_input() -> None:
    # a 5x5 depthwise convolution over 2 rows (padding 2) reads 2 of its 5 kernel rows: its
    # work is 40% of its MACs (a direct kernel skips the padding); the MACs stay the full count
    cal = Calibration(**{**_CAL.__dict__, "depthwise": ((16, 9, 64, 1e9), (1024, 9, 64, 1e9), (16, 25, 64, 1e9), (1024, 25, 64, 1e9))})

    def estimate(h: int, w: int) -> tuple[int, float]:
        wt = numpy_helper.from_array(np.ones((64, 1, 5, 5), np.float32), "w")
        g = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], group=64, pads=[2, 2, 2, 2], name="dw")], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, h, w])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, h, w])], [wt],
        )  # fmt: skip
        r = analyze(from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])),
                    target=_profile(cal), reorder=False, executed=False)  # fmt: skip
        node = r.nodes[0]
        return node.macs, node.est_ms * 1e-3 - 1e-6  # less the conv overhead

    flat_macs, flat = estimate(2, 96)
    square_macs, square = estimate(12, 16)  # as many positions, few in the padding's reach
    assert flat_macs == square_macs == 64 * 192 * 25
    assert flat / square == pytest.approx(0.4 * 474 / 480 / ((12 * 5 - 6) / 60 * (16 * 5 - 6) / 80), rel=0.02)


def test_one_d_convolutions_pay_for_whole_gemm_panels() -> None:
    # measured grid indexed by panel positions: one position (matrix-vector path) at 1 GFLOP/s,
    # a full 16-column panel at 8 GFLOP/s
    grid = ((1, 192, 64, 1e9), (16, 192, 64, 8e9), (1, 768, 256, 1e9), (16, 768, 256, 8e9))
    cal = Calibration(**{**_CAL.__dict__, "conv1d": grid, "conv_panel": 16})
    p = _profile(cal)

    def t(positions: int) -> float:
        flops = 2 * positions * 192 * 64
        return p.work_time(NodeWork("Conv", MATMUL, "fp32", flops, 1000, ("conv1d", positions, 192, 64)))[0]

    assert t(2) == pytest.approx(t(16)) == pytest.approx(2 * 16 * 192 * 64 / 8e9 + 1e-6)
    assert t(17) == pytest.approx(2 * t(16) - 1e-6)  # a second panel
    # one position interpolates among the matrix-vector points only (not toward the panels' rate)
    assert t(1) == pytest.approx(2 * 192 * 64 / 1e9 + 1e-6)


def test_one_d_depthwise_convolutions_have_their_own_rates() -> None:
    # onnxruntime runs a 1-D depthwise convolution as one GEMM per channel: far slower per MAC
    # than the direct 2-D kernel; each interpolates among its own measured points
    cal = Calibration(**{
        **_CAL.__dict__,
        "depthwise": ((8, 5, 16, 1e10), (8, 5, 256, 1e10)),
        "depthwise1d": ((8, 5, 16, 5e8), (8, 5, 256, 5e8)),
    })  # fmt: skip

    def estimate(spatial: list[int]) -> float:
        k = [5] * len(spatial)
        wt = numpy_helper.from_array(np.ones((256, 1, *k), np.float32), "w")
        g = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], group=256, kernel_shape=k, name="dw")], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256, *(d + 4 for d in spatial)])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, *spatial])], [wt],
        )  # fmt: skip
        r = analyze(from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])),
                    target=_profile(cal), reorder=False, executed=False)  # fmt: skip
        return r.nodes[0].est_ms * 1e-3 - 1e-6  # less the conv overhead

    assert estimate([8]) == pytest.approx(2 * 8 * 5 * 256 / 5e8, rel=1e-6)
    assert estimate([1, 8]) == pytest.approx(estimate([8]) * 5e8 / 1e10 * 5, rel=1e-6)  # a 5x5 kernel (25 taps, none in padding) at the 2-D rate


def test_ops_with_a_measured_per_element_rate_use_it() -> None:
    cal = Calibration(**{**_CAL.__dict__, "per_element": {"Erf": 1e-9, "binary/bcast": 1e-11}})
    p = _profile(cal)
    # an Erf over a million elements: the measured 1 ns per element, not the generic vector rate
    t, bound = p.work_time(NodeWork("Erf", VECTOR, "fp32", 10**6, 8 * 10**6, elements=10**6, per_element_key="Erf"))
    assert bound == "compute" and t == pytest.approx(1e-3 + 1e-7)
    generic, _ = p.work_time(NodeWork("Erf", VECTOR, "fp32", 10**6, 8 * 10**6, elements=10**6))
    assert generic < t / 2
    assert per_element_key("Add", "", broadcast=True) == "binary/bcast"
    assert per_element_key("Mul", "", broadcast=False) == "binary"
    assert per_element_key("SkipLayerNormalization", "com.microsoft", broadcast=True) == "SkipLayerNormalization"
    assert per_element_key("Conv", "", broadcast=False) is None


def test_weights_beyond_the_cache_stream_in_on_every_run() -> None:
    # measured: nothing over a 0.5 MB set, a quarter of the 16 MB cost over 2 MB, all of it at 16 MB
    sets = ((2.0**19, 0.0), (2.0**21, 1e-11), (2.0**24, 4e-11))
    cal = Calibration(**{**_CAL.__dict__, "stream": ((1.0, 4e-11), (16.0, 1e-11)), "stream_sets": sets})
    p = _profile(cal)

    def t(rows: int, model_bytes: int) -> float:
        w = NodeWork("MatMul", MATMUL, "fp32", 2 * rows * 256 * 256, 256 * 256 * 4, ("gemm", rows, 256, 256),
                     weight_bytes=256 * 256 * 4, model_weight_bytes=model_bytes)
        return p.work_time(w)[0]

    # weight sets the measurement found resident pay nothing, whatever the L2 size says
    assert t(1, 2**19) == t(1, 2**18) == t(1, 1)
    # a matrix-vector product pays the measured cost per byte, 4 rows one interpolated between
    # the measured 1 and 16 rows, 64 rows that of the last measured point
    full = 256 * 256 * 4 * cal.stream_cost(1, 2**24)
    assert full == pytest.approx(256 * 256 * 4 * 4e-11)
    assert t(1, 2**24) - t(1, 1) == pytest.approx(full)
    assert cal.stream_cost(4, 2**24) == pytest.approx(2e-11)  # halfway in log space
    assert t(64, 2**24) - t(64, 1) == pytest.approx(full / 4)
    # between measured sets: the measured share of the full cost (a quarter at 2 MB, log-linear
    # on to 16 MB), at any row count
    assert cal.stream_cost(1, 2**21) == pytest.approx(1e-11)
    assert cal.stream_cost(16, 2**21) == pytest.approx(1e-11 / 4)
    assert cal.stream_cost(1, 2**21) < cal.stream_cost(1, 2**22) < cal.stream_cost(1, 2**24)
    # slower memory beyond the measured 16 MB set scales the cost up
    assert cal.stream_cost(1, 10**8) > cal.stream_cost(1, 2**24)
    # elementwise nodes carry small weights (biases): left to their memory term
    add = NodeWork("Add", VECTOR, "fp32", 10, 10**6, weight_bytes=10**5, model_weight_bytes=10**8)
    assert p.work_time(add) == p.work_time(NodeWork("Add", VECTOR, "fp32", 10, 10**6))


def test_an_embedding_gather_reads_its_rows_not_the_table() -> None:
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((30000, 384)).astype(np.float32), "table")
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"])],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 16, 384])],
        [table],
    )
    model = from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    r = analyze(model, target=_profile(), reorder=False, executed=False)  # type: ignore[arg-type]
    node = next(n for n in r.nodes if n.op_type == "Gather")
    assert node.weight_bytes == 30000 * 384 * 4  # the table is still the model's parameters
    assert node.weight_read_bytes == 16 * 384 * 4  # but one run reads 16 rows of it
