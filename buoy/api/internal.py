"""The internal calls Buoy agents and servers make to each other over the HTTP port, signed with the cluster
key (:mod:`buoy.api.signed`): one name per path, shared by the caller and the handler in ``buoy.http.internal``.
"""

from __future__ import annotations

PREFIX = "/v1/internal/buoy"
PEER = f"{PREFIX}/peer"  # GET: is this a server of the cluster? (what ``join`` and cluster formation ask)
JOIN = f"{PREFIX}/join"  # a server asks the leader to add it to Raft
HEARTBEAT = f"{PREFIX}/heartbeat"  # an agent's liveness and node registration, to the leader
LEAVE = f"{PREFIX}/leave"  # a graceful leave or a force-leave, to the leader
CA_SIGN = f"{PREFIX}/ca/sign"  # an agent's leaf CSR, to the leader
NODE = f"{PREFIX}/node"  # a client agent reads its node's services and checks (anti-entropy)
APPLY = f"{PREFIX}/apply"  # a client agent's catalog registration, proposed by a server


def http_addr(addr: str, default_port: int) -> str:
    """A -retry-join address with the HTTP port filled in when it names only a host."""
    return addr if ":" in addr and addr.rsplit(":", 1)[-1].isdigit() else f"{addr}:{default_port}"
