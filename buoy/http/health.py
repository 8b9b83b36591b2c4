"""``/v1/health``: node, checks, service and connect (``passing``, ``tag``, ``node-meta``), state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from buoy.core.errors import Failed
from buoy.http import encode
from buoy.http.blocking import blocking, service_read
from buoy.http.context import server_of
from buoy.http.filters import node_meta_filter, passing_filter, tag_filter

if TYPE_CHECKING:
    from buoy.server.state.store import StateStore

routes = web.RouteTableDef()


def service_entry(node: dict[str, Any], svc: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """One instance as /v1/health/service lists it (Consul's CheckServiceNode); prepared queries answer
    with the same entries."""
    return {"Node": node, "Service": encode.agent_service(svc), "Checks": checks}


@routes.get("/v1/health/node/{node}")
async def node(request: web.Request) -> web.Response:
    name = request.match_info["node"]
    catalog = server_of(request).store.catalog

    def compute(_s: StateStore) -> tuple[int, Any]:
        checks = sorted(catalog.checks.get(name, {}).values(), key=lambda c: c["CheckID"])
        return catalog.node_idx(name), checks

    return await blocking(request, compute, topics=[("node", name)])


@routes.get("/v1/health/checks/{service}")
async def checks(request: web.Request) -> web.Response:
    name = request.match_info["service"]
    catalog = server_of(request).store.catalog
    meta_ok = node_meta_filter(request)

    return await service_read(request, name, lambda: [
        c for n, s in catalog.instances(name) if meta_ok(n)
        for c in catalog.service_checks(n["Node"], s["ID"]) if c["ServiceID"] == s["ID"]])


async def _instances(request: web.Request, connect: bool) -> web.Response:
    """/v1/health/service, or with ``connect`` /v1/health/connect: the same filters over the instances that
    take the service's mesh traffic. Watching the name is enough: a proxy's changes touch its destination."""
    name = request.match_info["service"]
    catalog = server_of(request).store.catalog
    tags_ok, meta_ok, passing = tag_filter(request), node_meta_filter(request), passing_filter(request)

    return await service_read(request, name, lambda: [
        service_entry(n, s, chks) for n, s, chks in catalog.health_entries(name, connect)
        if tags_ok(s) and meta_ok(n) and not (passing and any(c["Status"] != "passing" for c in chks))])


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
    catalog = server_of(request).store.catalog
    meta_ok = node_meta_filter(request)

    def compute(_s: StateStore) -> tuple[int, Any]:
        out: list[Any] = []
        for node_name, chks in sorted(catalog.checks.items()):
            if not meta_ok(catalog.nodes[node_name]):
                continue
            out.extend(c for _cid, c in sorted(chks.items()) if wanted == "any" or c["Status"] == wanted)
        return catalog.index["checks"], out

    return await blocking(request, compute, topics=[("checks",), ("nodes",)])
