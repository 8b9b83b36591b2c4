"""``/v1/health``: node, checks, service and connect (``passing``, ``tag``, ``node-meta``), state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from buoy.core.errors import Failed
from buoy.core.structs import catalog
from buoy.http.blocking import blocking, service_read
from buoy.http.filters import node_meta_filter, passing_filter, tag_filter

routes = web.RouteTableDef()


@routes.get("/v1/health/node/{node}")
async def node(request: web.Request) -> web.Response:
    name = request.match_info["node"]
    return await blocking(request, lambda s: (s.catalog.node_idx(name), s.catalog.node_checks(name)),
                          topics=[("node", name)])


@routes.get("/v1/health/checks/{service}")
async def checks(request: web.Request) -> web.Response:
    name = request.match_info["service"]
    meta_ok = node_meta_filter(request)
    return await service_read(request, name, lambda s: s.catalog.own_checks(name), lambda instances: [
        c for n, chks in instances if meta_ok(n) for c in chks])


async def _instances(request: web.Request, connect: bool) -> web.Response:
    """/v1/health/service, or with ``connect`` /v1/health/connect: the same filters over the instances that
    take the service's mesh traffic. Watching the name is enough: a proxy's changes touch its destination."""
    name = request.match_info["service"]
    tags_ok, meta_ok, passing = tag_filter(request), node_meta_filter(request), passing_filter(request)
    return await service_read(request, name, lambda s: s.catalog.health_entries(name, connect), lambda entries: [
        catalog.health_entry(n, svc, chks) for n, svc, chks in entries
        if tags_ok(svc) and meta_ok(n) and (not passing or catalog.all_passing(chks))])


@routes.get("/v1/health/service/{service}")
async def service(request: web.Request) -> web.Response:
    return await _instances(request, connect=False)


@routes.get("/v1/health/connect/{service}")
async def connect(request: web.Request) -> web.Response:
    return await _instances(request, connect=True)


@routes.get("/v1/health/state/{state}")
async def state(request: web.Request) -> web.Response:
    wanted = request.match_info["state"]
    if wanted not in ("any", "passing", "warning", "critical"):
        raise Failed(f"Invalid state {wanted!r}: expected any, passing, warning or critical")
    meta_ok = node_meta_filter(request)

    def encode(nodes: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[dict[str, Any]]:
        return [c for n, chks in nodes if meta_ok(n) for c in chks if catalog.in_state(c, wanted)]

    return await blocking(request, lambda s: (s.catalog.index["checks"], s.catalog.checks_by_node()),
                          topics=[("checks",), ("nodes",)], encode=encode)
