"""A session as the API shows it."""

from __future__ import annotations

from typing import Any


def to_api(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["Checks"] = list(row["NodeChecks"])  # the pre-1.7 field, still read by older clients
    return out
