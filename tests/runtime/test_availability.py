"""`--target cuda` without onnxruntime-gpu or without a GPU: the documented one-line error
(exit 2), or with --fallback a warning and the fallback target."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
from lowering_models import matmuls

from onnxforge.cli import main
from onnxforge.runtime import availability as av
from onnxforge.runtime.target import CPU_EP, CUDA_EP, TARGETS, TENSORRT_EP, SessionConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "LOWERING.md"
CPU_ONLY = [CPU_EP, "AzureExecutionProvider"]
GPU_BUILD = [TENSORRT_EP, CUDA_EP, CPU_EP]


def test_missing_provider_and_missing_gpu_give_the_documented_messages():
    cases = {
        ("cuda", "provider"): av.availability(TARGETS["cuda"], providers=CPU_ONLY, gpus=0),
        ("cuda", "gpu"): av.availability(TARGETS["cuda"], providers=GPU_BUILD, gpus=0),
        ("tensorrt", "provider"): av.availability(TARGETS["tensorrt"], providers=[CUDA_EP, CPU_EP], gpus=1),
        ("tensorrt", "gpu"): av.availability(TARGETS["tensorrt"], providers=GPU_BUILD, gpus=0),
    }
    for key, found in cases.items():
        assert (found.target, found.missing) == key
        assert found.message() == av.MESSAGES[key]
        assert "\n" not in found.message()
    assert av.availability(TARGETS["cuda"], providers=GPU_BUILD, gpus=1).ok
    assert av.availability(TARGETS["cpu"], providers=CPU_ONLY, gpus=0).ok


def test_every_message_is_documented_word_for_word():
    doc = " ".join(DOC.read_text().split())
    for msg in av.MESSAGES.values():
        assert f"onnxforge: error: {msg}" in doc


def test_resolve_fails_or_falls_back_with_a_warning(caplog):
    with pytest.raises(av.TargetUnavailable) as err:
        av.resolve(TARGETS["cuda"], providers=CPU_ONLY, gpus=0)
    assert err.value.exit_code == 2 and str(err.value) == av.MESSAGES[("cuda", "provider")]
    tuned = TARGETS["cuda"].with_session(threads=3)
    with caplog.at_level(logging.WARNING, logger="onnxforge"):
        got = av.resolve(tuned, TARGETS["cpu"], providers=CPU_ONLY, gpus=0)
    assert got.name == "cpu" and got.session == SessionConfig(threads=3)  # the session options come along
    assert "running on --target cpu as --fallback asks" in caplog.text
    # tensorrt -> cuda fallback is itself checked
    with pytest.raises(av.TargetUnavailable, match="needs an NVIDIA GPU"):
        av.resolve(TARGETS["tensorrt"], TARGETS["cuda"], providers=[CUDA_EP, CPU_EP], gpus=0)


def test_a_provider_onnxruntime_dropped_is_caught_after_the_session():
    av.check_session(TARGETS["cuda"], [CUDA_EP, CPU_EP])
    with pytest.raises(av.TargetUnavailable, match="could not start CUDAExecutionProvider"):
        av.check_session(TARGETS["cuda"], [CPU_EP])


def _expected_here(target: str) -> str | None:
    found = av.availability(TARGETS[target])
    return None if found.ok else av.MESSAGES[(target, found.missing)]


@pytest.mark.parametrize("command", [["bench"], ["tune", "--no-grid"], ["lower"]])
def test_cli_target_cuda_here(command, tmp_path, capsys):
    expected = _expected_here("cuda")
    if expected is None:
        pytest.skip("this machine can run --target cuda")
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(1, 16), src)
    code = main([command[0], str(src), "--target", "cuda", *command[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"onnxforge: error: {expected}\n"  # exactly one line, exactly as documented
    assert not (tmp_path / "m.session.json").exists()


def test_cli_fallback_runs_on_cpu_with_a_warning(tmp_path, capsys):
    if _expected_here("cuda") is None:
        pytest.skip("this machine can run --target cuda")
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(1, 16), src)
    assert main(["bench", str(src), "--target", "cuda", "--fallback", "cpu", "--seconds", "0", "--runs", "3", "--warmup", "1"]) == 0
    out, err = capsys.readouterr()
    assert "target cpu: CPUExecutionProvider" in out
    assert "--target cuda cannot run here" in err and "running on --target cpu" in err
