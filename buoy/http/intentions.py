"""``/v1/connect/intentions``: list, read, write and evaluate intentions.

Both of Consul's APIs: by name (``/exact``, the modern one: an upsert and a delete that never fail for a
missing pair) and the legacy one by ID (``POST`` creates and refuses a pair that exists, ``/:uuid``). Reads
are blocking-capable and honour the consistency modes. Errors are Consul's: most refusals of a write are
500s, as Consul's RPC errors are; a body that does not decode is a 400 (500 on the legacy create).

The server makes the ID and the time of a legacy write; rows written by name have neither, as in Consul.
Consul CE has no namespaces or partitions: any but ``default`` is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from buoy.connect.intentions import decide, default_for
from buoy.core.commands import Command, IntentionDelete, IntentionSet
from buoy.core.decode import DecodeFailed
from buoy.core.errors import Failed, Invalid, NotFound
from buoy.core.structs import intention
from buoy.core.structs.intention import Intention, to_api
from buoy.http.blocking import blocking
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.respond import json_response
from buoy.server.state.intentions import IntentionTable
from buoy.server.state.store import StateStore, Topic

routes = web.RouteTableDef()

TOPIC: Topic = ("intentions",)
NOT_FOUND = "Intention not found"


def _param(request: web.Request, param: str, allow_empty: bool = True) -> str:
    values = request.query.getall(param, [])
    if len(values) != 1 or not (values[0] or allow_empty):
        raise Failed(f"required query parameter '{param}' not set")
    return values[0]


def _pair(request: web.Request, allow_empty: bool = True) -> tuple[str, str]:
    source = _param(request, "source", allow_empty)
    destination = _param(request, "destination", allow_empty)
    return (intention.service_name("source", "Source", source),
            intention.service_name("destination", "Destination", destination))


def _many(rows: list[Intention]) -> list[dict[str, Any]]:
    return [to_api(r) for r in rows]


async def _one(request: web.Request, find: Callable[[IntentionTable], Intention | None]) -> web.Response:
    """A blocking read of one intention; a missing one is refused at once, not waited for, as in Consul."""
    def read(s: StateStore) -> tuple[int, Intention]:
        row = find(s.intentions)
        if row is None:
            raise NotFound(NOT_FOUND)
        return s.intentions.index, row

    return await blocking(request, read, topics=[TOPIC], encode=to_api)


async def _propose(request: web.Request, cmd: Command) -> None:
    await server_of(request).apply(cmd)


# ---- routes (the fixed paths before /{id}: the first matching resource answers) -----------------------


@routes.get("/v1/connect/intentions")
async def listing(request: web.Request) -> web.Response:
    return await blocking(request, lambda s: (s.intentions.index, s.intentions.all()), topics=[TOPIC], encode=_many)


@routes.post("/v1/connect/intentions")
async def create(request: web.Request) -> web.Response:
    """The legacy create: a new ID; refused for a pair that already has an intention."""
    try:
        ixn = intention.decode(await read_json(request))
    except DecodeFailed as e:
        raise Failed("Failed to decode request body: " + e.detail) from None
    intention.refuse_tenancy(ixn)
    intention.refuse_elsewhere(ixn)
    if ixn["ID"]:
        raise Failed("ID must be empty when creating a new intention")
    intention.validate_legacy(ixn)
    # Made here, by the proposer, so that every server applies the same ID.
    ixn["ID"] = str(uuid.uuid4())
    await _propose(request, IntentionSet(mode="create", intention=intention.written(ixn)))
    return json_response(request, {"ID": ixn["ID"]})


@routes.get("/v1/connect/intentions/match")
async def match(request: web.Request) -> web.Response:
    """The intentions that apply to each ``name`` as a source or a destination, in evaluation order."""
    by = request.query.getall("by", [])
    if len(by) != 1:
        raise Failed("required query parameter 'by' not set")
    if by[0] not in ("source", "destination"):
        raise Failed("'by' parameter must be one of 'source' or 'destination'")
    names = request.query.getall("name", [])
    if not names:
        raise Failed("required query parameter 'name' not set")
    wanted = {name: intention.service_name("name", "", name) for name in names}

    def read(s: StateStore) -> tuple[int, dict[str, list[Intention]]]:
        return s.intentions.index, {k: s.intentions.match(by[0], v) for k, v in wanted.items()}

    return await blocking(request, read, topics=[TOPIC],
                          encode=lambda matched: {k: _many(rows) for k, rows in matched.items()})


@routes.get("/v1/connect/intentions/check")
async def check(request: web.Request) -> web.Response:
    """Would ``source`` be allowed to connect to ``destination``? L7 intentions count as deny, as in Consul."""
    source_type = request.query.get("source-type") or "consul"
    source, destination = _pair(request)
    intention.require_consul_source(source_type)
    cfg = agent_of(request).cfg
    default = default_for(cfg.intentions_default, cfg.dev)
    return await blocking(request, lambda s: (s.intentions.index, s.intentions.match("destination", destination)),
                          topics=[TOPIC], encode=lambda rows: {"Allowed": decide(rows, source, default).allowed})


@routes.get("/v1/connect/intentions/exact")
async def read_exact(request: web.Request) -> web.Response:
    source, destination = _pair(request)
    return await _one(request, lambda t: t.exact(source, destination))


@routes.put("/v1/connect/intentions/exact")
async def upsert(request: web.Request) -> web.Response:
    """Create or replace the intention of a (source, destination) pair; the names come from the URL."""
    source, destination = _pair(request, allow_empty=False)
    ixn = intention.decode(await read_json(request))
    intention.refuse_elsewhere(ixn)
    ixn.update(ID="", SourceName=source, DestinationName=destination)
    position, held = server_of(request).read(
        lambda s: (s.intentions.position(source, destination), s.intentions.has_destination(destination)))
    intention.validate_upsert(ixn, position, held)
    await _propose(request, IntentionSet(mode="upsert", intention=intention.written(ixn)))
    return json_response(request, True)


@routes.delete("/v1/connect/intentions/exact")
async def delete_exact(request: web.Request) -> web.Response:
    source, destination = _pair(request, allow_empty=False)
    await _propose(request, IntentionDelete(source=source, destination=destination))
    return json_response(request, True)


@routes.get("/v1/connect/intentions/{id}")
async def read(request: web.Request) -> web.Response:
    intention_id = request.match_info["id"]
    problem = intention.uuid_problem(intention_id)
    if problem:
        raise Invalid(f"failed config entry lookup: {problem}")
    return await _one(request, lambda t: t.get(intention_id))


def _lookup_problem(intention_id: str) -> None:
    problem = intention.uuid_problem(intention_id)
    if problem:
        raise Failed(f"Intention lookup failed: failed config entry lookup: {problem}")


@routes.put("/v1/connect/intentions/{id}")
async def update(request: web.Request) -> web.Response:
    """The legacy update by ID: everything but the destination may change."""
    intention_id = request.match_info["id"]
    ixn = intention.decode(await read_json(request))
    intention.refuse_tenancy(ixn)
    intention.refuse_elsewhere(ixn)
    _lookup_problem(intention_id)
    # Consul refuses a missing intention and a new destination before the body's own problems.
    server_of(request).read(lambda s: s.intentions.updatable(intention_id, ixn["DestinationName"]))
    intention.validate_legacy(ixn)
    ixn["ID"] = intention_id  # the URL names the intention, whatever the body says
    await _propose(request, IntentionSet(mode="update", intention=intention.written(ixn)))
    return json_response(request, {"ID": intention_id})


@routes.delete("/v1/connect/intentions/{id}")
async def delete(request: web.Request) -> web.Response:
    intention_id = request.match_info["id"]
    _lookup_problem(intention_id)
    await _propose(request, IntentionDelete(id=intention_id))
    return json_response(request, True)
