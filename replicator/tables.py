"""Plain-text tables of `status` and `offsets translate`."""

from __future__ import annotations


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, as the Kafka command-line tools print them."""
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def dash(value: int | None) -> str:
    return "-" if value is None else str(value)
