"""The /v1/agent/self body built from plain values: Consul's key order, and what a client agent shows."""

from __future__ import annotations

from buoy.core.structs.agent import AgentSettings, alive_member, self_body
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
