"""lower -o/--ort: onnxruntime's optimized model and ORT format, loadable; outputs checked first."""

from __future__ import annotations

import numpy as np
import onnx
from lowering_models import matmuls

from onnxforge.cli import main
from onnxforge.runtime.session import create_session, deployment_session
from onnxforge.runtime.target import TARGETS


def test_optimized_onnx_and_ort_format_run_like_the_original(tmp_path, capsys):
    src, opt, ort_file = tmp_path / "m.onnx", tmp_path / "m.opt.onnx", tmp_path / "m.ort"
    model = matmuls(3, 32)
    onnx.save(model, src)
    assert main(["lower", str(src), "-o", str(opt), "--ort", str(ort_file)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {opt}" in out and f"wrote {ort_file}" in out
    assert ort_file.read_bytes()[4:8] == b"ORTM"  # onnxruntime's flatbuffer identifier
    x = {"x": np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32)}
    want = create_session(model).run(None, x)[0]
    for path in (opt, ort_file):
        got = deployment_session(str(path), TARGETS["cpu"].with_session(optimization="disable")).run(None, x)[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(onnx.load(opt).graph.node) < len(model.graph.node)  # onnxruntime's own rewrites (Identity gone)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxforge-")]  # no temporary left


def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(1, 16), src)
    before = src.read_bytes()
    assert main(["lower", str(src), "-o", str(src)]) == 2
    assert main(["lower", str(src), "-o", str(tmp_path / "a.onnx"), "--ort", str(tmp_path / "a.onnx")]) == 2
    assert main(["lower", str(src), "--ep-context", str(tmp_path / "ctx.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--ep-context needs --target tensorrt" in err
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
