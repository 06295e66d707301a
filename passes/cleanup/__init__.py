"""Lossless cleanup passes: constant folding, no-op and dead-code elimination, CSE,
initializer deduplication, constant normalization, shape refresh, ordering, opset raising.
One module per pass; every pass here keeps every output (exactly, or within float reordering
tolerance) and the ONNX backend conformance suite checks it."""
