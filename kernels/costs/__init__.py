"""Cost formulas of ONNX operators (MACs and FLOPs from shapes), keyed by (domain, op type).

See :mod:`onnxforge.kernels.costs.registry` for the conventions and the lookups (the package
itself re-exports nothing, so importing a formula module never pulls in the whole table); the cost model that applies
them to a whole model is :mod:`onnxforge.cost`.
"""
