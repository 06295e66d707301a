"""``onnxforge compile --config FILE.toml``: every flag has a key, the file and the flags agree,
explicit flags win, and mistakes are one-line usage errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
import pytest

from onnxforge.cli import build_parser, main
from onnxforge.commands import compile as compile_command
from onnxforge.commands.config_file import NOT_IN_CONFIG, OPTION_KEY, apply_config, config_keys, key_of
from onnxforge.models.cnn import small_cnn


def _compile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    compile_command.add_arguments(parser)
    return parser


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_every_compile_flag_has_a_config_key_or_a_reason():
    parser = _compile_parser()
    keys = config_keys(parser)
    missing = [a.option_strings or a.dest for a in _flags(parser) if key_of(a) not in keys and key_of(a) not in NOT_IN_CONFIG]
    assert missing == []
    # every exclusion names a real flag and says why
    known = {key_of(a) for a in parser._actions}
    assert set(NOT_IN_CONFIG) <= known and all(NOT_IN_CONFIG.values())
    assert {"pipeline", "passes", "disable", "option", "target", "verify", "calibration", "sparsity", "bits",
            "min-cosine", "structured", "output"} <= set(keys)


def _sample(action: argparse.Action) -> tuple[object, list[str]]:
    """A value for the key and the command-line flags that say the same."""
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction):
        return True, [flag]
    if action.dest == OPTION_KEY:
        return {"constant-folding": {"size_limit": 1024, "fold_shapes": False}}, [
            flag, "constant-folding.size_limit=1024", flag, "constant-folding.fold_shapes=false"]
    if isinstance(action, argparse._AppendAction):
        return ["a=1", "b=2"], [flag, "a=1", flag, "b=2"]
    if action.choices is not None:
        choice = list(action.choices)[-1]
        return choice, [flag, str(choice)]
    if action.type is int:
        return 3, [flag, "3"]
    if action.type is float:
        return 0.25, [flag, "0.25"]
    return "some-text", [flag, "some-text"]


def test_each_key_means_what_its_flag_means(tmp_path):
    """For every key, the file and the flag leave the same value in the parsed arguments."""
    parser = _compile_parser()
    for key, action in config_keys(parser).items():
        value, argv = _sample(action)
        from_cli = parser.parse_args(["m.onnx", *argv])
        cfg = tmp_path / "c.toml"
        if isinstance(value, dict):
            cfg.write_text("".join(f"[option.{p}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in o.items())
                                   for p, o in value.items()))
        else:
            cfg.write_text(f"{key} = {json.dumps(value)}\n")
        from_file = apply_config(parser.parse_args(["m.onnx", "--config", str(cfg)]), parser)
        got, want = getattr(from_file, action.dest), getattr(from_cli, action.dest)
        if action.dest == OPTION_KEY:
            got, want = sorted(got), sorted(want)
        assert got == want, key


def _model(tmp_path: Path) -> Path:
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn()[0], src)
    return src


def test_a_config_file_runs_a_compile(tmp_path, capsys):
    src = _model(tmp_path)
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(
        f'output = "{tmp_path / "o.onnx"}"\n'
        'passes = ["noop-elimination", "constant-folding", "dead-code-elimination"]\n'
        'disable = ["constant-folding"]\n'
        f'report = "{tmp_path / "r.json"}"\n'
        "verify = true\nno-cost = true\n\n"
        "[option.noop-elimination]\npreserve_signed_zero = true\n"
    )
    assert main(["compile", str(src), "--config", str(cfg), "-q"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    names = [p["name"] for p in report["passes"]]
    assert "noop-elimination" in names and "constant-folding" not in names
    assert report["verified"] is True
    ops = [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node]
    assert "Identity" not in ops and "Shape" in ops  # nothing folded: constant-folding was disabled


def test_flags_on_the_command_line_override_the_file(tmp_path):
    parser = _compile_parser()
    cfg = tmp_path / "c.toml"
    cfg.write_text('pipeline = "int8"\ndisable = ["cse"]\nmin-cosine = 0.9\n'
                   "[option.constant-folding]\nsize_limit = 10\nfold_shapes = false\n")
    argv = ["m.onnx", "--config", str(cfg), "--pipeline", "optimize", "--disable", "fuse",
            "--option", "constant-folding.size_limit=99"]
    args = apply_config(parser.parse_args(argv), parser)
    assert args.pipeline == "optimize"  # given explicitly, even though it is the default
    assert args.disable == ["fuse"]  # a repeatable flag replaces the file's list
    opts = compile_command.parse_options(args.option)
    assert opts == {"constant-folding": {"size_limit": 99, "fold_shapes": False}}  # merged key by key
    assert args.min_cosine == 0.9 and "min_cosine" in args.given  # the file's value counts as chosen


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("pipelin = 'int8'\n", ["unknown key 'pipelin'", "did you mean 'pipeline'", "valid keys: output, pipeline,"]),
        ("verbose = 2\n", ["unknown key 'verbose'", "how much this run logs"]),
        ("verify = 'yes'\n", ["'verify' must be a boolean, got string 'yes'"]),
        ("min-cosine = 'high'\n", ["'min-cosine' must be a number, got string 'high'"]),
        ("bits = 4.5\n", ["'bits' must be an integer, got number 4.5"]),
        ("target = 'gpu'\n", ["'target' must be one of cpu,", "got 'gpu'"]),
        ("disable = 'cse'\n", ["'disable' must be an array of strings, got string 'cse'"]),
        ("pipeline = [\n", ["invalid TOML"]),
        ("[option]\nconstant-folding = 3\n", ["'option' must be a table of tables"]),
        ("[option.constant-foldng]\nsize_limit = 3\n", ["[option.constant-foldng]", "did you mean 'constant-folding'"]),
        ("[option.constant-folding]\nsize = 3\n", ["unknown key 'option.constant-folding.size'", "size_limit"]),
        ("[option.constant-folding]\nsize_limit = 'big'\n", ["'option.constant-folding.size_limit'", "not a valid int"]),
    ],
)
def test_mistakes_are_one_line_usage_errors(tmp_path, capsys, text, expect):
    src = _model(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    code = main(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for part in expect:
        assert part in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_missing_output_and_missing_file(tmp_path, capsys):
    src = _model(tmp_path)
    assert main(["compile", str(src)]) == 2
    assert "compile needs -o/--output (or output in --config)" in capsys.readouterr().err
    assert main(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read config" in err


def test_the_cli_parser_marks_explicit_flags():
    args = build_parser().parse_args(["compile", "m.onnx", "-o", "x.onnx", "--verify", "--pipeline", "optimize"])
    assert {"output", "verify", "pipeline"} <= args.cli_given and "target" not in args.cli_given
