"""Quantization passes: QDQ insertion (static int8) and the target policies behind it."""
