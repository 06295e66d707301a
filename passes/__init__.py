"""Rewriting passes, one module per pass family."""
