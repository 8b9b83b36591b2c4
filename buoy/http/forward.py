"""Default-consistency reads on a follower are answered by the leader, as Consul does: the request is
replayed against the leader's HTTP API and its answer (status, body, index headers) passed back."""

from __future__ import annotations

from aiohttp import web

from buoy.api.client import APIError, Client, ClientError
from buoy.http.errors import HTTPError

_PASS_HEADERS = ("Content-Type", "X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-Effective-Consistency",
                 "X-Content-Type-Options", "Content-Security-Policy")


def _client(app: web.Application, addr: str) -> Client:
    """One keep-alive client per leader address, for the life of the app."""
    clients: dict[str, Client] = app.setdefault("forward_clients", {})
    if addr not in clients:
        clients[addr] = Client(addr, token="")
    return clients[addr]


async def to_leader(request: web.Request, wait: float) -> web.Response:
    server = request.app["agent"].server
    with server.store.lock:
        info = server.store.servers.get(server.leader_addr or "")
    if info is None:
        raise HTTPError(500, "No cluster leader")
    client = _client(request.app, info["HTTP"])
    try:
        resp = await client.request("GET", request.rel_url.raw_path, params=list(request.query.items()),
                                    timeout=wait + 30, allow_404=True)
    except APIError as e:
        return web.Response(status=e.status, text=e.body, content_type="text/plain")
    except ClientError as e:
        raise HTTPError(500, f"rpc error making call: leader unreachable: {e}") from None
    headers = {h: resp.headers[h] for h in _PASS_HEADERS if h in resp.headers}
    headers["X-Consul-LastContact"] = str(server.last_contact_ms())
    return web.Response(status=resp.status, body=resp.body, headers=headers)


async def close(app: web.Application) -> None:
    for client in app.get("forward_clients", {}).values():
        await client.close()
