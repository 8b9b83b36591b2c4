"""Default-consistency reads on a follower are answered by the leader, as Consul does: the request is
replayed against the leader's HTTP API and its answer (status, body, index headers) passed back."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from buoy.api.client import APIError, Client, ClientError
from buoy.core.errors import NO_LEADER, Failed
from buoy.http.context import FORWARD_CLIENTS, server_of

RPC_HOLD_TIMEOUT = 7.0  # Consul's rpc_hold_timeout: how long a call waits out a leader election
HOLD_PAUSE = 0.2

_PASS_HEADERS = ("Content-Type", "X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-Effective-Consistency",
                 "X-Content-Type-Options", "Content-Security-Policy")


def _client(app: web.Application, addr: str) -> Client:
    """One keep-alive client per leader address, for the life of the app."""
    clients = app[FORWARD_CLIENTS]
    if addr not in clients:
        clients[addr] = Client(addr, token="")
    return clients[addr]


async def to_leader(request: web.Request, wait: float) -> web.Response:
    """Replay the read on the leader. During an election, or while the leader this server knows is
    unreachable (dead, and not yet replaced), hold the read for up to RPC_HOLD_TIMEOUT as Consul does:
    it is a read, so asking again is safe."""
    server = server_of(request)
    hold_until = time.monotonic() + RPC_HOLD_TIMEOUT
    while True:
        leader = server.leader_http_addr()
        if leader is not None:
            try:
                resp = await _client(request.app, leader).request(
                    "GET", request.rel_url.raw_path, params=list(request.query.items()), timeout=wait + 30,
                    allow_404=True)
                break
            except APIError as e:
                return web.Response(status=e.status, text=e.body, content_type="text/plain")
            except ClientError as e:
                problem = f"{NO_LEADER}: leader unreachable: {e}"
        else:
            problem = NO_LEADER
        if time.monotonic() >= hold_until:
            raise Failed(problem)
        await asyncio.sleep(HOLD_PAUSE)
    headers = {h: resp.headers[h] for h in _PASS_HEADERS if h in resp.headers}
    headers["X-Consul-LastContact"] = str(server.last_contact_ms())
    return web.Response(status=resp.status, body=resp.body, headers=headers)


async def close(app: web.Application) -> None:
    for client in app[FORWARD_CLIENTS].values():
        await client.close()
