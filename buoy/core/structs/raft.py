"""The Raft cluster as ``/v1/operator/raft/configuration`` shows it (Consul's ``RaftConfigurationResponse``),
which ``consul operator raft list-peers`` and ``buoy operator raft list-peers`` read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def configuration(peers: Iterable[str], known: Mapping[str, dict[str, Any]], leader_addr: str | None,
                  index: int) -> dict[str, Any]:
    """Each Raft peer by address, named by the server row ``known`` keeps for it; a peer not registered yet
    goes by its address. Every peer votes: Buoy has no non-voters."""
    servers = []
    for addr in peers:
        info = known.get(addr, {})
        servers.append({
            "ID": info.get("ID", addr), "Node": info.get("Node", addr), "Address": addr,
            "Leader": addr == leader_addr, "Voter": True, "ProtocolVersion": "3",
        })
    return {"Servers": servers, "Index": index}
