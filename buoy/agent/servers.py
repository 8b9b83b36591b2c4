"""The servers a client agent talks to: seeded from ``-retry-join``, kept current from every heartbeat
answer, with the leader first for writes. A server that fails a call moves to the back of the list, so
the agent moves on to another one at once."""

from __future__ import annotations

from typing import Any

from buoy.api.client import AgentTimeout, AgentUnreachable, Client, ClientError
from buoy.api.internal import APPLY, NODE, http_addr
from buoy.api.signed import signed_call
from buoy.config import Config
from buoy.core.commands import Command

NO_SERVERS = "No known Consul servers"


class ServerPool:
    def __init__(self, cfg: Config, key: bytes) -> None:
        self.key = key
        self.default_port = cfg.http_port
        self.addrs: list[str] = []
        self.leader: str | None = None
        self._clients: dict[str, Client] = {}
        for addr in cfg.retry_join:
            self.add(addr)

    def add(self, addr: str) -> str:
        addr = http_addr(addr, self.default_port)
        if addr not in self.addrs:
            self.addrs.append(addr)
        return addr

    def learn(self, servers: list[str], leader: str | None) -> None:
        """What a server said about the cluster: the live servers and the leader."""
        if servers:
            self.addrs = [a for a in self.addrs if a in servers] + [a for a in servers if a not in self.addrs]
        self.leader = leader

    def order(self, write: bool) -> list[str]:
        """Servers to try, in order: the leader first for a write, else the current server."""
        if write and self.leader in self.addrs:
            return [self.leader] + [a for a in self.addrs if a != self.leader]
        return list(self.addrs)

    def failed(self, addr: str) -> None:
        if addr in self.addrs:
            self.addrs.remove(addr)
            self.addrs.append(addr)
        if self.leader == addr:
            self.leader = None

    def client(self, addr: str) -> Client:
        """One keep-alive client per server."""
        if addr not in self._clients:
            self._clients[addr] = Client(addr, token="", timeout=10)
        return self._clients[addr]

    async def call(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        """A signed call to the servers (the leader if known), moving on when one is unreachable."""
        for addr in self.order(write=True):
            try:
                return await signed_call(self.client(addr), self.key, path, payload, timeout=timeout)
            except (AgentUnreachable, AgentTimeout):
                self.failed(addr)
        raise ClientError(NO_SERVERS)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class RemoteCatalog:
    """The catalog as a client agent's anti-entropy sees it: through signed calls to the servers."""

    def __init__(self, pool: ServerPool) -> None:
        self.pool = pool

    async def node_view(self, node: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        answer = await self.pool.call(NODE, {"node": node})
        return answer["services"], answer["checks"]

    async def apply(self, cmd: Command) -> Any:
        return await self.pool.call(APPLY, {"cmd": cmd.to_wire()})
