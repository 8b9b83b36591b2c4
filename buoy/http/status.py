"""``/v1/status`` and ``/v1/operator/raft/configuration``: the Raft cluster as this server sees it."""

from __future__ import annotations

from aiohttp import web

from buoy.http.respond import json_response

routes = web.RouteTableDef()


@routes.get("/v1/status/leader")
async def leader(request: web.Request) -> web.Response:
    return json_response(request, request.app["agent"].server.leader_addr or "")


@routes.get("/v1/status/peers")
async def peers(request: web.Request) -> web.Response:
    return json_response(request, request.app["agent"].server.members())


@routes.get("/v1/operator/raft/configuration")
async def raft_configuration(request: web.Request) -> web.Response:
    if "stale" not in request.query:
        await request.app["agent"].server.require_leader()
    server = request.app["agent"].server
    leader_addr = server.leader_addr
    with server.store.lock:
        known = dict(server.store.servers)
        index = server.store.index
    out = []
    for addr in server.members():
        info = known.get(addr, {})
        out.append({
            "ID": info.get("ID", addr), "Node": info.get("Node", addr), "Address": addr,
            "Leader": addr == leader_addr, "Voter": True, "ProtocolVersion": "3",
        })
    return json_response(request, {"Servers": out, "Index": index})
