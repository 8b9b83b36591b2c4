"""A KV entry (Consul's ``KVPair``): how the store keeps it and how the API shows it (the value base64, the
``Session`` only while a lock is held)."""

from __future__ import annotations

import base64
from typing import Any


def to_api(entry: dict[str, Any]) -> dict[str, Any]:
    value = entry["Value"]
    out: dict[str, Any] = {
        "LockIndex": entry["LockIndex"],
        "Key": entry["Key"],
        "Flags": entry["Flags"],
        "Value": base64.b64encode(value).decode() if value else None,
    }
    if entry.get("Session"):
        out["Session"] = entry["Session"]
    out["CreateIndex"] = entry["CreateIndex"]
    out["ModifyIndex"] = entry["ModifyIndex"]
    return out
