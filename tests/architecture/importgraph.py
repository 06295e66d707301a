"""The project's import graph, read from the source with ``ast`` (nothing is imported).

Used by the layer-contract tests: every ``import``/``from ... import`` of an ``onnxforge``
module, where it stands (module level or inside a function), with ``if TYPE_CHECKING:``
blocks left out (they never run).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Source folder -> the package it is installed as (pyproject.toml's package-dir).
FOLDERS = {"compiler": "onnxforge", "passes": "onnxforge.passes", "kernels": "onnxforge.kernels", "models": "onnxforge.models"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    local: bool  # inside a function or class body


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the four source folders."""
    out: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


class _Visitor(ast.NodeVisitor):
    def __init__(self, source: str, known: dict[str, Path]) -> None:
        self.source, self.known = source, known
        self.depth = 0
        self.edges: list[Edge] = []

    def _scoped(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _scoped  # noqa: N815

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, target: str, line: int) -> None:
        resolved = _resolve(target, self.known)
        if resolved is not None and resolved != self.source:
            self.edges.append(Edge(self.source, resolved, line, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("onnxforge"):
                self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module or not node.module.startswith("onnxforge"):
            return
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            self._add(full if full in self.known else node.module, node.lineno)


def edges() -> list[Edge]:
    known = modules()
    out: list[Edge] = []
    for name, path in known.items():
        v = _Visitor(name, known)
        v.visit(ast.parse(path.read_text(), str(path)))
        out.extend(v.edges)
    return out


def parents(module: str, known: dict[str, Path]) -> list[str]:
    """The packages Python imports before ``module`` (``a.b.c`` -> ``a``, ``a.b``)."""
    parts = module.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in known]
