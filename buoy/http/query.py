"""``/v1/query``: prepared queries. Create, list, read, update and delete them; execute or explain one by ID
or by name (templates by name only).

Every read is blocking-capable and honours the consistency modes, execute and explain included (Consul
answers those two at once whatever the index; here ``?index`` waits for the query or its service to
change). There is one datacenter, so ``Failover`` is stored but never used (``Failovers`` is always 0), and
there are no network coordinates, so ``Near`` and ``?near`` are accepted and the results are always
shuffled, as Consul shuffles them when it cannot sort by distance.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from aiohttp import web

from buoy.core.commands import QueryDelete, QuerySet
from buoy.core.errors import Failed, NotFound
from buoy.core.structs import catalog
from buoy.core.structs import query as prepared
from buoy.core.structs.query import Query, QueryError
from buoy.http.blocking import blocking
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.respond import json_response
from buoy.server.state.catalog import service_topic
from buoy.server.state.queries import QueryTable
from buoy.server.state.store import StateStore, Topic

routes = web.RouteTableDef()

NOT_FOUND = "Query not found"
TOPIC: Topic = ("queries",)
# Go's strconv.ParseBool, which reads ?connect.
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


async def _propose(request: web.Request, query: Query, update: bool) -> None:
    prepared.validate(query)
    if prepared.is_template(query):
        try:
            prepared.compile_template(query)
        except QueryError as e:
            raise Failed(f"raft apply failed: failed compiling template: {e}") from None
    await server_of(request).apply(QuerySet(query=query, update=update))


@routes.post("/v1/query")
async def create(request: web.Request) -> web.Response:
    query = prepared.decode(await read_json(request))
    if query["ID"]:
        raise Failed("ID must be empty when creating a new prepared query")
    # Made here, by the proposer, so that every server applies the same ID.
    query["ID"] = str(uuid.uuid4())
    await _propose(request, query, update=False)
    return json_response(request, {"ID": query["ID"]})


@routes.get("/v1/query")
async def listing(request: web.Request) -> web.Response:
    return await blocking(request, lambda s: (s.queries.index, s.queries.all()), topics=[TOPIC])


@routes.get("/v1/query/{id}")
async def read(request: web.Request) -> web.Response:
    query_id = request.match_info["id"]
    def compute(s: StateStore) -> tuple[int, Any]:
        row = s.queries.get(query_id)
        if row is None:
            raise NotFound(NOT_FOUND)
        return s.queries.index, [row]

    return await blocking(request, compute, topics=[TOPIC])


@routes.put("/v1/query/{id}")
async def update(request: web.Request) -> web.Response:
    query = prepared.decode(await read_json(request))
    query["ID"] = request.match_info["id"]  # the URL names the query, whatever the body says
    await _propose(request, query, update=True)
    return web.Response()


@routes.delete("/v1/query/{id}")
async def delete(request: web.Request) -> web.Response:
    await server_of(request).apply(QueryDelete(id=request.match_info["id"]))
    return web.Response()


@routes.get("/v1/query/{id}/explain")
async def explain(request: web.Request) -> web.Response:
    name = request.match_info["id"]
    return await blocking(request, lambda s: (s.queries.index, _resolve(s.queries, name)), topics=[TOPIC],
                          encode=prepared.explain_response)


@routes.get("/v1/query/{id}/execute")
async def execute(request: web.Request) -> web.Response:
    """The healthy instances a query selects. This is also what the DNS interface asks for
    ``<query>.query.<domain>``; like every read it is answered by the leader unless ``?stale``."""
    name = request.match_info["id"]
    limit, connect = _limit(request), _connect(request)
    datacenter = agent_of(request).cfg.datacenter

    def compute(s: StateStore) -> tuple[int, Any]:
        query = _resolve(s.queries, name)
        prepared.refuse_connect(query, connect)
        service = prepared.service_name(query)
        return max(s.queries.index, s.catalog.name_index(service)), (query, s.catalog.health_entries(service))

    def encode(found: tuple[Query, list[Any]]) -> dict[str, Any]:
        query, entries = found
        nodes = [catalog.health_entry(n, inst, checks) for n, inst, checks in entries
                 if prepared.selects(query, n, inst, checks)]
        random.shuffle(nodes)
        if limit > 0:
            nodes = nodes[:limit]
        return prepared.execute_response(query, nodes, datacenter)

    topics = server_of(request).read(lambda s: _service_topic(s, name))
    return await blocking(request, compute, topics=[TOPIC, *topics], encode=encode)


def _resolve(queries: QueryTable, id_or_name: str) -> Query:
    try:
        query = queries.resolve(id_or_name)
    except QueryError as e:
        raise Failed(str(e)) from None
    if query is None:
        raise NotFound(NOT_FOUND)
    return query


def _service_topic(state: StateStore, id_or_name: str) -> list[Topic]:
    """The service a blocking execute watches besides the queries table. Looked up once, before waiting: if
    the query changes to another service, the queries topic wakes the request and the answer returns."""
    try:
        query = state.queries.resolve(id_or_name)
    except QueryError:
        query = None
    return [service_topic(prepared.service_name(query))] if query else []


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise Failed(f'Bad limit: strconv.Atoi: parsing "{raw}": invalid syntax') from None


def _connect(request: web.Request) -> bool:
    raw = request.query.get("connect", "")
    if not raw:
        return False
    if raw not in _GO_BOOLS:
        raise Failed(f"Error parsing 'connect' value: strconv.ParseBool: parsing \"{raw}\": invalid syntax")
    return _GO_BOOLS[raw]
