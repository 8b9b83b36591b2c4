"""``/v1/kv``: reads (single, recurse, keys with separator, raw), writes (flags, cas, acquire, release)
and deletes (recurse, cas), with Consul's status codes and bodies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from buoy.core.commands import KVDelete, KVDeleteTree, KVSet
from buoy.core.errors import Invalid
from buoy.core.structs import kv
from buoy.http.blocking import blocking
from buoy.http.context import KV_BODIES, PRETTY, agent_of, server_of
from buoy.http.decode import read_body
from buoy.http.respond import NOT_FOUND, Raw, json_response

if TYPE_CHECKING:
    from buoy.server.state.store import StateStore

routes = web.RouteTableDef()


def _key(request: web.Request) -> str:
    key = request.match_info["key"]
    if key.startswith("/"):
        raise Invalid("Invalid key name: keys must not begin with '/'")
    if "\x00" in key:
        raise Invalid("Invalid key name: keys must not contain NUL")
    return key


def _uint(request: web.Request, name: str) -> int | None:
    if name not in request.query:
        return None
    try:
        value = int(request.query[name])
        if not 0 <= value < 2**64:
            raise ValueError
    except ValueError:
        raise Invalid(f"Invalid {name} value: {request.query[name]!r}") from None
    return value


BODY_CACHE_LIMIT = 65536


def _body(request: web.Request, entry: dict[str, Any]) -> bytes:
    """The encoded JSON of a single-key read, kept per app while the key's ModifyIndex is unchanged.

    The plain ``GET /v1/kv/<key>`` on the leader is the hottest read there is (lock managers and config
    pollers hammer it); serving it from here skips the generic blocking-query path and re-encoding.
    """
    bodies = request.app[KV_BODIES]
    key, index = entry["Key"], entry["ModifyIndex"]
    hit = bodies.get(key)
    if hit is not None and hit[0] == index:
        return hit[1]
    if len(bodies) >= BODY_CACHE_LIMIT:
        bodies.clear()
    body = orjson.dumps([kv.to_api(entry)])
    bodies[key] = (index, body)
    return body


def _fast_get(request: web.Request, key: str) -> web.Response | None:
    """A plain read of an existing key on the leader, or None to take the general path."""
    server = server_of(request)
    if not server.is_leader:
        return None
    entry = server.read(lambda s: s.kv.get(key))
    if entry is None:
        return None
    return web.Response(body=_body(request, entry), content_type="application/json", headers={
        "X-Consul-Index": str(entry["ModifyIndex"]), "X-Consul-KnownLeader": "true",
        "X-Consul-LastContact": "0", "X-Consul-Effective-Consistency": "leader"})


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.Response:
    key = _key(request)
    if key and not request.query_string and not request.app[PRETTY]:
        fast = _fast_get(request, key)
        if fast is not None:
            return fast
    q = request.query
    if "keys" in q:
        sep = q.get("separator", q.get("seperator", ""))

        def keys(s: StateStore) -> tuple[int, Any]:
            found = s.kv.keys(key, sep)
            return s.kv.prefix_index(key), found if (found or not key) else NOT_FOUND

        return await blocking(request, keys, prefixes=[key])
    if "recurse" in q:

        def tree(s: StateStore) -> tuple[int, Any]:
            found = list(s.kv.scan(key))
            return s.kv.prefix_index(key), found if found else NOT_FOUND

        return await blocking(request, tree, prefixes=[key], encode=lambda entries: [kv.to_api(e) for e in entries])
    if not key:
        raise Invalid("Missing key name")
    raw = "raw" in q

    def one(s: StateStore) -> tuple[int, Any]:
        entry = s.kv.get(key)
        return (s.kv.index, NOT_FOUND) if entry is None else (entry["ModifyIndex"], entry)

    return await blocking(request, one, topics=[("kv", key)],
                          encode=lambda e: Raw(e["Value"] or b"") if raw else [kv.to_api(e)])


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    key = _key(request)
    if not key:
        raise Invalid("Missing key name")
    agent = agent_of(request)
    flags, cas, sessions = 0, None, {}
    if request.query_string:
        q = request.query
        if sum(n in q for n in ("cas", "acquire", "release")) > 1:
            raise Invalid(f"Conflicting flags: {request.query_string}")
        flags = _uint(request, "flags") or 0
        cas = _uint(request, "cas")
        for name in ("acquire", "release"):
            if name in q:
                if not q[name]:
                    raise Invalid(f"Missing session for ?{name}")
                sessions[name] = q[name]
    value = await read_body(request, agent.cfg.kv_max_value_size)
    cmd = KVSet(key=key, value=value, flags=flags, cas=cas, acquire=sessions.get("acquire"),
                release=sessions.get("release"))
    result = await server_of(request).apply(cmd)
    return json_response(request, result)


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    key = _key(request)
    q = request.query
    cas = _uint(request, "cas")
    if "recurse" in q:
        if cas is not None:
            raise Invalid(f"Conflicting flags: {request.query_string}")
        result = await server_of(request).apply(KVDeleteTree(prefix=key))
        return json_response(request, result)
    if not key:
        raise Invalid("Missing key name")
    return json_response(request, await server_of(request).apply(KVDelete(key=key, cas=cas)))
