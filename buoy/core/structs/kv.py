"""A KV entry (Consul's ``KVPair``): how the store keeps it and how the API shows it (the value base64, the
``Session`` only while a lock is held)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from buoy.core.decode import Fields
from buoy.core.errors import Invalid, TooLarge


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


MAX_TXN_OPS = 128  # Consul's limit on the operations of one transaction
KV_VERBS = {"set", "cas", "lock", "unlock", "get", "get-or-empty", "get-tree", "check-index", "check-session",
            "check-not-exists", "delete", "delete-tree", "delete-cas"}
KV_FIELDS = {"Verb", "Key", "Value", "Flags", "Index", "Session", "Namespace", "Partition"}


def txn_op(i: int, data: Any) -> dict[str, Any]:
    """The ``KV`` half of operation ``i`` of a /v1/txn body, as the state machine applies it (the value
    decoded from base64)."""
    f = Fields(data, f"Operations[{i}].KV", KV_FIELDS)
    verb = f.str("Verb")
    if verb not in KV_VERBS:
        raise Invalid(f"Operations[{i}].KV: unknown verb {verb!r}")
    key = f.str("Key")
    if key.startswith("/"):
        raise Invalid(f"Operations[{i}].KV: keys must not begin with '/'")
    try:
        value = base64.b64decode(f.str("Value"), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"Operations[{i}].KV.Value: not valid base64") from None
    return {"Verb": verb, "Key": key, "Value": value, "Flags": f.int("Flags"), "Index": f.int("Index"),
            "Session": f.str("Session")}


def txn_ops(data: Any) -> list[dict[str, Any]]:
    """A /v1/txn body: a list of at most MAX_TXN_OPS operations, each a KV one (the only kind Buoy applies)."""
    if not isinstance(data, list):
        raise Invalid("Failed to parse body: expected a JSON list of operations")
    if len(data) > MAX_TXN_OPS:
        raise TooLarge(f"Transaction contains too many operations ({len(data)} > {MAX_TXN_OPS})")
    ops = []
    for i, item in enumerate(data):
        f = Fields(item, f"Operations[{i}]", {"KV", "Node", "Service", "Check"})
        if f.obj("KV") is None:
            raise Invalid(f"Operations[{i}]: only KV operations are supported")
        ops.append(txn_op(i, f.obj("KV")))
    return ops


def txn_done(results: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """A committed transaction's answer, and its index (the highest ModifyIndex among the entries shown)."""
    shown = [{"KV": to_api(r["KV"])} for r in results]
    return {"Results": shown, "Errors": None}, max((r["KV"]["ModifyIndex"] for r in shown), default=0)


def txn_failed(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Results": None, "Errors": errors}
