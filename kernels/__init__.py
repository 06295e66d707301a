"""Per-op knowledge: numpy reference kernels and cost formulas."""
