"""What a handler may see of the process: typed application keys and the Protocols behind them.

Handlers get the agent process through :data:`AGENT` (a narrow :class:`AgentProcess`, never the process
class itself) and the server through :func:`server_of`, so ``http/`` depends on what it uses and the
process module above it stays out of reach. Imports of the server's types are for the type checker only:
a client agent never loads ``buoy.server``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from buoy.api.client import Client
from buoy.api.signed import ReplayGuard
from buoy.config import Config
from buoy.connect.intentions import IntentionCache
from buoy.core.errors import Unavailable

if TYPE_CHECKING:
    from buoy.agent.leaf import LeafCerts
    from buoy.agent.node import NodeAgent
    from buoy.agent.servers import ServerPool
    from buoy.server.server import Server


class AgentProcess(Protocol):
    """The running agent as its handlers use it (``buoy.process.Agent``)."""

    cfg: Config
    node_id: str
    key: bytes
    server: Server | None  # None on a client agent
    node: NodeAgent | None  # None until the agent has started
    pool: ServerPool | None  # a client agent's servers
    leaves: LeafCerts

    async def leave(self) -> None: ...

    async def force_leave(self, node: str, prune: bool) -> None: ...

    async def join(self, addr: str) -> None: ...

    def reload(self) -> None: ...


AGENT = web.AppKey("agent", AgentProcess)
PRETTY = web.AppKey("pretty", bool)  # JSON indented by default (-dev), as well as with ?pretty
MAX_BODY = web.AppKey("max_body", int)  # the largest body any route takes
LOOP = web.AppKey("loop", asyncio.AbstractEventLoop)
BLOCKING_FORWARDS = web.AppKey("blocking_forwards", set[asyncio.Task[web.StreamResponse]])
FORWARD_CLIENTS = web.AppKey("forward_clients", dict[str, Client])  # one keep-alive client per leader address
INTENTIONS = web.AppKey("intention_cache", IntentionCache)
# Encoded single-key KV reads by key, with the ModifyIndex they were encoded at (see buoy.http.kv).
KV_BODIES = web.AppKey("kv_bodies", dict[str, tuple[int, bytes]])
REPLAY_GUARD = web.AppKey("replay_guard", ReplayGuard)  # the signed internal calls this server accepted


def agent_of(request: web.Request) -> AgentProcess:
    return request.app[AGENT]


def server_of(request: web.Request) -> Server:
    """The local server; only the routes a server agent registers call this."""
    server = request.app[AGENT].server
    assert server is not None, "a server route on a client agent"
    return server


def node_of(request: web.Request) -> NodeAgent:
    node = request.app[AGENT].node
    if node is None:
        raise Unavailable("the agent is still starting")
    return node
