"""What ``/v1/agent/self`` says about an agent (Consul's ``Self``): its ``Config``, the ``DebugConfig``
subset clients read, its ``Member`` entry, its ``Stats`` and ``Meta``. py-consul and the CLI read this
body, so its shape is Consul's; the values come in plain, since core cannot read ``buoy.config``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buoy.core.structs import member
from buoy.core.structs.member import ALIVE, NodeIdentity


@dataclass(frozen=True)
class AgentSettings:
    """The settings ``/v1/agent/self`` reports, besides who the agent is."""

    identity: NodeIdentity
    dev: bool
    data_dir: str
    client_addr: str
    http_port: int
    dns_port: int
    server_port: int
    retry_join: tuple[str, ...]
    intentions_default: str
    version: str  # the Consul release Buoy answers as
    buoy_version: str


def alive_member(identity: NodeIdentity) -> dict[str, Any]:
    """This agent's member row: an agent always knows itself alive, also before its first heartbeat has
    reached a leader."""
    return dict(identity.member(), Status=ALIVE)


def self_body(agent: AgentSettings, stats: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The ``/v1/agent/self`` answer; ``stats`` is Consul's map of sections to string counters."""
    me = agent.identity
    return {
        "Config": {
            "Datacenter": me.datacenter, "PrimaryDatacenter": me.datacenter, "NodeName": me.name,
            "NodeID": me.id, "Revision": "buoy", "Server": me.server, "Version": agent.version, "BuildDate": "",
        },
        "DebugConfig": {"Datacenter": me.datacenter, "NodeName": me.name, "DevMode": agent.dev,
                        "ServerMode": me.server, "DataDir": agent.data_dir, "ClientAddrs": [agent.client_addr],
                        "HTTPPort": agent.http_port, "DNSPort": agent.dns_port, "ServerPort": agent.server_port,
                        "RetryJoinLAN": list(agent.retry_join), "IntentionsDefault": agent.intentions_default},
        "Coord": None,
        "Member": member.to_api(alive_member(me), me.datacenter),
        "Stats": stats,
        "Meta": {"consul-network-segment": "", "buoy-version": agent.buoy_version},
        "xDS": None,
    }
