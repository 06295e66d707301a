"""Error measures between a reference and a candidate output: SQNR, cosine similarity, and the
positions that count when a padding mask says which are real. Pure numpy, used by
verification, calibration and every lossy pass's budget."""
