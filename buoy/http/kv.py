"""``/v1/kv``: reads (single, recurse, keys with separator, raw), writes (flags, cas, acquire, release)
and deletes (recurse, cas), with Consul's status codes and bodies."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from buoy.core.commands import KVDelete, KVDeleteTree, KVSet
from buoy.core.errors import Invalid
from buoy.http import encode
from buoy.http.blocking import blocking
from buoy.http.context import PRETTY, agent_of, server_of
from buoy.http.decode import read_body
from buoy.http.respond import NOT_FOUND, Raw, json_response

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


class _BodyCache:
    """Encoded JSON of recently read single keys, valid while the key's ModifyIndex is unchanged.

    The plain ``GET /v1/kv/<key>`` on the leader is the hottest read there is (lock managers and config
    pollers hammer it); serving it from here skips the generic blocking-query path and re-encoding.
    """

    LIMIT = 65536

    def __init__(self) -> None:
        self._bodies: dict[str, tuple[int, bytes]] = {}

    def body(self, entry: dict[str, Any]) -> bytes:
        key, index = entry["Key"], entry["ModifyIndex"]
        hit = self._bodies.get(key)
        if hit is not None and hit[0] == index:
            return hit[1]
        if len(self._bodies) >= self.LIMIT:
            self._bodies.clear()
        body = orjson.dumps([encode.kv_pair(entry)])
        self._bodies[key] = (index, body)
        return body


_cache = _BodyCache()


def _fast_get(request: web.Request, key: str) -> web.Response | None:
    """A plain read of an existing key on the leader, or None to take the general path."""
    server = server_of(request)
    if not server.is_leader:
        return None
    store = server.store
    with store.lock:
        entry = store.kv.get(key)
        if entry is None:
            return None
        body = _cache.body(entry)
    return web.Response(body=body, content_type="application/json", headers={
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
    store = server_of(request).store
    if "keys" in q:
        sep = q.get("separator", q.get("seperator", ""))

        def keys() -> tuple[int, Any]:
            found = store.kv.keys(key, sep)
            return store.kv.prefix_index(key), found if (found or not key) else NOT_FOUND

        return await blocking(request, keys, prefixes=[key])
    if "recurse" in q:

        def tree() -> tuple[int, Any]:
            found = [encode.kv_pair(e) for e in store.kv.scan(key)]
            return store.kv.prefix_index(key), found if found else NOT_FOUND

        return await blocking(request, tree, prefixes=[key])
    if not key:
        raise Invalid("Missing key name")
    raw = "raw" in q

    def one() -> tuple[int, Any]:
        entry = store.kv.get(key)
        if entry is None:
            return store.kv.index, NOT_FOUND
        payload: Any = Raw(entry["Value"] or b"") if raw else [encode.kv_pair(entry)]
        return entry["ModifyIndex"], payload

    return await blocking(request, one, topics=[("kv", key)])


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
