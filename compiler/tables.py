"""Readable plain-text tables for reports and the command line (no dependencies, lowest layer)."""

from __future__ import annotations


def format_table(header: list[str], rows: list[list[str]], *, left: tuple[int, ...] = ()) -> list[str]:
    """Plain-text table: the first column and those in ``left`` left-aligned, numbers right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    left_cols = {0, *left}

    def line(cells: list[str]) -> str:
        parts = [str(c).ljust(widths[i]) if i in left_cols else str(c).rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return [line(header), sep, *(line(r) for r in rows)]


__all__ = ["format_table"]
