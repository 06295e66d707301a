"""Seeded model builders (code, not binaries) used by tests, demos and benchmarks."""
