"""Writing command output: bytes-safe lines and Consul-style aligned columns."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def out(text: str | bytes = "") -> None:
    """One line on stdout. KV values are arbitrary bytes, so text goes out as UTF-8 with surrogates kept."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.write(data + b"\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def columns(rows: Sequence[Sequence[object]], gap: int = 2) -> str:
    """Left-aligned columns separated by at least `gap` spaces, the last column unpadded.

    gap=2 reproduces Consul's columnize output (`members`, `catalog nodes`, `list-peers`), gap=6 its
    tabwriter output (`kv get -detailed`, `catalog services -tags`).
    """
    cells = [[str(c) for c in row] for row in rows]
    widths: list[int] = []
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i] + gap) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(padded) + (row[-1] if row else "")).rstrip())
    return "\n".join(lines)
