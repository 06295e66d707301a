"""``onnxforge passes``: every pipeline with its steps, check and flags, every pass with its
options, one pipeline as a tree; and the user guide's reference is what the code says now."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxforge.cli import main
from onnxforge.commands import compile as compile_command
from onnxforge.commands.config_file import config_keys
from onnxforge.commands.reference import BEGIN, END, PIPELINE_FLAGS, generated_block, markdown, option_rows
from onnxforge.passes import ALL_PASSES
from onnxforge.pipelines import PIPELINES

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "USER_GUIDE.md"


def test_the_listing_names_every_pipeline_pass_and_option(capsys):
    assert main(["passes"]) == 0
    text = capsys.readouterr().out
    for name in PIPELINES:
        assert f"\n  {name}\n" in text
    assert "steps: [optimize], quantize-int8" in text and "repeat(constant-folding" in text
    for cls in ALL_PASSES:
        assert f"\n  {cls.name} (" in text
        for option, _, _ in option_rows(cls.Options):
            assert f"{option}=" in text, (cls.name, option)
    assert "--verify: lossy: every output's cosine >= 0.99" in text


def test_one_pipeline_as_a_tree_for_a_target(capsys):
    assert main(["passes", "int8", "--target", "tensorrt"]) == 0
    text = capsys.readouterr().out
    assert "quantize-int8  (policy='tensorrt')" in text
    assert "\n  optimize\n    lossless\n      normalize-constants\n" in text
    assert "cleanup-to-fixed-point: repeat until a round changes nothing (at most 8 rounds)" in text
    assert main(["passes", "optimize", "--target", "cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "  fuse-onnxruntime" in "\n".join(data["tree"])
    assert main(["passes", "nope"]) == 2 and "unknown pipeline 'nope'" in capsys.readouterr().err


def test_json_has_the_pipelines_steps():
    from contextlib import redirect_stdout
    from io import StringIO

    buf = StringIO()
    with redirect_stdout(buf):
        assert main(["passes", "--json"]) == 0
    data = json.loads(buf.getvalue())
    assert data["pipelines"]["int8"]["steps"] == "[optimize], quantize-int8"
    assert data["pipelines"]["prune"]["flags"][0] == "--sparsity"


def test_pipeline_flags_are_compile_flags():
    parser = argparse.ArgumentParser()
    compile_command.add_arguments(parser)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert set(PIPELINE_FLAGS) <= set(PIPELINES)
    assert [f for fs in PIPELINE_FLAGS.values() for f in fs if f not in flags] == []


def test_the_user_guide_reference_is_current():
    """docs/USER_GUIDE.md carries the generated reference; regenerate it with
    `python -m onnxforge.commands.update_reference docs/USER_GUIDE.md` when this fails."""
    text = GUIDE.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    assert generated_block(text) == markdown()
    for name in PIPELINES:
        assert f"#### `{name}`" in text
    for cls in ALL_PASSES:
        assert f"#### `{cls.name}`" in text
        for option, _, _ in option_rows(cls.Options):
            assert f"| `{option}` |" in text, (cls.name, option)
    parser = argparse.ArgumentParser()
    compile_command.add_arguments(parser)
    for key in config_keys(parser):
        assert f"| `{key}` |" in text, key
