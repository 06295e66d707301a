"""Third-party passes through the ``onnxforge.passes`` entry-point group.

Each test writes a distribution onto ``sys.path`` by hand (a ``*.dist-info`` folder with
METADATA and entry_points.txt beside the plugin's module), which is all
``importlib.metadata`` reads: no pip install needed.
"""

from __future__ import annotations

import logging
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import onnxforge.passes as registry
from onnxforge.cli import main
from onnxforge.passes import plugins

PLUGIN_CODE = '''
from dataclasses import dataclass

from onnxforge.ir import bypass
from onnxforge.passmanager import Pass, PassOptions, PassResult


@dataclass(frozen=True)
class DropIdentityOptions(PassOptions):
    keep_outputs: bool = True


class DropIdentity(Pass[DropIdentityOptions]):
    name = "demo-drop-identity"
    summary = "Remove Identity nodes (a plugin's pass)."
    lossless = True
    Options = DropIdentityOptions

    def run(self, model, ctx):
        removed = 0
        for node in list(model.graph.nodes):
            if node.op_type == "Identity":
                bypass(node)
                removed += 1
        return PassResult(modified=removed > 0, stats={"removed": removed})


class Other(Pass):
    name = "demo-other"
    summary = "Does nothing."
    lossless = True

    def run(self, model, ctx):
        return PassResult(False)


class Clash(Other):
    name = "constant-folding"


class NoRun(Pass):
    name = "demo-no-run"
    lossless = True


def family():
    return [Other]


def raises():
    raise RuntimeError("plugin exploded")
'''


def _write_distribution(root: Path, module: str, entries: dict[str, str]) -> None:
    info = root / f"demo_plugin_{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: demo-plugin-{module}\nVersion: 1.0\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[onnxforge.passes]\n{lines}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(PLUGIN_CODE))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder on sys.path for a plugin distribution, and a module name unique to the test;
    the plugin cache is dropped before and after."""
    module = f"demo_plugin_{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_state", None)
    yield tmp_path, module
    plugins._state = None
    sys.modules.pop(module, None)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    handler = _Lines()
    logger = logging.getLogger(plugins.__name__)
    level = logger.level
    logger.setLevel(logging.WARNING)  # an earlier `main(["...", "-q"])` left the package logger at ERROR
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def _identity_model(path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Identity", ["x"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)


def test_a_class_and_a_function_entry_point_register_their_passes(plugin_dir, warnings):
    root, mod = plugin_dir
    _write_distribution(root, mod, {"drop": f"{mod}:DropIdentity", "family": f"{mod}:family"})
    names = [cls.name for cls in registry.registered_passes()]
    assert names[: len(registry.ALL_PASSES)] == [cls.name for cls in registry.ALL_PASSES]
    assert {"demo-drop-identity", "demo-other"} <= set(names)
    assert registry.get_pass("demo-drop-identity").__module__ == mod
    assert warnings == []


def test_plugins_load_lazily_and_only_once(plugin_dir):
    root, mod = plugin_dir
    _write_distribution(root, mod, {"drop": f"{mod}:DropIdentity"})
    registry.get_pass("constant-folding")  # a built-in name never consults the plugins
    assert plugins._state is None and mod not in sys.modules
    registry.get_pass("demo-drop-identity")
    state = plugins._state
    registry.registered_passes()
    assert plugins._state is state and mod in sys.modules


def test_broken_plugins_are_skipped_with_one_line_each(plugin_dir, warnings):
    root, mod = plugin_dir
    _write_distribution(
        root,
        mod,
        {
            "good": f"{mod}:DropIdentity",
            "missing": "no_such_module_anywhere:Pass",
            "explodes": f"{mod}:raises",
            "clash": f"{mod}:Clash",
            "norun": f"{mod}:NoRun",
            "notapass": f"{mod}:DropIdentityOptions",
        },
    )
    names = {cls.name for cls in registry.registered_passes()}
    assert "demo-drop-identity" in names and "demo-no-run" not in names
    assert registry.get_pass("constant-folding").__module__.startswith("onnxforge.")
    assert len(warnings) == 5 and all("\n" not in w for w in warnings)
    text = " | ".join(warnings)
    for entry in ("missing = no_such_module_anywhere:Pass", f"explodes = {mod}:raises", "clash", "norun", "notapass"):
        assert entry in text
    assert f"demo-plugin-{mod}" in text  # the distribution is named
    assert "plugin exploded" in text and "built-in pass" in text and "does not implement run()" in text


def test_the_cli_lists_runs_and_configures_a_plugin_pass(plugin_dir, tmp_path, capsys):
    root, mod = plugin_dir
    _write_distribution(root, mod, {"drop": f"{mod}:DropIdentity"})
    assert main(["passes"]) == 0
    assert "demo-drop-identity" in capsys.readouterr().out
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    _identity_model(src)
    args = ["compile", str(src), "-o", str(out), "-q", "--passes", "demo-drop-identity"]
    assert main([*args, "--option", "demo-drop-identity.keep_outputs=false"]) == 0
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Relu"]
    assert main([*args, "--option", "demo-drop-identity.nope=1"]) == 2
    assert "has no option 'nope'" in capsys.readouterr().err


def test_a_broken_plugin_never_breaks_unrelated_commands(plugin_dir, tmp_path, capsys):
    root, mod = plugin_dir
    _write_distribution(root, mod, {"missing": "no_such_module_anywhere:Pass"})
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    _identity_model(src)
    assert main(["compile", str(src), "-o", str(out), "-q"]) == 0
    assert main(["analyze", str(src)]) == 0
    assert plugins._state is None  # neither needed the plugins
    capsys.readouterr()
    assert main(["passes"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugin missing = no_such_module_anywhere:Pass" in err and "skipped" in err
    assert main(["compile", str(src), "-o", str(out), "--passes", "demo-missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown pass 'demo-missing'" in err and "plugins that failed to load: missing" in err
