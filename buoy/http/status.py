"""``/v1/status``, ``/v1/operator/raft/configuration``, ``/v1/agent/self`` and ``/v1/agent/members``:
what the cluster looks like from this agent."""

from __future__ import annotations

from typing import Any

from aiohttp import web

import buoy
from buoy.http import encode
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


def _members(request: web.Request) -> list[dict[str, Any]]:
    agent = request.app["agent"]
    server = agent.server
    with server.store.lock:
        known = dict(server.store.servers)
    live = set(server.members())
    out = []
    for addr in sorted(live | set(known)):
        info = known.get(addr, {})
        host, _, port = addr.rpartition(":")
        status = 1 if addr in live else 3
        out.append(encode.member(info.get("Node", addr), host, int(port), "consul", agent.cfg.datacenter, status,
                                 int(port), buoy.__version__))
    return out


@routes.get("/v1/agent/members")
async def members(request: web.Request) -> web.Response:
    return json_response(request, _members(request))


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    cfg = agent.cfg
    server = agent.server
    me = next((m for m in _members(request) if m["Name"] == cfg.node_name), None)
    stats = {
        "agent": {"checks": "0", "services": "0"},
        "build": {"version": buoy.CONSUL_COMPAT_VERSION, "buoy": buoy.__version__, "prerelease": ""},
        "consul": {"server": "true", "leader": str(server.is_leader).lower(),
                   "leader_addr": server.leader_addr or "", "known_datacenters": "1"},
        "raft": {k: str(v) for k, v in server.raft_status().items()},
    }
    body = {
        "Config": {
            "Datacenter": cfg.datacenter, "PrimaryDatacenter": cfg.datacenter, "NodeName": cfg.node_name,
            "NodeID": agent.node_id, "Revision": "buoy", "Server": True,
            "Version": buoy.CONSUL_COMPAT_VERSION, "BuildDate": "",
        },
        "DebugConfig": {"Datacenter": cfg.datacenter, "NodeName": cfg.node_name, "DevMode": cfg.dev,
                        "ServerMode": True, "DataDir": cfg.data_dir or "", "ClientAddrs": [cfg.client_addr],
                        "HTTPPort": cfg.http_port, "DNSPort": cfg.dns_port, "ServerPort": cfg.server_port},
        "Coord": None,
        "Member": me,
        "Stats": stats,
        "Meta": {"consul-network-segment": "", "buoy-version": buoy.__version__},
        "xDS": None,
    }
    return json_response(request, body)
