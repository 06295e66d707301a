"""Lowering for onnxruntime's CPU execution provider (``--target cpu-native``): NCHWc layout."""
