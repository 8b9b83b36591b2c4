"""``/v1/agent/connect/ca``: the CA roots and this host's leaf certificates, answered by the agent itself
(server or client) from :class:`buoy.agent.leaf.LeafCerts`. Both are blocking reads with ``?index``."""

from __future__ import annotations

from aiohttp import web

from buoy.agent.leaf import LeafCerts
from buoy.http.context import agent_of
from buoy.http.respond import json_response
from buoy.http.wait import parse_wait

routes = web.RouteTableDef()


def _leaves(request: web.Request) -> LeafCerts:
    return agent_of(request).leaves


@routes.get("/v1/agent/connect/ca/roots")
async def roots(request: web.Request) -> web.Response:
    index, wait = parse_wait(request)
    value, current = await _leaves(request).roots.get(index, wait)
    return json_response(request, value, headers={"X-Consul-Index": str(current)})


@routes.get("/v1/agent/connect/ca/leaf/{service}")
async def leaf(request: web.Request) -> web.Response:
    index, wait = parse_wait(request)
    value, current = await _leaves(request).get(request.match_info["service"], index, wait)
    return json_response(request, value, headers={"X-Consul-Index": str(current)})
