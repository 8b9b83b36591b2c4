"""Consul's ``Session`` (agent/structs/structs.go): the decoding and validation of a /v1/session/create body,
the checks that bind a session, and the API encoding.

A session is a ``dict`` keyed by Consul's field names, which are also its JSON names. Every message here is
Consul's, word for word: clients and the integration tests compare them.
"""

from __future__ import annotations

from typing import Any

from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed
from buoy.durations import format_duration

Session = dict[str, Any]

FIELDS = {"ID", "Name", "Node", "LockDelay", "Checks", "NodeChecks", "ServiceChecks", "Behavior", "TTL",
          "Namespace", "Partition", "WriteRequest"}
BEHAVIORS = ("release", "delete")
MIN_TTL, MAX_TTL, MAX_LOCK_DELAY, DEFAULT_LOCK_DELAY = 10.0, 86400.0, 60.0, 15.0
SERF_HEALTH = "serfHealth"  # the node check every session is bound to unless the body names others


def decode(body: Any, session_id: str, default_node: str) -> Session:
    """The session a create body asks for, each field checked as it is read (the lock delay, the behavior, the
    TTL, then the checks), so a body with several problems always gets the same answer. The ID is the
    proposer's, so that every server applies the same one; the node defaults to the agent's."""
    f = Fields(body, "Session", FIELDS)
    delay = _lock_delay(f)
    if delay < 0 or delay > MAX_LOCK_DELAY:
        raise Failed(f"Lock delay must be between 0s and {format_duration(MAX_LOCK_DELAY)}")
    behavior = f.str("Behavior", BEHAVIORS[0]) or BEHAVIORS[0]
    if behavior not in BEHAVIORS:
        raise Failed(f"Invalid Behavior setting '{behavior}'")
    ttl_text = ""
    if f.has("TTL"):
        ttl = f.duration("TTL")
        assert ttl is not None
        if ttl and not MIN_TTL <= ttl <= MAX_TTL:
            raise Failed(f"Invalid Session TTL '{f.raw('TTL')}', must be between [10s=24h0m0s]")
        ttl_text = format_duration(ttl) if ttl else ""
    if f.has("NodeChecks"):
        node_checks = f.str_list("NodeChecks")
    elif f.has("Checks"):
        node_checks = f.str_list("Checks")  # the pre-1.7 field
    else:
        node_checks = [SERF_HEALTH]
    service_checks = _service_checks(f)
    return {
        "ID": session_id,
        "Name": f.str("Name"),
        "Node": f.str("Node") or default_node,
        "LockDelay": int(delay * 1e9),
        "Behavior": behavior,
        "TTL": ttl_text,
        "NodeChecks": node_checks,
        "ServiceChecks": service_checks or None,
    }


def _lock_delay(f: Fields) -> float:
    raw = f.raw("LockDelay")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw < 1000:
        return float(raw)  # Consul reads small bare numbers as seconds
    delay = f.duration("LockDelay", DEFAULT_LOCK_DELAY)
    assert delay is not None
    return delay


def _service_checks(f: Fields) -> list[dict[str, str]]:
    raw = f.raw("ServiceChecks", [])
    if not isinstance(raw, list):
        raise DecodeFailed("Session.ServiceChecks: expected a list")
    out = []
    for i, item in enumerate(raw):
        sc = Fields(item, f"Session.ServiceChecks[{i}]", {"ID", "Namespace"})
        out.append({"ID": sc.str("ID"), "Namespace": sc.str("Namespace")})
    return out


def bound_to(row: Session, check_id: str) -> bool:
    """Whether the check ``check_id`` on the session's node invalidates it when critical: Consul matches
    service checks by check ID alone, as it matches node checks."""
    return check_id in row["NodeChecks"] or any(c.get("ID") == check_id for c in row["ServiceChecks"] or ())


def to_api(row: Session) -> dict[str, Any]:
    out = dict(row)
    out["Checks"] = list(row["NodeChecks"])  # the pre-1.7 field, still read by older clients
    return out
