"""A cluster member: an agent the servers know (server or client), as its heartbeat carries it, as the
member table stores it and as ``/v1/agent/members`` shows it (Serf's shape, which Consul's clients read);
and the node it stands for in the catalog, with the ``serfHealth`` check that mirrors its liveness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALIVE, FAILED, LEFT = "alive", "failed", "left"
# The integers /v1/agent/members uses (Serf's member status).
STATUS_CODES = {ALIVE: 1, LEFT: 3, FAILED: 4}
SERF_CHECK = "serfHealth"
SERF_OUTPUT = {ALIVE: "Agent alive and reachable", FAILED: "Agent not live or unreachable"}
# The fields of a member row that a heartbeat compares: a change in any of them is written to Raft.
IDENTITY = ("ID", "Addr", "Port", "Role", "Build")
BEATS_PER_TTL = 3  # an agent heartbeats this often per TTL, so one lost heartbeat never fails it


@dataclass(frozen=True)
class NodeIdentity:
    """Who an agent is: what its heartbeats, its server's self-registration and anti-entropy all say."""

    name: str
    id: str
    addr: str
    http_port: int
    datacenter: str
    server: bool
    raft_port: int | None
    build: str

    def member(self) -> dict[str, Any]:
        """This agent as the member table keeps it."""
        return {"Name": self.name, "ID": self.id, "Addr": self.addr, "Port": self.http_port,
                "Role": "consul" if self.server else "node", "Build": self.build, "Datacenter": self.datacenter,
                "RaftPort": self.raft_port if self.server else None}

    def node(self) -> dict[str, Any]:
        """This node as the catalog should show it (a catalog registration without service or checks)."""
        return {
            "Node": self.name, "Address": self.addr, "ID": self.id, "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": self.addr, "lan_ipv4": self.addr},
            "Meta": {"consul-network-segment": ""}, "SkipNodeUpdate": False, "Service": None, "Checks": [],
        }


def serf_check(node: str, status: str) -> dict[str, Any]:
    """The node-level check that mirrors membership, as Consul's serfHealth does."""
    return {"Node": node, "CheckID": SERF_CHECK, "Name": "Serf Health Status",
            "Status": "passing" if status == ALIVE else "critical", "Notes": "", "Output": SERF_OUTPUT[status],
            "ServiceID": "", "Type": "", "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {}}


def to_api(row: dict[str, Any], datacenter: str) -> dict[str, Any]:
    """A member row (with its ``Status``) as ``/v1/agent/members`` shows it."""
    tags = {"role": row["Role"], "dc": datacenter, "build": row.get("Build", ""), "vsn": "2", "vsn_min": "2",
            "vsn_max": "3", "segment": "", "id": ""}
    if row.get("RaftPort") is not None:
        tags["port"] = str(row["RaftPort"])
        tags["raft_vsn"] = "3"
    return {
        "Name": row["Name"], "Addr": row["Addr"], "Port": row["Port"], "Tags": tags,
        "Status": STATUS_CODES[row["Status"]],
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    }
