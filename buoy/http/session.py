"""``/v1/session``: create, destroy, renew, info, node, list."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from buoy.core.commands import SessionCreate, SessionDestroy, SessionRenew
from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed, Invalid, NotFound
from buoy.core.structs import session
from buoy.durations import format_duration
from buoy.http.blocking import blocking
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.respond import json_response

if TYPE_CHECKING:
    from buoy.server.state.store import StateStore

routes = web.RouteTableDef()

SESSION_FIELDS = {"ID", "Name", "Node", "LockDelay", "Checks", "NodeChecks", "ServiceChecks", "Behavior", "TTL",
                  "Namespace", "Partition", "WriteRequest"}
MIN_TTL, MAX_TTL, MAX_LOCK_DELAY = 10.0, 86400.0, 60.0


def _lock_delay(f: Fields) -> float:
    raw = f.raw("LockDelay")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw < 1000:
        return float(raw)  # Consul reads small bare numbers as seconds
    delay = f.duration("LockDelay", 15.0)
    assert delay is not None
    return delay


def _session_row(request: web.Request, body: Any) -> dict[str, Any]:
    agent = agent_of(request)
    f = Fields(body, "Session", SESSION_FIELDS)
    delay = _lock_delay(f)
    if delay < 0 or delay > MAX_LOCK_DELAY:
        raise Failed(f"Lock delay must be between 0s and {format_duration(MAX_LOCK_DELAY)}")
    behavior = f.str("Behavior", "release") or "release"
    if behavior not in ("release", "delete"):
        raise Failed(f"Invalid Behavior setting '{behavior}'")
    ttl_text = ""
    if f.has("TTL"):
        ttl = f.duration("TTL")
        assert ttl is not None
        if ttl and not MIN_TTL <= ttl <= MAX_TTL:
            raise Failed(f"Invalid Session TTL '{f.raw('TTL')}', must be between [10s=24h0m0s]")
        ttl_text = format_duration(ttl) if ttl else ""
    if f.has("NodeChecks"):
        node_checks = f.str_list("NodeChecks")
    elif f.has("Checks"):
        node_checks = f.str_list("Checks")
    else:
        node_checks = ["serfHealth"]
    service_checks = []
    raw_sc = f.raw("ServiceChecks", [])
    if not isinstance(raw_sc, list):
        raise DecodeFailed("Session.ServiceChecks: expected a list")
    for i, item in enumerate(raw_sc):
        sc = Fields(item, f"Session.ServiceChecks[{i}]", {"ID", "Namespace"})
        service_checks.append({"ID": sc.str("ID"), "Namespace": sc.str("Namespace")})
    return {
        "ID": str(uuid.uuid4()),
        "Name": f.str("Name"),
        "Node": f.str("Node") or agent.cfg.node_name,
        "LockDelay": int(delay * 1e9),
        "Behavior": behavior,
        "TTL": ttl_text,
        "NodeChecks": node_checks,
        "ServiceChecks": service_checks or None,
    }


@routes.put("/v1/session/create")
async def create(request: web.Request) -> web.Response:
    row = _session_row(request, await read_json(request))
    result = await server_of(request).apply(SessionCreate(session=row))
    return json_response(request, result)


def _session_id(request: web.Request) -> str:
    sid = request.match_info.get("id", "")
    if not sid:
        raise Invalid("Missing session")
    return sid


@routes.put("/v1/session/destroy/{id:.*}")
async def destroy(request: web.Request) -> web.Response:
    sid = _session_id(request)
    return json_response(request, await server_of(request).apply(SessionDestroy(id=sid)))


@routes.put("/v1/session/renew/{id:.*}")
async def renew(request: web.Request) -> web.Response:
    sid = _session_id(request)
    row = await server_of(request).apply(SessionRenew(id=sid))
    if row is None:
        raise NotFound(f"Session id '{sid}' not found")
    return json_response(request, [session.to_api(row)])


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [session.to_api(r) for r in rows]


@routes.get("/v1/session/info/{id:.*}")
async def info(request: web.Request) -> web.Response:
    sid = _session_id(request)

    def one(s: StateStore) -> tuple[int, list[dict[str, Any]]]:
        row = s.sessions.get(sid)
        return s.sessions.index, [row] if row else []

    return await blocking(request, one, topics=[("sessions",)], encode=_rows)


@routes.get("/v1/session/node/{node:.*}")
async def on_node(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    if not node:
        raise Invalid("Missing node name")
    return await blocking(request, lambda s: (s.sessions.index, s.sessions.on_node(node)), topics=[("sessions",)],
                          encode=_rows)


@routes.get("/v1/session/list")
async def listing(request: web.Request) -> web.Response:
    return await blocking(request, lambda s: (s.sessions.index, s.sessions.all()), topics=[("sessions",)],
                          encode=_rows)
