"""Consul's PreparedQuery without a server: decoding a body, the validation messages, and the filters and
responses of an execute."""

from __future__ import annotations

from typing import Any

import pytest

from buoy.core.decode import DecodeFailed
from buoy.core.errors import Failed, Invalid
from buoy.core.structs import query as prepared


def body(**service: Any) -> dict[str, Any]:
    return {"Name": "q", "Service": {"Service": "web", **service}}


def test_decode_fills_every_field_and_keeps_absent_lists_null() -> None:
    q = prepared.decode({"name": "q", "service": {"service": "web", "failover": {"targets": [{"PeerName": "p"}]}}})
    assert q == {
        "ID": "", "Name": "q", "Session": "", "Token": "",
        "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": False},
        "Service": {"Service": "web",
                    "Failover": {"NearestN": 0, "Datacenters": None, "Targets": [{"Peer": "p", "Datacenter": ""}]},
                    "OnlyPassing": False, "IgnoreCheckIDs": None, "Near": "", "Tags": None, "NodeMeta": None,
                    "ServiceMeta": None, "Connect": False},
        "DNS": {"TTL": ""},
    }
    assert prepared.decode(body(Tags=[]))["Service"]["Tags"] == []


@pytest.mark.parametrize(("raw", "detail"), [
    ({"Nope": 1}, "Query: unknown field 'Nope'"),
    ({"Service": {"Failover": {"Targets": {}}}}, "Query.Service.Failover.Targets: expected a list"),
    ({"Service": {"Failover": {"Targets": [{"Cluster": "x"}]}}},
     "Query.Service.Failover.Targets[0]: unknown field 'Cluster'"),
    ({"Service": {"Tags": "a"}}, "Query.Service.Tags: expected a list of strings"),
])
def test_decode_refuses_what_consul_refuses(raw: dict[str, Any], detail: str) -> None:
    with pytest.raises(DecodeFailed) as err:
        prepared.decode(raw)
    assert err.value.detail == detail


@pytest.mark.parametrize(("raw", "problem"), [
    ({"Service": {"Service": "web"}}, "Must be bound to a session"),
    ({"Name": "q", "Token": "<hidden>", "Service": {"Service": "web"}},
     "Bad Token '<hidden>', it looks like a query definition with a redacted token was submitted"),
    ({"Name": "q"}, "Must provide a Service name to query"),
    (body(Failover={"NearestN": -1}), "Bad NearestN '-1', must be >= 0"),
    (body(Failover={"Datacenters": ["dc2"], "Targets": [{"Peer": "p"}]}),
     "Targets cannot be populated with NearestN or Datacenters"),
    ({**body(), "DNS": {"TTL": "10"}}, "Bad DNS TTL '10': time: missing unit in duration \"10\""),
    ({**body(), "DNS": {"TTL": "soon"}}, "Bad DNS TTL 'soon': time: invalid duration \"soon\""),
    ({**body(), "DNS": {"TTL": "-1s"}}, "DNS TTL '-1000000000', must be >=0"),
])
def test_validate_messages(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(Failed) as err:
        prepared.validate(prepared.decode(raw))
    assert err.value.message == f"Invalid prepared query: {problem}"


def test_validate_accepts_a_template_without_a_name_and_a_zero_ttl() -> None:
    prepared.validate(prepared.decode({"Template": {"Type": "name_prefix_match"}, "Service": {"Service": "x"},
                                       "DNS": {"TTL": "0"}}))


def entry(tags: list[str], meta: dict[str, str] | None = None, node_meta: dict[str, str] | None = None,
          *statuses: tuple[str, str]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    checks = [{"CheckID": cid, "Status": status} for cid, status in statuses]
    return {"Meta": node_meta or {}}, {"Tags": tags, "Meta": meta or {}}, checks


@pytest.mark.parametrize(("service", "instance", "selected"), [
    ({}, entry([]), True),
    ({}, entry([], None, None, ("c", "warning")), True),
    ({}, entry([], None, None, ("c", "critical")), False),
    ({}, entry([], None, None, ("c", "maintenance")), False),
    ({"OnlyPassing": True}, entry([], None, None, ("c", "warning")), False),
    ({"IgnoreCheckIDs": ["c"]}, entry([], None, None, ("c", "critical")), True),
    ({"Tags": ["Primary", "!old"]}, entry(["primary", "v2"]), True),
    ({"Tags": ["primary"]}, entry(["v2"]), False),
    ({"Tags": ["!old"]}, entry(["OLD"]), False),
    ({"NodeMeta": {"rack": "a"}}, entry([], None, {"rack": "a"}), True),
    ({"NodeMeta": {"rack": "a"}}, entry([], None, {"rack": "b"}), False),
    ({"ServiceMeta": {"v": "2"}}, entry([], {"v": "2"}), True),
    ({"ServiceMeta": {"v": "2"}}, entry([]), False),
])
def test_selects(service: dict[str, Any], instance: tuple[Any, Any, Any], selected: bool) -> None:
    assert prepared.selects(prepared.decode(body(**service)), *instance) is selected


def test_responses_and_connect() -> None:
    q = prepared.decode({**body(), "DNS": {"TTL": "5s"}})
    assert prepared.service_name(q) == "web"
    assert prepared.explain_response(q) == {"Query": q}
    assert prepared.execute_response(q, [], "dc1") == {"Service": "web", "Nodes": [], "DNS": {"TTL": "5s"},
                                                        "Datacenter": "dc1", "Failovers": 0}
    prepared.refuse_connect(q, asked=False)
    for refused, asked in ((q, True), (prepared.decode(body(Connect=True)), False)):
        with pytest.raises(Invalid, match="^Connect must be enabled in order to use this endpoint$"):
            prepared.refuse_connect(refused, asked)


def test_an_execute_response_reads_its_service_nodes_and_ttl() -> None:
    answer = prepared.read_execute_response({"Service": "web", "Nodes": [], "DNS": {"TTL": "10s"}})
    assert answer == prepared.ExecuteAnswer("web", [], "10s")
    assert prepared.read_execute_response(None) == prepared.ExecuteAnswer("", None, "")
    assert prepared.read_execute_response({"DNS": None}).dns_ttl == ""
