"""The HTML compile report (``onnxforge compile --report FILE.html``): one standalone page of
inline SVG charts and graph drawings, plus the same numbers as JSON beside it.

Modules, lowest first: :mod:`.sketch` (what a graph looked like, captured cheaply while
compiling), :mod:`.data` (every number the page shows, as one JSON-ready dict),
:mod:`.svg` (bar charts and the pass timeline), :mod:`.graph_svg` (the layered drawing of a
small graph), :mod:`.blocks` (per-block summaries of a large one), :mod:`.page` (the layout).
This package imports nothing at import time so that :mod:`onnxforge.report` can use
:mod:`.sketch` without a cycle.
"""
