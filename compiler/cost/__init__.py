"""The cost model: what a model costs to run (MACs, FLOPs, parameters, weight bytes, peak
activation memory) and a roofline latency estimate per target.

Usage::

    from onnxforge.cost import analyze
    report = analyze(ir_model, shapes={"pixel_values": (1, 3, 224, 224)}, target="cpu")
    report.totals.macs, report.to_dict()

Formulas per operator live in :mod:`onnxforge.kernels.costs`; counting rules are in
:mod:`onnxforge.cost.analysis` and ``docs/COST_MODEL.md``.
"""

from onnxforge.analysis.shapes import ShapeBindings, parse_dim_spec, parse_shape_spec
from onnxforge.cost.analysis import CostReport, CostTotals, NodeCost, analyze
from onnxforge.cost.roofline import PROFILES, TargetProfile, get_profile

__all__ = [
    "PROFILES",
    "CostReport",
    "CostTotals",
    "NodeCost",
    "ShapeBindings",
    "TargetProfile",
    "analyze",
    "get_profile",
    "parse_dim_spec",
    "parse_shape_spec",
]
