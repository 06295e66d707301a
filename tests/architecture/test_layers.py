"""The layer contract (docs/ARCHITECTURE.md, "Layers"): a module imports only its own layer
or lower ones, the import graph has no cycle, onnxforge modules are imported at module level
(no function-local import to dodge a cycle, except the ones listed here with their reason),
and only the runtime layer touches onnxruntime."""

from __future__ import annotations

import ast

import networkx as nx
import pytest
from importgraph import ROOT, edges, modules

#: Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("onnxforge.errors", "onnxforge.tables", "onnxforge.metrics", "onnxforge.progress")),
    ("kernels", ("onnxforge.kernels",)),
    ("ir", ("onnxforge.ir", "onnxforge.modelio")),
    ("infrastructure", ("onnxforge.passmanager", "onnxforge.rules", "onnxforge.analysis")),
    ("runtime", ("onnxforge.runtime",)),
    ("measurement", ("onnxforge.equivalence", "onnxforge.calibration", "onnxforge.cost", "onnxforge.model_diff")),
    ("passes", ("onnxforge.passes",)),
    ("driver", ("onnxforge.api", "onnxforge.pipelines", "onnxforge.report", "onnxforge.reporting")),
    ("tools", ("onnxforge", "onnxforge.cli", "onnxforge.commands", "onnxforge.conformance", "onnxforge.demo", "onnxforge.fuzz", "onnxforge.models")),
]

#: Function-local imports of onnxforge modules that are there on purpose, with the reason.
LOCAL_IMPORTS = {
    ("onnxforge.passes.graphsurgeon", "onnxforge.ir.graphsurgeon"): (
        "onnx-graphsurgeon is loaded only when a user's script runs, not by `import onnxforge.passes`"
    ),
}


def layer_of(module: str) -> int:
    best, length = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = i, len(p)
    return best


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer_of(m) < 0] == []


def test_no_module_imports_a_higher_layer():
    bad = [
        f"{e.source} ({LAYERS[layer_of(e.source)][0]}) imports {e.target} ({LAYERS[layer_of(e.target)][0]}), line {e.line}"
        for e in edges()
        if layer_of(e.target) > layer_of(e.source)
    ]
    assert bad == []


def test_the_import_graph_has_no_cycle():
    g = nx.DiGraph((e.source, e.target) for e in edges())
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert cycles == []


def test_onnxforge_modules_are_imported_at_module_level():
    local = {(e.source, e.target) for e in edges() if e.local}
    assert sorted(local - set(LOCAL_IMPORTS)) == []


def _imports_of(path) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
    return out


def test_only_the_runtime_layer_imports_onnxruntime():
    users = sorted(
        m
        for m, path in modules().items()
        if any(name == "onnxruntime" or name.startswith("onnxruntime.") for name in _imports_of(path))
        and not m.startswith("onnxforge.runtime.")
    )
    assert users == []


def test_only_the_session_factory_opens_sessions():
    openers = sorted(m for m, path in modules().items() if "InferenceSession(" in path.read_text())
    assert openers == ["onnxforge.runtime.options"]


@pytest.mark.parametrize("module", ["onnxforge.ir", "onnxforge.kernels.table", "onnxforge.passmanager"])
def test_low_layers_import_no_high_layer_at_run_time(module):
    """The static check above, confirmed at run time in a fresh interpreter: importing a low
    layer loads nothing from the driver or the passes."""
    import subprocess
    import sys

    code = (
        f"import sys, {module}; "
        "bad = [m for m in sys.modules if m.startswith(('onnxforge.api', 'onnxforge.passes', 'onnxforge.pipelines'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
