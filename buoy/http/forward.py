"""Default-consistency reads on a follower are answered by the leader, as Consul does: the request is
replayed against the leader's HTTP API and its answer (status, body, index headers) passed back."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from buoy.http.errors import HTTPError

_PASS_HEADERS = ("Content-Type", "X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact",
                 "X-Consul-Effective-Consistency", "X-Content-Type-Options", "Content-Security-Policy")


async def to_leader(request: web.Request, wait: float) -> web.Response:
    server = request.app["agent"].server
    with server.store.lock:
        info = server.store.servers.get(server.leader_addr or "")
    if info is None:
        raise HTTPError(500, "No cluster leader")
    session: aiohttp.ClientSession | None = request.app.get("forward_session")
    if session is None:
        session = request.app["forward_session"] = aiohttp.ClientSession()
    url = f"http://{info['HTTP']}{request.rel_url}"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=wait + 30)) as resp:
            body = await resp.read()
            headers = {h: resp.headers[h] for h in _PASS_HEADERS if h in resp.headers}
            headers["X-Consul-LastContact"] = str(server.last_contact_ms())
            return web.Response(status=resp.status, body=body, headers=headers)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise HTTPError(500, f"rpc error making call: leader unreachable: {e}") from None


async def close(app: web.Application) -> None:
    session = app.get("forward_session")
    if session is not None:
        await session.close()
