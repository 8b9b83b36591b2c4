"""``/v1/catalog``: register, deregister, datacenters, nodes, services, service/:s, connect/:s, node/:n,
node-services/:n."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from buoy.core.commands import CatalogDeregister, CatalogRegister
from buoy.core.decode import Fields
from buoy.core.errors import Invalid
from buoy.core.structs import catalog
from buoy.core.structs.definitions import service_row
from buoy.http.blocking import blocking, request_filter, service_read
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.filters import node_meta_filter, tag_filter
from buoy.http.respond import json_response

if TYPE_CHECKING:
    pass

routes = web.RouteTableDef()

REGISTER_FIELDS = {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta", "Service", "Check",
                   "Checks", "SkipNodeUpdate", "Namespace", "Partition", "PeerName", "Locality", "Token",
                   "EnterpriseMeta", "WriteRequest"}
SERVICE_FIELDS = {"ID", "Service", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Kind", "Proxy",
                  "Connect", "Weights", "EnableTagOverride", "SocketPath", "Namespace", "Partition",
                  "PeerName", "Datacenter", "Locality", "CreateIndex", "ModifyIndex"}
CHECK_FIELDS = {"Node", "CheckID", "ID", "Name", "Notes", "Status", "Output", "ServiceID", "ServiceName",
                "ServiceTags", "Type", "Interval", "Timeout", "Definition", "ExposedPort", "Namespace",
                "Partition", "PeerName", "CreateIndex", "ModifyIndex"}
DEREGISTER_FIELDS = {"Node", "ServiceID", "CheckID", "Datacenter", "Namespace", "Partition", "PeerName", "Token",
                     "WriteRequest"}
HEALTH = ("passing", "warning", "critical", "maintenance")


def _service(data: Any) -> dict[str, Any]:
    f = Fields(data, "Service", SERVICE_FIELDS)
    svc = service_row(f, f.str("Service"))
    for extra in ("Proxy", "Connect"):
        if f.obj(extra) is not None:
            svc[extra] = f.obj(extra)
    return svc


def _check(data: Any, node: str, i: int) -> dict[str, Any]:
    f = Fields(data, f"Checks[{i}]", CHECK_FIELDS)
    check_id = f.str("CheckID") or f.str("ID") or f.str("Name")
    if not check_id:
        raise Invalid("Missing check name")
    status = f.str("Status") or "critical"
    if status not in HEALTH:
        raise Invalid(f"Invalid check status {status!r}")
    definition = f.obj("Definition") or {}
    return {
        "Node": f.str("Node") or node,
        "CheckID": check_id,
        "Name": f.str("Name") or check_id,
        "Status": status,
        "Notes": f.str("Notes"),
        "Output": f.str("Output"),
        "ServiceID": f.str("ServiceID"),
        "Type": f.str("Type"),
        "Interval": f.str("Interval") or str(definition.get("Interval", "") or ""),
        "Timeout": f.str("Timeout") or str(definition.get("Timeout", "") or ""),
        "ExposedPort": 0,
        "Definition": definition,
    }


def parse_registration(body: Any, default_dc: str) -> dict[str, Any]:
    """A catalog registration in the canonical form the state store applies."""
    f = Fields(body, "Request", REGISTER_FIELDS)
    node = f.str("Node")
    if not node:
        raise Invalid("Missing node name")
    address = f.str("Address")
    if not address:
        raise Invalid("Missing node address")
    dc = f.str("Datacenter") or default_dc
    reg: dict[str, Any] = {
        "Node": node, "Address": address, "ID": f.str("ID"), "Datacenter": dc,
        "TaggedAddresses": f.str_map("TaggedAddresses"), "Meta": f.str_map("NodeMeta"),
        "SkipNodeUpdate": f.bool("SkipNodeUpdate"), "Service": None, "Checks": [],
    }
    if f.obj("Service") is not None:
        reg["Service"] = _service(f.obj("Service"))
    reg["Checks"] = [_check(c, node, i) for i, c in enumerate(f.checks())]
    for check in reg["Checks"]:
        if check["Node"] != node:
            raise Invalid(f"Check node {check['Node']!r} does not match registration node {node!r}")
    return reg


@routes.put("/v1/catalog/register")
async def register(request: web.Request) -> web.Response:
    agent = agent_of(request)
    reg = parse_registration(await read_json(request), agent.cfg.datacenter)
    return json_response(request, await server_of(request).apply(CatalogRegister(reg=reg)))


@routes.put("/v1/catalog/deregister")
async def deregister(request: web.Request) -> web.Response:
    f = Fields(await read_json(request), "Request", DEREGISTER_FIELDS)
    node = f.str("Node")
    if not node:
        raise Invalid("Missing node name")
    cmd = CatalogDeregister(node=node, service_id=f.str("ServiceID"), check_id=f.str("CheckID"))
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
        out: dict[str, list[str]] = {}
        for node, svc in pairs:
            if not meta_ok(node) or (pred is not None and not pred(catalog.service_node(node, svc))):
                continue
            tags = out.setdefault(svc["Service"], [])  # each name as registered, "Web" apart from "web"
            tags.extend(t for t in svc["Tags"] if t not in tags)
        return dict(sorted(out.items()))

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

    def encode(view: tuple[dict[str, Any] | None, list[dict[str, Any]]]) -> Any:
        row, svcs = view
        if row is None:
            return None
        out = [catalog.agent_service(svc) for svc in svcs]
        return {"Node": row, "Services": {svc["ID"]: svc for svc in out} if services_as_map else out}

    return await blocking(request, lambda s: (s.catalog.node_idx(name), s.catalog.node_services(name)),
                          topics=[("node", name)], encode=encode)


@routes.get("/v1/catalog/node/{node}")
async def node(request: web.Request) -> web.Response:
    return await _node_view(request, services_as_map=True)


@routes.get("/v1/catalog/node-services/{node}")
async def node_services(request: web.Request) -> web.Response:
    return await _node_view(request, services_as_map=False)
