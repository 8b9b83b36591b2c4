"""``/v1/agent/self``, ``/v1/agent/members``, ``leave``, ``force-leave`` and ``join``: this agent and
the cluster's membership as it knows it."""

from __future__ import annotations

from aiohttp import web

import buoy
from buoy.api.client import ClientError
from buoy.core.errors import Failed
from buoy.core.structs import member
from buoy.core.structs.agent import AgentSettings, alive_member, self_body
from buoy.http import proxy
from buoy.http.context import agent_of, node_of
from buoy.http.respond import json_response

routes = web.RouteTableDef()


@routes.get("/v1/agent/members")
async def members(request: web.Request) -> web.StreamResponse:
    agent = agent_of(request)
    if agent.server is None:
        return await proxy.forward(request)  # a client knows the members through the servers
    rows = agent.server.read(lambda s: s.members.all_by_name())
    rows.setdefault(agent.cfg.node_name, alive_member(agent.cfg.identity(agent.node_id)))
    return json_response(request, [member.to_api(rows[n], agent.cfg.datacenter) for n in sorted(rows)])


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    agent = agent_of(request)
    cfg = agent.cfg
    server = agent.server
    consul = {"server": str(server is not None).lower(), "known_datacenters": "1"}
    if server is not None:
        consul.update(leader=str(server.is_leader).lower(), leader_addr=server.leader_addr or "")
    stats = {
        "agent": {"checks": str(len(node_of(request).local.checks)),
                  "services": str(len(node_of(request).local.services))},
        "build": {"version": buoy.CONSUL_COMPAT_VERSION, "buoy": buoy.__version__, "prerelease": ""},
        "consul": consul,
    }
    if server is not None:
        stats["raft"] = {k: str(v) for k, v in server.raft_status().items()}
        stats["buoy"] = {"blocking_queries": str(server.hub.waiting)}
    settings = AgentSettings(
        cfg.identity(agent.node_id), dev=cfg.dev, data_dir=cfg.data_dir or "", client_addr=cfg.client_addr,
        http_port=cfg.http_port, dns_port=cfg.dns_port, server_port=cfg.server_port,
        retry_join=tuple(cfg.retry_join), intentions_default=cfg.intentions_default or "",
        version=buoy.CONSUL_COMPAT_VERSION, buoy_version=buoy.__version__)
    return json_response(request, self_body(settings, stats))


@routes.put("/v1/agent/leave")
async def leave(request: web.Request) -> web.Response:
    await agent_of(request).leave()
    return web.Response()


@routes.put("/v1/agent/force-leave/{node}")
async def force_leave(request: web.Request) -> web.Response:
    await agent_of(request).force_leave(request.match_info["node"], prune="prune" in request.query)
    return web.Response()


@routes.put("/v1/agent/join/{addr}")
async def join(request: web.Request) -> web.Response:
    if "wan" in request.query:
        raise Failed("WAN join is not supported: this agent has one datacenter")
    try:
        await agent_of(request).join(request.match_info["addr"])
    except ClientError as e:
        raise Failed(f"Error joining address '{request.match_info['addr']}': {e}") from None
    return web.Response()
