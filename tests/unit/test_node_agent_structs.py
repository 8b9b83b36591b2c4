"""The node agent's objects without an agent: its sidecars, its local rows and their file, what anti-entropy
compares and registers, and the leaf certificate it serves."""

from __future__ import annotations

from typing import Any

import pytest

from buoy.core.errors import Failed
from buoy.core.structs import catalog, definitions, leaf, local


def _sidecar(port: int = 0) -> definitions.ServiceDef:
    svc, _, sidecar = definitions.parse_service(
        {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": port} if port else {}}})
    assert sidecar is not None and svc["ID"] == "web"
    return sidecar


def test_a_sidecar_gets_the_first_free_port_and_the_default_checks() -> None:
    svc, checks = definitions.complete_sidecar(_sidecar(), {"other": {"ID": "other", "Port": 21000}}, [21001])
    assert svc["Port"] == 21002
    assert [c["Name"] for c in checks] == ["Connect Sidecar Listening", "Connect Sidecar Aliasing web"]
    assert checks[0]["Definition"]["TCP"] == "127.0.0.1:21002"


def test_a_sidecar_keeps_its_port_and_a_given_one_is_left_alone() -> None:
    old = {"ID": "web-sidecar-proxy", "Port": 21007}
    assert definitions.complete_sidecar(_sidecar(), {old["ID"]: old})[0]["Port"] == 21007
    assert definitions.complete_sidecar(_sidecar(9999), {})[0]["Port"] == 9999


def test_a_sidecar_without_a_free_port_is_refused() -> None:
    with pytest.raises(Failed, match=r"none left in the configured range \[21000, 21255\]"):
        definitions.complete_sidecar(_sidecar(), {}, definitions.SIDECAR_PORTS)


def test_proxies_names_the_sidecar_of_a_service() -> None:
    svc, _ = _sidecar()
    assert definitions.proxies(svc, "web")
    assert not definitions.proxies(svc, "api")
    assert not definitions.proxies({"ID": "web", "Kind": "", "Port": 80}, "web")


def _check(**fields: Any) -> dict[str, Any]:
    return definitions.parse_check(dict({"Name": "up", "TTL": "10s"}, **fields), "Check", "web")


def test_a_result_changes_a_check_only_when_it_differs() -> None:
    check = _check()
    assert local.reported(check, "critical", "") is None
    new = local.reported(check, "passing", "ok")
    assert new is not None and (new["Status"], new["Output"]) == ("passing", "ok")
    assert local.same_but_status(new, check) and not local.same_but_status(None, check)


def test_a_check_registered_again_keeps_its_status_only_with_the_same_definition() -> None:
    old = dict(_check(), Status="passing", Output="ok")
    assert local.keep_status(_check(), old)["Status"] == "passing"
    assert local.keep_status(_check(TTL="20s"), old)["Status"] == "critical"
    assert local.keep_status(_check(), None)["Status"] == "critical"


def test_maintenance_checks() -> None:
    node = local.maintenance_check(None, "")
    assert (node["CheckID"], node["Name"], node["ServiceID"]) == ("_node_maintenance", "Node Maintenance Mode", "")
    assert node["Notes"].startswith("Maintenance mode is enabled for this node")
    svc = local.maintenance_check("web", "deploy")
    assert (svc["CheckID"], svc["Status"], svc["Notes"]) == ("_service_maintenance:web", "maintenance", "deploy")


def test_the_local_file_round_trips_and_refuses_another_format() -> None:
    svc, check = {"ID": "web", "Port": 80}, _check()
    doc = local.persisted([svc], [check])
    assert doc == {"version": 1, "services": [svc], "checks": [check]}
    assert local.restore(doc, "local.json") == ({"web": svc}, {"up": check})
    with pytest.raises(ValueError, match="local.json: unsupported format 2"):
        local.restore(dict(doc, version=2), "local.json")


def test_sync_compares_what_the_agent_holds() -> None:
    check = _check()
    remote = catalog.stored_check(catalog.node_check(check, "n1"), None, None, 7)
    assert catalog.check_in_sync(remote, check)
    assert not catalog.check_in_sync(None, check)
    moved = dict(remote, Output="new")
    assert not catalog.check_in_sync(moved, check) and catalog.check_in_sync(moved, check, but_output=True)
    svc = {"ID": "web", "Port": 80}
    assert catalog.service_in_sync(dict(svc, CreateIndex=1, ModifyIndex=1), svc)
    assert not catalog.service_in_sync({"ID": "web", "Port": 81}, svc)
    base = {"Node": "n1", "Address": "10.0.0.1"}
    assert catalog.service_registration(base, svc) == dict(base, Service=svc)
    assert catalog.checks_registration(base, [check]) == dict(base, Checks=[check])


ROOTS = {"ActiveRootID": "b", "TrustDomain": "td.consul", "Roots": [
    {"ID": "a", "SigningKeyID": "aa", "PrivateKeyType": "rsa", "PrivateKeyBits": 2048},
    {"ID": "b", "SigningKeyID": "bb", "PrivateKeyType": "ec", "PrivateKeyBits": 256}]}


def test_the_active_root() -> None:
    active = leaf.active_root(ROOTS)
    assert active is not None and leaf.key_type(active) == ("ec", 256)
    assert leaf.active_key_id(ROOTS) == "bb" and leaf.trust_domain(ROOTS) == "td.consul"
    assert leaf.active_root({}) is None and leaf.active_key_id({"Roots": None}) == ""


def test_an_issued_cert_carries_the_key_and_an_index_past_the_last() -> None:
    issued = {"SerialNumber": "01", "CertPEM": "C", "Service": "web", "ServiceURI": "spiffe://x", "ValidAfter": "a",
              "ValidBefore": "b", "ModifyIndex": 5, "CreateIndex": 5}
    cert = leaf.issued_cert(issued, "K", 9)
    assert list(cert) == ["SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter",
                          "ValidBefore", "CreateIndex", "ModifyIndex"]
    assert (cert["PrivateKeyPEM"], leaf.index(cert), cert["CreateIndex"]) == ("K", 10, 10)
    assert leaf.index(leaf.issued_cert(issued, "K", 0)) == 5
    assert leaf.cert_pem(issued) == "C" and leaf.summary(issued) == {"serial": "01", "valid_before": "b"}
