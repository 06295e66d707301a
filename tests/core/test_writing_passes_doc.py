"""docs/WRITING_PASSES.md's complete example, run as written: the pass module, its test file
(every test in it), and the plugin packaging (the pyproject's entry points become a dist-info
folder on sys.path, as pip would install them) with the shell commands that use it."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from onnxforge.cli import main
from onnxforge.commands.config_file import tomllib  # tomli on Python 3.10
from onnxforge.passes import plugins

DOC = Path(__file__).resolve().parents[2] / "docs" / "WRITING_PASSES.md"


def _blocks(lang: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## A pass and its test, start to finish"):]
    return re.findall(rf"^```{lang}\n(.*?)^```", section, flags=re.S | re.M)


def _files() -> dict[str, str]:
    """Python blocks whose first line is ``# path/to/file.py``, by path."""
    out = {}
    for block in _blocks("python"):
        first = block.splitlines()[0]
        if first.startswith("# ") and first.endswith(".py"):
            out[first[2:].strip()] = block
    return out


def test_the_example_pass_its_tests_and_the_plugin(tmp_path, monkeypatch, capsys):
    files = _files()
    assert {"my_passes/identity.py", "tests/test_drop_identity.py"} <= set(files)
    for rel, code in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code)
    (tmp_path / "my_passes" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_state", None)
    for name in [m for m in sys.modules if m == "my_passes" or m.startswith("my_passes.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        # the test template: every test function passes
        tests = _load(tmp_path / "tests/test_drop_identity.py")
        names = [n for n in dir(tests) if n.startswith("test_")]
        assert len(names) >= 3
        for name in names:
            getattr(tests, name)()

        # the packaging: entry points as pip writes them
        (toml,) = [b for b in _blocks("toml") if "entry-points" in b]
        project = tomllib.loads(toml)["project"]
        info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
        eps = project["entry-points"]["onnxforge.passes"]
        (info / "entry_points.txt").write_text("[onnxforge.passes]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))

        # the shell commands, on a model with an Identity named id0
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
        nodes = [helper.make_node("Identity", ["x"], ["a"], name="id0"), helper.make_node("Relu", ["a"], ["y"])]
        onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]),
                  tmp_path / "model.onnx")
        monkeypatch.chdir(tmp_path)
        (shell,) = _blocks("sh")
        for line in shell.splitlines():
            command = line.split(" #", 1)[0].strip()
            if not command:
                continue
            assert main(shlex.split(command)[1:]) == 0, command
        out = capsys.readouterr().out
        assert "drop-identity (lossless, plugin drop-identity = my_passes.identity:DropIdentity from my-onnxforge-passes" in out
        assert [n.op_type for n in onnx.load(tmp_path / "out.onnx").graph.node] == ["Relu"]
    finally:
        plugins._state = None
        for name in [m for m in sys.modules if m == "my_passes" or m.startswith("my_passes.")]:
            del sys.modules[name]


def _load(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("doc_test_drop_identity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
