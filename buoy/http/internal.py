"""Server-to-server endpoints used to form the cluster; every request and answer is signed with the
cluster key (see :mod:`buoy.server.membership`). Unsigned or wrongly signed calls get 403."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from buoy.api.client import ClientError
from buoy.http.decode import read_body
from buoy.http.errors import HTTPError
from buoy.server.membership import signed_headers, verify

routes = web.RouteTableDef()


async def _verified_body(request: web.Request) -> bytes:
    server = request.app["agent"].server
    body = await read_body(request, 65536)
    if server is None or not verify(server.key, request.headers.get("X-Buoy-Time", ""), body,
                                    request.headers.get("X-Buoy-Signature", "")):
        raise HTTPError(403, "Permission denied: request not signed with this cluster's key")
    return body


def _answer(request: web.Request, data: Any) -> web.Response:
    body = json.dumps(data).encode()
    key = request.app["agent"].server.key
    return web.Response(body=body, content_type="application/json", headers=signed_headers(key, body))


@routes.get("/v1/internal/buoy/peer")
async def peer(request: web.Request) -> web.Response:
    await _verified_body(request)
    server = request.app["agent"].server
    return _answer(request, {
        "raft": server.cfg.raft_addr,
        "known": sorted(server.membership.known),
        "members": server.members() if server.raft is not None else None,
    })


@routes.post("/v1/internal/buoy/join")
async def join(request: web.Request) -> web.Response:
    body = await _verified_body(request)
    server = request.app["agent"].server
    raft_addr = str(json.loads(body)["raft"])
    if server.is_leader:
        members = await server.add_server(raft_addr)
    else:
        leader = server.leader_addr
        with server.store.lock:
            info = server.store.servers.get(leader or "")
        if info is None:
            raise HTTPError(500, "No cluster leader")
        try:
            members = await server.membership.forward_join(info["HTTP"], raft_addr)
        except ClientError as e:
            raise HTTPError(500, f"rpc error making call: {e}") from None
    return _answer(request, {"members": members})
