"""A client agent answers every /v1 call it does not own by passing it to a server, as a Consul client
forwards RPCs: writes go to the leader when it is known, reads to the current server. When a server dies
the call moves to the next one; a blocking query keeps its index and the rest of its wait, so a watcher
sees one slow answer rather than an error."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from buoy.agent.servers import NO_SERVERS, ServerPool
from buoy.api.client import AgentTimeout, AgentUnreachable, Response
from buoy.core.errors import NO_LEADER, Unavailable
from buoy.durations import format_duration
from buoy.http.context import AGENT, BLOCKING_FORWARDS, MAX_BODY, agent_of
from buoy.http.decode import read_body
from buoy.http.forward import HOLD_PAUSE, RPC_HOLD_TIMEOUT
from buoy.http.wait import parse_wait

# Hop-by-hop and framing headers are the proxy's own business on each side.
_SKIP_REQUEST = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive",
                           "accept-encoding"})
_SKIP_RESPONSE = frozenset({"content-length", "connection", "transfer-encoding", "keep-alive", "date",
                            "server", "content-encoding"})
SLACK = 30.0  # beyond a blocking query's own wait, before a silent server counts as dead


async def forward(request: web.Request) -> web.Response:
    pool = agent_of(request).pool
    assert pool is not None, "forwarding on a server agent"
    body = await read_body(request, request.app[MAX_BODY])  # the server applies the precise limit
    write = request.method not in ("GET", "HEAD")
    index, wait = parse_wait(request) if not write else (0, 0.0)
    deadline = time.monotonic() + wait
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST}
    params = list(request.query.items())
    hold_until = time.monotonic() + RPC_HOLD_TIMEOUT
    if index:
        # A blocking query waits on a server; shutdown cancels it rather than wait out its grace period.
        task = asyncio.current_task()
        assert task is not None
        request.app[BLOCKING_FORWARDS].add(task)
        task.add_done_callback(request.app[BLOCKING_FORWARDS].discard)
    while True:
        resp = await _try_servers(request, pool, body, headers, params, write, index, deadline)
        # No leader (an election is on): nothing was applied, so wait for one as Consul's clients do.
        if resp.status == 500 and resp.body.startswith(NO_LEADER.encode()) and time.monotonic() < hold_until:
            await asyncio.sleep(HOLD_PAUSE)
            continue
        out = {k: v for k, v in resp.headers.items() if k.lower() not in _SKIP_RESPONSE}
        return web.Response(status=resp.status, body=resp.body, headers=out)


async def release(app: web.Application) -> None:
    """On shutdown: end every open blocking query so it does not hold the agent's exit."""
    agent = app[AGENT]
    if agent.server is not None:
        agent.server.hub.close()
    tasks: set[asyncio.Task[web.StreamResponse]] = app[BLOCKING_FORWARDS]
    for task in list(tasks):
        task.cancel()


async def _try_servers(request: web.Request, pool: ServerPool, body: bytes, headers: dict[str, str],
                       params: list[tuple[str, str]], write: bool, index: int, deadline: float) -> Response:
    for addr in pool.order(write):
        if index:
            # The rest of the wait, so a move to another server does not restart the clock.
            left = max(deadline - time.monotonic(), 0.001)
            params = [(k, v) for k, v in params if k != "wait"] + [("wait", format_duration(left))]
        try:
            resp = await pool.client(addr).request(
                request.method, request.rel_url.raw_path, params=params, data=body, headers=headers,
                timeout=(deadline - time.monotonic() + SLACK) if index else SLACK, check=False)
        except (AgentUnreachable, AgentTimeout) as e:
            pool.failed(addr)
            if write and (isinstance(e, AgentTimeout) or e.sent):
                # It may have been applied: only the caller can decide whether to try again.
                raise Unavailable(f"rpc error making call: connection to server {addr} lost: {e}") from None
            continue
        return resp
    raise Unavailable(NO_SERVERS)
