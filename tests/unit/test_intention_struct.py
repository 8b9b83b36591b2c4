"""Consul's Intention without a server: precedence and evaluation order, validation messages, the API
encoding and the hash legacy intentions carry."""

from __future__ import annotations

from typing import Any

import pytest

from buoy.core.decode import DecodeFailed
from buoy.core.errors import Failed, Invalid
from buoy.core.structs import intention as ixn


def row(source: str = "web", destination: str = "db", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ID": "11111111-1111-4111-8111-111111111111", "Description": "d", "SourceNS": "default",
        "SourceName": source, "DestinationNS": "default", "DestinationName": destination, "SourceType": "consul",
        "Action": "allow", "Permissions": None, "Meta": {"b": "2", "a": "1"}, "CreatedAt": 1700000000.25,
        "UpdatedAt": 1700000001.0, "CreateIndex": 5, "ModifyIndex": 7,
    }
    base.update(kw)
    base["Precedence"] = ixn.precedence(source, destination)
    return base


@pytest.mark.parametrize(("source", "destination", "expected"), [
    ("web", "db", 9), ("*", "db", 8), ("web", "*", 6), ("*", "*", 5),
])
def test_precedence(source: str, destination: str, expected: int) -> None:
    assert ixn.precedence(source, destination) == expected


def test_evaluation_order_puts_exact_first_then_names() -> None:
    rows = [row("*", "*"), row("web", "*"), row("*", "db"), row("b", "db"), row("a", "db")]
    assert [(r["SourceName"], r["DestinationName"]) for r in sorted(rows, key=ixn.evaluation_order)] == [
        ("a", "db"), ("b", "db"), ("*", "db"), ("web", "*"), ("*", "*")]


def legacy(**kw: Any) -> dict[str, Any]:
    return ixn.decode({"SourceName": "web", "DestinationName": "db", "Action": "allow", **kw})


@pytest.mark.parametrize(("body", "message"), [
    ({"Action": "maybe"}, "1 error occurred: Action must be set to 'allow' or 'deny'"),
    ({"SourceName": "", "DestinationName": "d*"},
     "2 errors occurred: SourceName must be set; DestinationName: wildcard character '*' cannot be used with "
     "partial values"),
    ({"Meta": {"k" * 129: "v"}}, f'1 error occurred: Meta key "{"k" * 129}" exceeds maximum length 128'),
])
def test_legacy_validation_messages(body: dict[str, Any], message: str) -> None:
    with pytest.raises(Failed) as e:
        ixn.validate_legacy(legacy(**body))
    assert e.value.message == message


def test_legacy_refuses_other_tenancy() -> None:
    with pytest.raises(Invalid, match=r"^Invalid SourceNS\(team\): Namespaces is a Consul Enterprise feature$"):
        ixn.refuse_tenancy(legacy(SourceNS="team"))


@pytest.mark.parametrize(("body", "held", "message"), [
    ({"Action": "sure"}, False, "Sources[2].Action must be set to 'allow' or 'deny'"),
    ({"Action": "allow", "Meta": {"k": "v"}}, True,
     "Meta must not be specified, or should be unchanged during an update."),
    ({"Permissions": [{"Action": "allow", "HTTP": {"PathExact": "x"}}]}, False,
     "Sources[2].Permissions[0].HTTP.PathExact doesn't start with '/': \"x\""),
    ({"Permissions": [{"Action": "allow", "HTTP": {"Methods": ["get", "GET"]}}]}, False,
     'Sources[2].Permissions[0].HTTP.Methods contains "GET" more than once'),
])
def test_upsert_validation_messages(body: dict[str, Any], held: bool, message: str) -> None:
    decoded = ixn.decode({"SourceName": "web", "DestinationName": "db", **body})
    with pytest.raises(Failed) as e:
        ixn.validate_upsert(decoded, 2, held)
    assert e.value.message == message


def test_decode_names_the_field() -> None:
    with pytest.raises(DecodeFailed) as e:
        ixn.decode({"SourceName": 5})
    assert e.value.detail == "Intention.SourceName: expected a string"


@pytest.mark.parametrize(("text", "problem"), [
    ("11111111-1111-4111-8111-111111111111", None),
    ("not-a-uuid", "UUID must be 36 characters"),
    ("1111111z-1111-4111-8111-111111111111", "Invalid UUID: encoding/hex: invalid byte: U+007A 'z'"),
])
def test_uuid_problem(text: str, problem: str | None) -> None:
    assert ixn.uuid_problem(text) == problem


def test_to_api_round_trip() -> None:
    stored = row()
    api = ixn.to_api(stored)
    assert api["CreatedAt"] == "2023-11-14T22:13:20.25Z" and api["UpdatedAt"] == "2023-11-14T22:13:21Z"
    assert "Permissions" not in api
    assert ixn.written(ixn.decode(api)) == ixn.written(stored)


def test_hash_is_stable_and_follows_content() -> None:
    # Pinned: a legacy intention keeps its Hash across Buoy versions; neither Meta order nor times move it.
    assert ixn.to_api(row())["Hash"] == "ZZ+naZ5FSO81oouuAvR8zh6/kHDrAEEnmtPQLFLeCNg="
    assert ixn.content_hash(row(Meta={"a": "1", "b": "2"}, UpdatedAt=2e9)) == ixn.content_hash(row())
    assert ixn.content_hash(row(Action="deny")) != ixn.content_hash(row())


def test_intentions_by_name_have_no_hash_or_times() -> None:
    api = ixn.to_api(row(ID="", CreatedAt=None, UpdatedAt=None))
    assert not {"Hash", "CreatedAt", "UpdatedAt"} & api.keys()


def test_describe() -> None:
    assert ixn.describe(row(ID="")) == "default/web => default/db (Precedence: 9, Action: ALLOW)"
    l7 = row("*", "db", Permissions=[{"Action": "deny"}])
    assert ixn.describe(l7) == ("default/* => default/db (ID: 11111111-1111-4111-8111-111111111111, Precedence: 8, "
                                "Permissions: 1)")
