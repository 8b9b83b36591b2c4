"""``/v1/catalog``: register, deregister, datacenters, nodes, services, service/:s, connect/:s, node/:n,
node-services/:n."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from buoy.core.commands import CatalogDeregister, CatalogRegister
from buoy.core.structs import catalog
from buoy.http.blocking import blocking, request_filter, service_read
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.filters import node_meta_filter, tag_filter
from buoy.http.respond import json_response

routes = web.RouteTableDef()


@routes.put("/v1/catalog/register")
async def register(request: web.Request) -> web.Response:
    agent = agent_of(request)
    reg = catalog.parse_registration(await read_json(request), agent.cfg.datacenter)
    return json_response(request, await server_of(request).apply(CatalogRegister(reg=reg)))


@routes.put("/v1/catalog/deregister")
async def deregister(request: web.Request) -> web.Response:
    node, service_id, check_id = catalog.parse_deregistration(await read_json(request))
    cmd = CatalogDeregister(node=node, service_id=service_id, check_id=check_id)
    return json_response(request, await server_of(request).apply(cmd))


@routes.get("/v1/catalog/datacenters")
async def datacenters(request: web.Request) -> web.Response:
    return json_response(request, [agent_of(request).cfg.datacenter])


@routes.get("/v1/catalog/nodes")
async def nodes(request: web.Request) -> web.Response:
    meta_ok = node_meta_filter(request)
    return await blocking(request, lambda s: (s.catalog.index["nodes"], s.catalog.all_nodes()), topics=[("nodes",)],
                          encode=lambda rows: [n for n in rows if meta_ok(n)])


@routes.get("/v1/catalog/services")
async def services(request: web.Request) -> web.Response:
    meta_ok = node_meta_filter(request)
    pred = request_filter(request)

    def encode(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, list[str]]:
        return catalog.service_tags(svc for node, svc in pairs
                                    if meta_ok(node) and (pred is None or pred(catalog.service_node(node, svc))))

    return await blocking(request, lambda s: (s.catalog.index["services"], s.catalog.all_instances()),
                          topics=[("services",), ("nodes",)], encode=encode)


async def _instances(request: web.Request, connect: bool) -> web.Response:
    """/v1/catalog/service, or with ``connect`` /v1/catalog/connect: the service's proxies and native instances.
    Watching the name is enough: a proxy's changes touch its destination."""
    name = request.match_info["service"]
    tags_ok, meta_ok = tag_filter(request), node_meta_filter(request)
    return await service_read(request, name, lambda s: s.catalog.instances(name, connect), lambda pairs: [
        catalog.service_node(n, svc) for n, svc in pairs if tags_ok(svc) and meta_ok(n)])


@routes.get("/v1/catalog/service/{service}")
async def service(request: web.Request) -> web.Response:
    return await _instances(request, connect=False)


@routes.get("/v1/catalog/connect/{service}")
async def connect(request: web.Request) -> web.Response:
    return await _instances(request, connect=True)


async def _node_view(request: web.Request, services_as_map: bool) -> web.Response:
    """A node and its services: a map by ID for /catalog/node, a list for /catalog/node-services."""
    name = request.match_info["node"]

    shape = catalog.node_services if services_as_map else catalog.node_service_list

    def encode(view: tuple[dict[str, Any] | None, list[dict[str, Any]]]) -> Any:
        row, svcs = view
        return None if row is None else shape(row, svcs)

    return await blocking(request, lambda s: (s.catalog.node_idx(name), s.catalog.node_services(name)),
                          topics=[("node", name)], encode=encode)


@routes.get("/v1/catalog/node/{node}")
async def node(request: web.Request) -> web.Response:
    return await _node_view(request, services_as_map=True)


@routes.get("/v1/catalog/node-services/{node}")
async def node_services(request: web.Request) -> web.Response:
    return await _node_view(request, services_as_map=False)
