"""The agent's own endpoints' shapes: /v1/agent/self built from plain values, a local check, a service's
aggregated health, a check update and an authorize request."""

from __future__ import annotations

import pytest

from buoy.core.errors import Invalid
from buoy.core.structs.agent import (
    AgentSettings,
    alive_member,
    authorize_response,
    local_check,
    parse_authorize,
    parse_check_update,
    self_body,
    service_health,
    worst_status,
)
from buoy.core.structs.member import NodeIdentity


def _settings(server: bool) -> AgentSettings:
    identity = NodeIdentity("n1", "id-1", "10.0.0.1", 8500, "dc1", server, 8300 if server else None, "0.1.0")
    return AgentSettings(identity, dev=False, data_dir="", client_addr="127.0.0.1", http_port=8500,
                         dns_port=8600, server_port=8300, retry_join=("10.0.0.2",), intentions_default="",
                         version="1.20.0", buoy_version="0.1.0")


def test_self_body_is_consul_shaped() -> None:
    stats = {"consul": {"server": "true"}}
    body = self_body(_settings(server=True), stats)
    assert list(body) == ["Config", "DebugConfig", "Coord", "Member", "Stats", "Meta", "xDS"]
    assert body["Config"] == {"Datacenter": "dc1", "PrimaryDatacenter": "dc1", "NodeName": "n1", "NodeID": "id-1",
                              "Revision": "buoy", "Server": True, "Version": "1.20.0", "BuildDate": ""}
    assert body["DebugConfig"]["RetryJoinLAN"] == ["10.0.0.2"]
    assert body["DebugConfig"]["ClientAddrs"] == ["127.0.0.1"]
    assert body["Member"]["Status"] == 1
    assert body["Member"]["Tags"]["port"] == "8300"
    assert body["Stats"] is stats
    assert body["Meta"] == {"consul-network-segment": "", "buoy-version": "0.1.0"}


def test_a_client_agent_shows_no_raft_port() -> None:
    body = self_body(_settings(server=False), {})
    assert (body["Config"]["Server"], body["DebugConfig"]["ServerMode"]) == (False, False)
    assert body["Member"]["Tags"]["role"] == "node"
    assert "port" not in body["Member"]["Tags"]


def test_an_agent_knows_itself_alive() -> None:
    assert alive_member(_settings(server=False).identity)["Status"] == "alive"


def test_a_service_counts_its_own_and_the_node_checks() -> None:
    checks = [{"CheckID": "mine", "ServiceID": "web-1", "Status": "warning"},
              {"CheckID": "node", "ServiceID": "", "Status": "passing"},
              {"CheckID": "other", "ServiceID": "db-1", "Status": "critical"}]
    worst, body = service_health({"ID": "web-1", "Service": "web"}, checks)
    assert worst == body["AggregatedStatus"] == "warning"
    assert [c["CheckID"] for c in body["Checks"]] == ["mine", "node"]


def test_maintenance_is_the_worst_state_and_no_checks_pass() -> None:
    assert worst_status(["critical", "maintenance", "passing"]) == "maintenance"
    assert worst_status([]) == "passing"


def test_a_local_check_carries_its_node_and_service() -> None:
    services = {"web-1": {"ID": "web-1", "Service": "web", "Tags": ["a"]}}
    out = local_check({"CheckID": "c", "ServiceID": "web-1"}, "n1", services)
    assert (out["Node"], out["ServiceName"], out["ServiceTags"]) == ("n1", "web", ["a"])
    assert local_check({"CheckID": "c", "ServiceID": ""}, "n1", services)["ServiceName"] == ""


def test_a_check_update_needs_a_known_status() -> None:
    assert parse_check_update({"status": "passing", "Output": "ok"}) == ("passing", "ok")
    with pytest.raises(Invalid, match="Invalid check status: 'up'"):
        parse_check_update({"Status": "up"})


def test_authorize_names_the_target_and_the_client_service() -> None:
    target, client = parse_authorize({"Target": "db", "ClientCertURI": "spiffe://t.consul/ns/default/dc/dc1/svc/web"})
    assert (target, client.service, client.namespace) == ("db", "web", "default")
    assert authorize_response(True, "ok") == {"Authorized": True, "Reason": "ok"}


@pytest.mark.parametrize(("body", "message"), [
    ({"ClientCertURI": "spiffe://t.consul/ns/default/dc/dc1/svc/web"}, "Target service must be specified"),
    ({"Target": "db", "ClientCertURI": "spiffe://t.consul/agent/client/dc/dc1/id/x"},
     "ClientCertURI not a valid Service identifier"),
    ({"Target": "db", "ClientCertURI": "https://example.com"}, "ClientCertURI not a valid Connect identifier"),
])
def test_authorize_refuses_what_names_no_service(body: dict[str, str], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_authorize(body)
