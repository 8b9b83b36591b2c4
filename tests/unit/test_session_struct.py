"""Consul's Session without a server: decoding a create body, its limits and messages, the checks that bind
a session, and the API encoding."""

from __future__ import annotations

from typing import Any

import pytest

from buoy.core.decode import DecodeFailed
from buoy.core.errors import Failed
from buoy.core.structs import session

SID = "11111111-1111-4111-8111-111111111111"


def decode(body: Any) -> dict[str, Any]:
    return session.decode(body, SID, "agent-node")


def test_defaults_and_field_order() -> None:
    row = decode(None)
    assert row == {"ID": SID, "Name": "", "Node": "agent-node", "LockDelay": 15_000_000_000, "Behavior": "release",
                   "TTL": "", "NodeChecks": ["serfHealth"], "ServiceChecks": None}
    assert list(row) == ["ID", "Name", "Node", "LockDelay", "Behavior", "TTL", "NodeChecks", "ServiceChecks"]


def test_decoding() -> None:
    row = decode({"name": "n", "Node": "n2", "LockDelay": 5, "Behavior": "delete", "TTL": "3600s",
                  "Checks": ["old"], "ServiceChecks": [{"ID": "c", "Namespace": ""}]})
    assert (row["Name"], row["Node"], row["LockDelay"], row["Behavior"], row["TTL"]) == (
        "n", "n2", 5_000_000_000, "delete", "1h0m0s")
    assert row["NodeChecks"] == ["old"] and row["ServiceChecks"] == [{"ID": "c", "Namespace": ""}]
    # Large bare numbers are nanoseconds; NodeChecks wins over the pre-1.7 Checks.
    row = decode({"LockDelay": 2_000_000_000, "NodeChecks": [], "Checks": ["old"], "TTL": "0s"})
    assert (row["LockDelay"], row["NodeChecks"], row["TTL"]) == (2_000_000_000, [], "")


@pytest.mark.parametrize(("body", "message"), [
    ({"LockDelay": "61s"}, "Lock delay must be between 0s and 1m0s"),
    ({"LockDelay": -1}, "Lock delay must be between 0s and 1m0s"),
    ({"Behavior": "keep"}, "Invalid Behavior setting 'keep'"),
    ({"TTL": "9s"}, "Invalid Session TTL '9s', must be between [10s=24h0m0s]"),
    ({"TTL": "25h"}, "Invalid Session TTL '25h', must be between [10s=24h0m0s]"),
    # One order whatever the body: the lock delay, then the behavior, then the TTL.
    ({"TTL": "1s", "Behavior": "keep", "LockDelay": "2m"}, "Lock delay must be between 0s and 1m0s"),
])
def test_limits(body: dict[str, Any], message: str) -> None:
    with pytest.raises(Failed) as err:
        decode(body)
    assert err.value.message == message


@pytest.mark.parametrize(("body", "detail"), [
    ({"Nope": 1}, "Session: unknown field 'Nope'"),
    ({"ServiceChecks": {}}, "Session.ServiceChecks: expected a list"),
    ({"ServiceChecks": [{"Name": "x"}]}, "Session.ServiceChecks[0]: unknown field 'Name'"),
    ({"NodeChecks": "serfHealth"}, "Session.NodeChecks: expected a list of strings"),
    ({"TTL": "soon"}, "Session.TTL: invalid duration 'soon'"),
])
def test_decode_failures(body: dict[str, Any], detail: str) -> None:
    with pytest.raises(DecodeFailed) as err:
        decode(body)
    assert err.value.detail == detail


def test_bound_to_checks_by_id_and_to_api() -> None:
    row = decode({"NodeChecks": ["serfHealth"], "ServiceChecks": [{"ID": "web-check"}]})
    assert session.bound_to(row, "serfHealth") and session.bound_to(row, "web-check")
    assert not session.bound_to(row, "other")
    assert session.to_api(row) == {**row, "Checks": ["serfHealth"]}
