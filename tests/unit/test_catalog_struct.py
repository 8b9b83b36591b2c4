"""Consul's catalog objects without a server: decoding a registration and a deregistration, the messages a bad
one gets, and the rows and API shapes built from them."""

from __future__ import annotations

from typing import Any

import pytest

from buoy.core.decode import DecodeFailed
from buoy.core.errors import Invalid
from buoy.core.structs import catalog


def test_registration_takes_the_default_datacenter_and_fills_checks() -> None:
    reg = catalog.parse_registration({
        "node": "n1", "Address": "10.0.0.1", "NodeMeta": {"rack": "a"},
        "Service": {"Service": "web", "Port": 80, "Connect": {"Native": True}},
        "Check": {"Name": "ping", "Definition": {"Interval": "10s"}},
    }, "dc1")
    assert reg["Datacenter"] == "dc1"
    assert reg["Meta"] == {"rack": "a"}
    assert reg["Service"]["ID"] == "web"
    assert reg["Service"]["Connect"] == {"Native": True}
    assert "Proxy" not in reg["Service"]
    [check] = reg["Checks"]
    assert list(check) == ["Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "Type",
                           "Interval", "Timeout", "ExposedPort", "Definition"]
    assert (check["Node"], check["CheckID"], check["Status"], check["Interval"]) == ("n1", "ping", "critical", "10s")


@pytest.mark.parametrize(("body", "message"), [
    ({"Address": "a"}, "Missing node name"),
    ({"Node": "n1"}, "Missing node address"),
    ({"Node": "n1", "Address": "a", "Checks": [{"Status": "passing"}]}, "Missing check name"),
    ({"Node": "n1", "Address": "a", "Checks": [{"Name": "c", "Status": "up"}]}, "Invalid check status 'up'"),
    ({"Node": "n1", "Address": "a", "Checks": [{"Name": "c", "Node": "n2"}]},
     "Check node 'n2' does not match registration node 'n1'"),
    ({"Node": "n1", "Address": "a", "Service": {"Port": 1}}, "Missing service name"),
])
def test_registration_refusals(body: dict[str, Any], message: str) -> None:
    with pytest.raises(Invalid) as e:
        catalog.parse_registration(body, "dc1")
    assert e.value.message == message


def test_registration_refuses_unknown_fields_by_their_path() -> None:
    with pytest.raises(DecodeFailed) as e:
        catalog.parse_registration({"Node": "n1", "Address": "a", "Checks": [{"Name": "c", "Bogus": 1}]}, "dc1")
    assert e.value.detail == "Checks[0]: unknown field 'Bogus'"


def test_deregistration() -> None:
    assert catalog.parse_deregistration({"Node": "n1", "CheckID": "c"}) == ("n1", "", "c")
    with pytest.raises(Invalid, match="Missing node name"):
        catalog.parse_deregistration({"ServiceID": "web"})


def svc(name: str, sid: str = "", tags: list[str] | None = None) -> dict[str, Any]:
    return {"ID": sid or name, "Service": name, "Tags": tags or []}


def test_service_tags_merges_instances_and_keeps_names_as_registered() -> None:
    assert catalog.service_tags([svc("web", "w1", ["a", "b"]), svc("Web", "w2"), svc("web", "w3", ["b", "c"]),
                                 svc("db")]) == {"Web": [], "db": [], "web": ["a", "b", "c"]}


def test_node_services_as_map_and_as_list() -> None:
    node = {"Node": "n1"}
    assert catalog.node_services(node, [svc("web")]) == {
        "Node": node, "Services": {"web": {"ID": "web", "Service": "web", "Tags": [], "Kind": ""}}}
    assert catalog.node_service_list(node, [svc("web")])["Services"] == [
        {"ID": "web", "Service": "web", "Tags": [], "Kind": ""}]


def test_matching() -> None:
    assert catalog.has_tags(svc("web", tags=["a", "b"]), ["b", "a"])
    assert not catalog.has_tags(svc("web", tags=["a"]), ["a", "b"])
    assert catalog.has_node_meta({"Meta": {"rack": "a", "os": "linux"}}, [("rack", "a")])
    assert not catalog.has_node_meta({"Meta": {}}, [("rack", "")])
    checks = [{"Status": "passing"}, {"Status": "warning"}]
    assert catalog.all_passing(checks[:1]) and not catalog.all_passing(checks)
    assert [catalog.in_state(c, "warning") for c in checks] == [False, True]
    assert all(catalog.in_state(c, catalog.HEALTH_ANY) for c in checks)


def test_stored_node_keeps_its_id_and_create_index() -> None:
    reg = {"Node": "n1", "Address": "a", "Datacenter": "dc1", "ID": "", "Service": None, "Checks": []}
    first = catalog.stored_node(dict(reg, ID="id1"), None, 5)
    assert first == {"ID": "id1", "Node": "n1", "Address": "a", "Datacenter": "dc1", "TaggedAddresses": {},
                     "Meta": {}, "CreateIndex": 5, "ModifyIndex": 5}
    again = catalog.stored_node(reg, first, 9)
    assert (again["ID"], again["CreateIndex"], again["ModifyIndex"]) == ("id1", 5, 9)
    assert catalog.unchanged(first, again)
    assert not catalog.unchanged(first, catalog.stored_node(dict(reg, Address="b"), first, 9))


def test_stored_check_takes_its_service_name_and_tags() -> None:
    check = {"Node": "n1", "CheckID": "c", "Status": "passing"}
    row = catalog.stored_check(dict(check, ServiceID="w1"), svc("web", "w1", ["a"]), None, 3)
    assert list(row) == ["Node", "CheckID", "Status", "ServiceID", "ServiceName", "ServiceTags", "CreateIndex",
                         "ModifyIndex"]
    assert (row["ServiceName"], row["ServiceTags"], row["CreateIndex"]) == ("web", ["a"], 3)
    node_level = catalog.stored_check(check, None, row, 4)
    assert (node_level["ServiceID"], node_level["ServiceName"], node_level["ServiceTags"]) == ("", "", [])
    assert (node_level["CreateIndex"], node_level["ModifyIndex"]) == (3, 4)


def test_stored_service_adds_indexes() -> None:
    assert catalog.stored_service(svc("web"), {"CreateIndex": 2}, 7) == dict(svc("web"), CreateIndex=2,
                                                                              ModifyIndex=7)


@pytest.mark.parametrize(("row", "expected"), [
    (svc("web"), None),
    (dict(svc("web"), Connect={"Native": True}), "web"),
    (dict(svc("web-proxy"), Kind="connect-proxy", Proxy={"DestinationServiceName": "web"}), "web"),
    (dict(svc("web-proxy"), Kind="connect-proxy"), None),
])
def test_connect_name(row: dict[str, Any], expected: str | None) -> None:
    assert catalog.connect_name(row) == expected


def test_check_status() -> None:
    assert catalog.check_status("maintenance") == "maintenance"
    with pytest.raises(Invalid, match="Invalid check status 'ok'"):
        catalog.check_status("ok")


def test_a_health_entry_reads_with_zero_values_for_what_it_omits() -> None:
    entry = {"Node": {"Node": "n1", "Address": None}, "Service": {"Port": None, "Weights": {"Warning": 2}},
             "Checks": [{"Status": "passing"}, {"Status": "warning"}]}
    assert catalog.entry_statuses(entry) == {"passing", "warning"}
    assert catalog.entry_statuses({"Checks": None}) == set()
    svc = catalog.read_instance(entry)
    assert svc.node == catalog.NodeInfo("n1", "", "", {})
    assert (svc.address, svc.port, svc.tags) == ("", 0, [])
    assert (svc.weight(warning=True), svc.weight(warning=False)) == (2, 1)
