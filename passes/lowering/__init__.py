"""Lowering: machine-specific rewrites into a runtime's own kernels (``--target cpu-native``)."""
