"""``/v1/session``: create, destroy, renew, info, node, list."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from buoy.core.commands import SessionCreate, SessionDestroy, SessionRenew
from buoy.core.errors import Invalid, NotFound
from buoy.core.structs import session
from buoy.http.blocking import blocking
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.respond import json_response

if TYPE_CHECKING:
    from buoy.server.state.store import StateStore

routes = web.RouteTableDef()

@routes.put("/v1/session/create")
async def create(request: web.Request) -> web.Response:
    # The ID is made here, by the proposer, so that every server applies the same one.
    row = session.decode(await read_json(request), str(uuid.uuid4()), agent_of(request).cfg.node_name)
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
