"""Compression passes, lossy and checked against an error budget: static int8 QDQ
(:mod:`~onnxforge.passes.compression.int8`), int4 weight-only
(:mod:`~onnxforge.passes.compression.int4`) and float16
(:mod:`~onnxforge.passes.compression.fp16`); pruning and weight sharing belong here too."""
