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
import re
import uuid
from typing import Any

from aiohttp import web

from buoy.core.commands import QueryDelete, QuerySet
from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed, Invalid, NotFound
from buoy.core.structs import catalog
from buoy.durations import parse_duration
from buoy.http.blocking import blocking
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.respond import json_response
from buoy.server.state.catalog import service_topic
from buoy.server.state.queries import QueryError, QueryTable, compile_template, is_template
from buoy.server.state.store import StateStore, Topic

routes = web.RouteTableDef()

QUERY_FIELDS = {"ID", "Name", "Session", "Token", "Service", "DNS", "Template", "CreateIndex", "ModifyIndex"}
SERVICE_FIELDS = {"Service", "Failover", "OnlyPassing", "IgnoreCheckIDs", "Near", "Tags", "NodeMeta", "ServiceMeta",
                  "Connect"}
FAILOVER_FIELDS = {"NearestN", "Datacenters", "Targets"}
TARGET_FIELDS = {"Peer", "PeerName", "Datacenter", "Namespace", "Partition"}
REDACTED_TOKEN = "<hidden>"
NOT_FOUND = "Query not found"
TOPIC: Topic = ("queries",)
# Go's strconv.ParseBool, which reads ?connect.
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def _str_list(f: Fields, name: str) -> list[str] | None:
    return f.str_list(name) if f.has(name) else None  # Consul keeps an absent list as null


def _definition(body: Any) -> dict[str, Any]:
    """A prepared query as stored and listed: Consul's PreparedQuery, every field present."""
    f = Fields(body, "Query", QUERY_FIELDS)
    svc = Fields(f.obj("Service"), "Query.Service", SERVICE_FIELDS)
    failover = Fields(svc.obj("Failover"), "Query.Service.Failover", FAILOVER_FIELDS)
    template = Fields(f.obj("Template"), "Query.Template", {"Type", "Regexp", "RemoveEmptyTags"})
    raw_targets = failover.raw("Targets")
    if raw_targets is not None and not isinstance(raw_targets, list):
        raise DecodeFailed("Query.Service.Failover.Targets: expected a list")
    targets = []
    for i, item in enumerate(raw_targets or ()):
        t = Fields(item, f"Query.Service.Failover.Targets[{i}]", TARGET_FIELDS)
        targets.append({"Peer": t.str("Peer") or t.str("PeerName"), "Datacenter": t.str("Datacenter")})
    return {
        "ID": f.str("ID"),
        "Name": f.str("Name"),
        "Session": f.str("Session"),
        "Token": f.str("Token"),
        "Template": {"Type": template.str("Type"), "Regexp": template.str("Regexp"),
                     "RemoveEmptyTags": template.bool("RemoveEmptyTags")},
        "Service": {
            "Service": svc.str("Service"),
            "Failover": {"NearestN": failover.int("NearestN"), "Datacenters": _str_list(failover, "Datacenters"),
                         "Targets": targets if raw_targets is not None else None},
            "OnlyPassing": svc.bool("OnlyPassing"),
            "IgnoreCheckIDs": _str_list(svc, "IgnoreCheckIDs"),
            "Near": svc.str("Near"),
            "Tags": _str_list(svc, "Tags"),
            "NodeMeta": svc.str_map("NodeMeta") if svc.has("NodeMeta") else None,
            "ServiceMeta": svc.str_map("ServiceMeta") if svc.has("ServiceMeta") else None,
            "Connect": svc.bool("Connect"),
        },
        "DNS": {"TTL": Fields(f.obj("DNS"), "Query.DNS", {"TTL"}).str("TTL")},
    }


def _invalid(query: dict[str, Any]) -> str | None:
    """Why Consul's validation refuses a definition, or None. Name, session and template integrity are
    checked when the write applies, against the state at that moment."""
    svc, failover, ttl = query["Service"], query["Service"]["Failover"], query["DNS"]["TTL"]
    if not (query["Name"] or is_template(query) or query["Session"]):
        return "Must be bound to a session"
    if query["Token"] == REDACTED_TOKEN:
        return f"Bad Token '{REDACTED_TOKEN}', it looks like a query definition with a redacted token was submitted"
    if not svc["Service"]:
        return "Must provide a Service name to query"
    if failover["NearestN"] < 0:
        return f"Bad NearestN '{failover['NearestN']}', must be >= 0"
    if (failover["NearestN"] or failover["Datacenters"]) and failover["Targets"]:
        return "Targets cannot be populated with NearestN or Datacenters"
    if ttl:
        # Go's time.ParseDuration: a unit is required except for a plain 0.
        if re.fullmatch(r"[-+]?[0-9.]+", ttl) and ttl.lstrip("+-") != "0":
            return f"Bad DNS TTL '{ttl}': time: missing unit in duration \"{ttl}\""
        try:
            seconds = parse_duration(ttl)
        except ValueError:
            return f"Bad DNS TTL '{ttl}': time: invalid duration \"{ttl}\""
        if seconds < 0:
            return f"DNS TTL '{round(seconds * 1e9)}', must be >=0"
    return None


async def _propose(request: web.Request, query: dict[str, Any], update: bool) -> None:
    problem = _invalid(query)
    if problem:
        raise Failed(f"Invalid prepared query: {problem}")
    if is_template(query):
        try:
            compile_template(query)
        except QueryError as e:
            raise Failed(f"raft apply failed: failed compiling template: {e}") from None
    await server_of(request).apply(QuerySet(query=query, update=update))


@routes.post("/v1/query")
async def create(request: web.Request) -> web.Response:
    query = _definition(await read_json(request))
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
    query = _definition(await read_json(request))
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
    return await blocking(request, lambda s: (s.queries.index, {"Query": _resolve(s.queries, name)}), topics=[TOPIC])


@routes.get("/v1/query/{id}/execute")
async def execute(request: web.Request) -> web.Response:
    """The healthy instances a query selects. This is also what the DNS interface asks for
    ``<query>.query.<domain>``; like every read it is answered by the leader unless ``?stale``."""
    name = request.match_info["id"]
    limit, connect = _limit(request), _connect(request)
    datacenter = agent_of(request).cfg.datacenter

    def compute(s: StateStore) -> tuple[int, Any]:
        query = _resolve(s.queries, name)
        svc = query["Service"]
        if connect or svc["Connect"]:
            raise Invalid("Connect must be enabled in order to use this endpoint")
        index = max(s.queries.index, s.catalog.name_index(svc["Service"]))
        return index, (query, s.catalog.health_entries(svc["Service"]))

    def encode(found: tuple[dict[str, Any], list[Any]]) -> dict[str, Any]:
        query, entries = found
        svc = query["Service"]
        nodes = [catalog.health_entry(n, inst, checks) for n, inst, checks in entries
                 if _selected(svc, n, inst, checks)]
        random.shuffle(nodes)
        if limit > 0:
            nodes = nodes[:limit]
        return {"Service": svc["Service"], "Nodes": nodes, "DNS": query["DNS"], "Datacenter": datacenter,
                "Failovers": 0}

    topics = server_of(request).read(lambda s: _service_topic(s, name))
    return await blocking(request, compute, topics=[TOPIC, *topics], encode=encode)


def _selected(svc: dict[str, Any], node: dict[str, Any], instance: dict[str, Any],
              checks: list[dict[str, Any]]) -> bool:
    """Consul's prepared-query filters: health (critical never, warning unless OnlyPassing, ignored check IDs
    skipped), then node meta, service meta and tags (all required, ``!tag`` forbidden, case-insensitive)."""
    ignored = set(svc["IgnoreCheckIDs"] or ())
    for check in checks:
        # A maintenance check is what Consul stores as a critical one.
        failing = check["Status"] in ("critical", "maintenance") or (
            svc["OnlyPassing"] and check["Status"] != "passing")
        if failing and check["CheckID"] not in ignored:
            return False
    if any(node["Meta"].get(k) != v for k, v in (svc["NodeMeta"] or {}).items()):
        return False
    if any(instance["Meta"].get(k) != v for k, v in (svc["ServiceMeta"] or {}).items()):
        return False
    have = {t.lower() for t in instance["Tags"]}
    for tag in svc["Tags"] or ():
        tag = tag.lower()
        if (tag[1:] in have) if tag.startswith("!") else (tag not in have):
            return False
    return True


def _resolve(queries: QueryTable, id_or_name: str) -> dict[str, Any]:
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
    return [service_topic(query["Service"]["Service"])] if query else []


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
