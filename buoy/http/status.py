"""``/v1/status`` and ``/v1/operator/raft/configuration``: the Raft cluster as this server sees it."""

from __future__ import annotations

from aiohttp import web

from buoy.core.structs import raft
from buoy.http.context import server_of
from buoy.http.respond import json_response

routes = web.RouteTableDef()


@routes.get("/v1/status/leader")
async def leader(request: web.Request) -> web.Response:
    return json_response(request, server_of(request).leader_addr or "")


@routes.get("/v1/status/peers")
async def peers(request: web.Request) -> web.Response:
    return json_response(request, server_of(request).members())


@routes.get("/v1/operator/raft/configuration")
async def raft_configuration(request: web.Request) -> web.Response:
    if "stale" not in request.query:
        await server_of(request).require_leader()
    server = server_of(request)
    leader_addr = server.leader_addr
    known, index = server.read(lambda s: (dict(s.servers), s.index))
    return json_response(request, raft.configuration(server.members(), known, leader_addr, index))
