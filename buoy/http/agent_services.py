"""``/v1/agent`` endpoints for this node's own services and checks."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from buoy.core.errors import Invalid, NotFound
from buoy.core.structs import agent
from buoy.core.structs.definitions import parse_check, parse_service
from buoy.http.context import agent_of, node_of
from buoy.http.decode import read_json
from buoy.http.respond import json_response
from buoy.http.wait import parse_wait

if TYPE_CHECKING:
    from buoy.agent.node import NodeAgent

routes = web.RouteTableDef()
_HTTP_STATUS = {"passing": 200, "warning": 429, "critical": 503, "maintenance": 503}


def _node(request: web.Request) -> NodeAgent:
    return node_of(request)


def _api_scripts(request: web.Request) -> bool:
    """Script checks registered over HTTP need enable_script_checks; enable_local_script_checks is not enough."""
    return bool(agent_of(request).cfg.enable_script_checks)


def _service_out(request: web.Request, svc: dict[str, Any]) -> dict[str, Any]:
    return agent.local_service(svc, agent_of(request).cfg.datacenter)


def _check_out(request: web.Request, check: dict[str, Any]) -> dict[str, Any]:
    return agent.local_check(check, agent_of(request).cfg.node_name, node_of(request).local.services)


@routes.get("/v1/agent/services")
async def services(request: web.Request) -> web.Response:
    local = _node(request).local
    return json_response(request, {sid: _service_out(request, s) for sid, s in sorted(local.services.items())})


def _hashed(request: web.Request) -> tuple[dict[str, Any], str]:
    """The service as Consul's /v1/agent/service/:id returns it, and its content hash."""
    svc = _node(request).local.services.get(request.match_info["id"])
    if svc is None:
        raise NotFound(f'unknown service ID: {request.match_info["id"]}')
    out = _service_out(request, svc)
    digest = hashlib.sha256(orjson.dumps(out, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return agent.hashed_service(out, digest), digest


@routes.get("/v1/agent/service/{id}")
async def service(request: web.Request) -> web.Response:
    """Blocking by ``?hash``, as Consul's: the answer comes when the service's content hash differs from the
    one given (a proxy following its own registration waits here), or when the wait runs out."""
    node = _node(request)
    out, digest = _hashed(request)
    known = request.query.get("hash")
    if known:
        _, wait = parse_wait(request)
        deadline = asyncio.get_running_loop().time() + wait
        while digest == known and not node.closed:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await node.changes.wait_past(node.changes.index, remaining, lambda: node.closed)
            out, digest = _hashed(request)
    return json_response(request, out, headers={"X-Consul-ContentHash": digest})


@routes.put("/v1/agent/service/register")
async def register_service(request: web.Request) -> web.Response:
    _node(request).register(*parse_service(await read_json(request), scripts=_api_scripts(request)))
    return web.Response()


@routes.put("/v1/agent/service/deregister/{id}")
async def deregister_service(request: web.Request) -> web.Response:
    _node(request).deregister_service(request.match_info["id"])
    return web.Response()


@routes.get("/v1/agent/checks")
async def checks(request: web.Request) -> web.Response:
    local = _node(request).local
    return json_response(request, {cid: _check_out(request, c) for cid, c in sorted(local.checks.items())})


@routes.put("/v1/agent/check/register")
async def register_check(request: web.Request) -> web.Response:
    _node(request).register_check(parse_check(await read_json(request), "Check", scripts=_api_scripts(request)))
    return web.Response()


@routes.put("/v1/agent/check/deregister/{id}")
async def deregister_check(request: web.Request) -> web.Response:
    _node(request).deregister_check(request.match_info["id"])
    return web.Response()


async def _report(request: web.Request, status: str) -> web.Response:
    _node(request).report(request.match_info["id"], status, request.query.get("note", ""))
    return web.Response()


@routes.put("/v1/agent/check/pass/{id}")
async def check_pass(request: web.Request) -> web.Response:
    return await _report(request, "passing")


@routes.put("/v1/agent/check/warn/{id}")
async def check_warn(request: web.Request) -> web.Response:
    return await _report(request, "warning")


@routes.put("/v1/agent/check/fail/{id}")
async def check_fail(request: web.Request) -> web.Response:
    return await _report(request, "critical")


@routes.put("/v1/agent/check/update/{id}")
async def check_update(request: web.Request) -> web.Response:
    status, output = agent.parse_check_update(await read_json(request))
    _node(request).report(request.match_info["id"], status, output)
    return web.Response()


def _aggregate(request: web.Request, svc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    checks = (_check_out(request, c) for c in _node(request).local.checks.values())
    return agent.service_health(_service_out(request, svc), checks)


@routes.get("/v1/agent/health/service/id/{id}")
async def health_by_id(request: web.Request) -> web.Response:
    svc = _node(request).local.services.get(request.match_info["id"])
    if svc is None:
        return json_response(request, f"ServiceId {request.match_info['id']} not found", status=404)
    worst, body = _aggregate(request, svc)
    if request.query.get("format") == "text":
        return web.Response(text=worst, status=_HTTP_STATUS[worst])
    return json_response(request, body, status=_HTTP_STATUS[worst])


@routes.get("/v1/agent/health/service/name/{name}")
async def health_by_name(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = [_aggregate(request, s) for s in _node(request).local.services.values() if agent.named(s, name)]
    if not found:
        return json_response(request, f"ServiceName {name} Not Found", status=404)
    worst = agent.worst_status(w for w, _ in found)
    if request.query.get("format") == "text":
        return web.Response(text=worst, status=_HTTP_STATUS[worst])
    return json_response(request, [body for _, body in found], status=_HTTP_STATUS[worst])


def _enable(request: web.Request) -> bool:
    value = request.query.get("enable")
    if value is None:
        raise Invalid("Missing value for enable")
    if value.lower() not in ("true", "false"):
        raise Invalid(f"Invalid value for enable: {value!r}")
    return value.lower() == "true"


@routes.put("/v1/agent/service/maintenance/{id}")
async def service_maintenance(request: web.Request) -> web.Response:
    _node(request).set_maintenance(request.match_info["id"], _enable(request), request.query.get("reason", ""))
    return web.Response()


@routes.put("/v1/agent/maintenance")
async def node_maintenance(request: web.Request) -> web.Response:
    _node(request).set_maintenance(None, _enable(request), request.query.get("reason", ""))
    return web.Response()
