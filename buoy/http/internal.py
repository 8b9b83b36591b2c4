"""Agent-to-server endpoints: cluster formation, heartbeats, leave, the catalog calls a client agent's
anti-entropy makes, and leaf-certificate signing. Every request and answer is signed with the cluster key
(:mod:`buoy.api.signed`); unsigned or wrongly signed calls get 403. Calls that only the leader can answer
are passed to it."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from buoy.api.internal import APPLY, CA_SIGN, HEARTBEAT, JOIN, LEAVE, NODE, PEER
from buoy.api.signed import NONCE_HEADER, answer_headers
from buoy.core.commands import CatalogDeregister, CatalogRegister, from_wire
from buoy.core.decode import DecodeFailed, json_value
from buoy.core.errors import Failed, Forbidden, Invalid
from buoy.http.context import REPLAY_GUARD, server_of
from buoy.http.decode import read_body

routes = web.RouteTableDef()
MAX_BODY = 1 << 20
# What a client agent's anti-entropy may write: its node's services and checks, nothing else.
CATALOG_COMMANDS = (CatalogRegister, CatalogDeregister)


async def _verified(request: web.Request) -> dict[str, Any]:
    server = server_of(request)
    body = await read_body(request, MAX_BODY)
    if not request.app[REPLAY_GUARD].accept(server.key, request.method, request.path, request.headers, body):
        raise Forbidden("Permission denied: request not signed with this cluster's key")
    try:
        payload = json_value(body) if body else {}
    except ValueError:
        raise DecodeFailed("invalid JSON") from None
    if not isinstance(payload, dict):
        raise DecodeFailed("expected an object")
    return payload


def _answer(request: web.Request, data: Any) -> web.Response:
    body = json.dumps(data).encode()
    key = server_of(request).key
    return web.Response(body=body, content_type="application/json",
                        headers=answer_headers(key, request.headers[NONCE_HEADER], body))


@routes.get(PEER)
async def peer(request: web.Request) -> web.Response:
    await _verified(request)
    server = server_of(request)
    return _answer(request, {
        "raft": server.cfg.raft_addr,
        "known": sorted(server.membership.known),
        "members": server.members() if server.raft is not None else None,
    })


@routes.post(JOIN)
@routes.post(HEARTBEAT)
@routes.post(LEAVE)
@routes.post(CA_SIGN)
async def on_leader(request: web.Request) -> web.Response:
    payload = await _verified(request)
    try:
        return _answer(request, await server_of(request).on_leader(request.path, payload))
    except (KeyError, TypeError):
        raise Invalid(f"{request.path}: malformed request") from None


@routes.post(NODE)
async def node_view(request: web.Request) -> web.Response:
    payload = await _verified(request)
    services, checks = await server_of(request).node_view(str(payload.get("node", "")))
    return _answer(request, {"services": services, "checks": checks})


@routes.post(APPLY)
async def apply(request: web.Request) -> web.Response:
    wire = (await _verified(request)).get("cmd")
    try:
        cmd = from_wire(wire) if isinstance(wire, dict) else None
    except Failed:
        cmd = None
    except KeyError:
        raise Invalid(f"{request.path}: malformed request") from None
    if not isinstance(cmd, CATALOG_COMMANDS):
        raise Invalid("only catalog registrations can be applied through this call")
    return _answer(request, await server_of(request).apply(cmd))
