"""Defects the bad-input fuzzer (``make fuzz``) found, rebuilt in code: each mutated model is
refused by ``compile`` and ``analyze`` with one ``onnxforge: error:`` line (no traceback, no
``internal error``, no output file, the input untouched)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import if_with_capture, mlp
from onnx import TensorProto, helper, numpy_helper

from onnxforge.cli import main


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_refused(model: Path, capfd: pytest.CaptureFixture[str], *needles: str, extra: tuple[str, ...] = ()) -> None:
    """compile and analyze both exit 1 with one clean error line containing ``needles``."""
    before = _digest(model.parent)
    out = model.parent.parent / "out"
    out.mkdir(exist_ok=True)
    for argv in (["compile", str(model), "-o", str(out / "o.onnx"), *extra], ["analyze", str(model)]):
        code = main(argv)
        err = capfd.readouterr().err  # capfd: onnxruntime's own log lines come from C++
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 1, (argv[0], code, err)
        assert len(lines) == 1 and lines[0].startswith("onnxforge: error:"), (argv[0], err)
        assert "internal error" not in err and "Traceback" not in err, err
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
        assert list(out.iterdir()) == [], "output written by a failed run"
        assert _digest(model.parent) == before, "input modified"


def _save(tmp_path: Path, m: onnx.ModelProto | bytes, name: str = "m.onnx") -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
    return path


def _external_mlp(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"
    onnx.save_model(mlp(), path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path


@pytest.mark.parametrize("data_type", [-1, 255, 65535, -(2**31)])
def test_initializer_of_an_unknown_data_type(tmp_path, capfd, data_type):
    """Was: KeyError in numpy_helper.to_array (the checker lets unknown data types through)."""
    m = mlp()
    m.graph.initializer[0].data_type = data_type
    assert_refused(_save(tmp_path, m), capfd, "unknown data type", str(data_type))


def test_value_of_an_unknown_element_type(tmp_path, capfd):
    m = mlp()
    m.graph.input[0].type.tensor_type.elem_type = 99
    assert_refused(_save(tmp_path, m), capfd, "99")


def test_constant_attribute_tensor_of_an_unknown_data_type(tmp_path, capfd):
    m = if_with_capture()
    value = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], dtype=np.float32), "v")
    value.data_type = 65535
    m.graph.node.insert(0, helper.make_node("Constant", [], ["k"], value=value))
    m.graph.output.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, [3]))
    assert_refused(_save(tmp_path, m), capfd, "unknown data type 65535")


def _with_bytes_replaced(m: onnx.ModelProto, old: bytes, new: bytes) -> bytes:
    data = m.SerializeToString()
    assert data.count(old) == 1 and len(old) == len(new)
    return data.replace(old, new)


def test_node_name_that_is_not_utf8(tmp_path, capfd):
    """Was: UnicodeDecodeError when the name was exported (compile) or probed (analyze):
    protobuf parses invalid UTF-8 into a ``bytes`` name without complaint."""
    m = mlp()
    m.graph.node[1].name = "NAMEXYZ"
    bad = _with_bytes_replaced(m, b"NAMEXYZ", b"NAM\xf5XYZ")
    assert_refused(_save(tmp_path, bad), capfd, "graph.node[1].name is not valid UTF-8")


def test_external_location_that_is_not_utf8(tmp_path, capfd):
    """Was: TypeError (Path / bytes) in the output-path check, before any loading."""
    path = _external_mlp(tmp_path)
    m = onnx.load(path, load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "weightsQ.bin"
    path.write_bytes(_with_bytes_replaced(m, b"weightsQ.bin", b"weights\xc3.bin"))
    assert_refused(path, capfd, "is not valid UTF-8")


def test_external_location_with_a_nul_character(tmp_path, capfd):
    """Was: ValueError: embedded null byte, from os.path.realpath."""
    path = _external_mlp(tmp_path)
    m = onnx.load(path, load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "\0weights.bin"
    onnx.save(m, path)
    assert_refused(path, capfd, "NUL")


@pytest.mark.parametrize("form", ["cycle", "out_of_order"])
def test_function_body_that_is_not_sorted(tmp_path, capfd, form):
    """Was: compiled (exit 0) into a model the onnx checker refuses: the loader sorted the
    graphs, ignored the second check's verdict, and function bodies stay as they are."""
    m = if_with_capture()
    body = m.functions[0]
    if form == "cycle":  # b = Add(a, b)
        body.node[0].input[1] = body.output[0]
    else:
        body.node[0].output[0] = "t"
        body.node.append(helper.make_node("Identity", ["t"], [body.output[0]]))
        body.node.insert(0, body.node.pop())  # reader before writer
    assert_refused(_save(tmp_path, m), capfd, "topological order")


def test_verify_when_onnxruntime_fails_to_run_the_model_is_one_line(tmp_path, capfd):
    """Was: onnxruntime printed the kernel error as a log line of its own (with colour codes)
    before onnxforge's error line."""
    g = helper.make_graph(
        [helper.make_node("Gather", ["x", "idx"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.array([7], dtype=np.int64), "idx")],  # out of range
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = _save(tmp_path, m)
    out = tmp_path / "o.onnx"
    code = main(["compile", str(path), "-o", str(out), "--verify", "--pipeline", "lossless", "-q"])
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("onnxforge: error:"), err
    assert "onnxruntime" not in lines[0].split(":")[0] and not out.exists()


def _endless_loop(trip: int) -> onnx.ModelProto:
    """A valid model whose Loop runs ``trip`` times and stacks a value per iteration."""
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
            helper.make_node("Identity", ["acc_out"], ["scan_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", f, [3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", f, [3]),
            helper.make_tensor_value_info("scan_out", f, [3]),
        ],
    )
    g = helper.make_graph(
        [helper.make_node("Loop", ["trip", "", "x"], ["acc", "scans"], body=body)],
        "g",
        [helper.make_tensor_value_info("x", f, [3])],
        [helper.make_tensor_value_info("acc", f, [3]), helper.make_tensor_value_info("scans", f, ["n", 3])],
        [numpy_helper.from_array(np.array(trip, dtype=np.int64), "trip")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("command", ["analyze", "compile"])
def test_a_loop_of_2_to_the_31_iterations_does_not_run_away(tmp_path, capfd, monkeypatch, command):
    """Was: the shape probe of ``analyze`` (and of compile's cost estimate) ran the Loop until
    onnxruntime aborted (SIGABRT) out of memory, after growing it by gigabytes a second. The
    probe now stops a run after PROBE_SECONDS and falls back to static shapes."""
    import time

    from onnxforge.cost import probe

    monkeypatch.setattr(probe, "PROBE_SECONDS", 0.5)
    path = _save(tmp_path, _endless_loop(2**31 - 1))
    argv = ["analyze", str(path)] if command == "analyze" else ["compile", str(path), "-o", str(tmp_path / "o.onnx")]
    start = time.monotonic()
    code = main(argv)
    err = capfd.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    assert time.monotonic() - start < 30


def test_a_newline_in_an_op_type_does_not_split_the_error_line(tmp_path, capfd):
    """Was: a byte edit put a newline into ``DequantizeLinear``; the refusal quoted the op type
    as it was, in two lines. Control characters are escaped in errors and log lines."""
    m = mlp()
    m.graph.node[1].input[1] = "ghost"  # refused: reads an undefined value, naming the op
    m.graph.node[1].op_type = "Ad\nd"
    assert_refused(_save(tmp_path, m), capfd, "Ad\\nd")


def test_log_lines_are_one_line():
    import logging

    from onnxforge.cli import _OneLineFormatter

    record = logging.LogRecord("onnxforge.x", logging.WARNING, __file__, 1, "value %r of op %s", ("a\nb", "C\rD"), None)
    assert _OneLineFormatter().format(record) == "WARNING onnxforge.x: value 'a\\nb' of op C\\rD"


# -- onnx's shape inference aborting the process (SIGABRT in std::clamp, Slice on a negative dim) --


def _slice_after(nodes: list[onnx.NodeProto], x_dims: list[int], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    ints = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    g = helper.make_graph(
        [*nodes, helper.make_node("Slice", ["p", "st", "en", "ax"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [*inits, ints("st", [1]), ints("en", [5]), ints("ax", [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def negative_declared_dim() -> onnx.ModelProto:
    """x declared [1, -7] (the checker accepts it), then Slice on that axis."""
    return _slice_after([helper.make_node("Identity", ["x"], ["p"])], [1, -7], [])


def pad_removing_more_than_the_axis(computed: bool) -> onnx.ModelProto:
    """Pad [1, 10] by -20 at the end of axis 1, then Slice it. ``computed``: the pads come out
    of a Shape/Sub/Concat chain (only inference with data propagation sees -20, as in the
    fuzzed silero_vad model), else from an initializer."""
    if not computed:
        pads = numpy_helper.from_array(np.array([0, 0, 0, -20], dtype=np.int64), "pads")
        return _slice_after([helper.make_node("Pad", ["x", "pads"], ["p"])], [1, 10], [pads])

    def const(name: str, v: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(v, dtype=np.int64)))

    nodes = [
        const("zero3", [0, 0, 0]),
        const("n", [1, 20]),
        helper.make_node("Shape", ["n"], ["ns"]),
        const("k", [22]),
        helper.make_node("Sub", ["ns", "k"], ["neg"]),
        helper.make_node("Concat", ["zero3", "neg"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["p"]),
    ]
    return _slice_after(nodes, [1, 10], [])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a child: an abort must fail this test, not end the test run."""
    return subprocess.run([sys.executable, "-m", "onnxforge.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "label, build",
    [
        ("negative_declared_dim", negative_declared_dim),
        ("constant_pads", lambda: pad_removing_more_than_the_axis(False)),
        ("computed_pads", lambda: pad_removing_more_than_the_axis(True)),
    ],
)
def test_models_on_which_onnx_inference_aborts_are_handled(tmp_path, label, build):
    """Was: SIGABRT (onnx's inference inside onnxforge, or inside onnxruntime opening a session).
    Now refused in one line, or analysed with declared shapes; never killed."""
    path = _save(tmp_path, build())
    out = tmp_path / "o.onnx"
    for args in (["compile", str(path), "-o", str(out)], ["compile", str(path), "-o", str(out), "--verify"],
                 ["analyze", str(path)]):
        r = _cli(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING ")]
        assert r.returncode in (0, 1), (label, args, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
        if r.returncode:
            assert len(lines) == 1 and lines[0].startswith("onnxforge: error:"), r.stderr
            assert not out.exists()
        out.unlink(missing_ok=True)


def test_inference_helper_turns_a_crash_into_an_inference_error_and_recovers():
    from onnxforge.ir.onnx_inference import CRASHED, infer_shapes, inference_crash

    bad = pad_removing_more_than_the_axis(False)
    assert inference_crash(bad) == "killed by SIGABRT"
    with pytest.raises(onnx.shape_inference.InferenceError, match=CRASHED):
        infer_shapes(bad)
    good = mlp()
    assert inference_crash(good) is None  # a new helper after the crash
    inferred = infer_shapes(good)
    assert {v.name for v in inferred.graph.value_info} >= {"h", "h2", "r"}
    wrong = mlp()
    wrong.graph.node[0].op_type = "Conv"  # an error, not a crash: raised as itself
    with pytest.raises(onnx.shape_inference.InferenceError, match="ShapeInferenceError"):
        infer_shapes(wrong, strict_mode=True)


def test_an_empty_external_length_is_no_length(tmp_path, capfd):
    """Was: ValueError int('') when sizing the output: the loader reads an empty length as no
    length (the tensor's size), the save did not."""
    path = _external_mlp(tmp_path)
    m = onnx.load(path, load_external_data=False)
    for e in m.graph.initializer[1].external_data:
        if e.key == "length":
            e.value = ""
    onnx.save(m, path)
    out = tmp_path / "o.onnx"
    for argv in (["compile", str(path), "-o", str(out), "--pipeline", "lossless"], ["analyze", str(path)]):
        code = main(argv)
        err = capfd.readouterr().err
        assert code == 0 and "internal error" not in err and "Traceback" not in err, err
    assert onnx.load(out).graph.initializer  # onnxruntime cannot read the empty length: only warned
