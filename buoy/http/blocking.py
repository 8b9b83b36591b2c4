"""Blocking queries and consistency modes, shared by every read endpoint that supports them.

A read is a function of the state store that returns ``(index, rows)``; :meth:`Server.read` runs it under
the state lock, and the optional ``encode`` turns the rows into the response payload after the lock is
released (stored rows are never changed in place, so that is safe). With ``?index=N`` it returns at once
if the index is already past N; otherwise it sleeps on the topics it read until one of them changes (or
``wait`` plus jitter passes), then reads again. Unrelated writes never wake it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from buoy.core.errors import Invalid
from buoy.http import forward
from buoy.http.bexpr import Predicate, compile_filter
from buoy.http.context import LOOP, server_of
from buoy.http.respond import NOT_FOUND, render
from buoy.http.wait import parse_wait
from buoy.server.state.catalog import service_topic
from buoy.server.state.store import StateStore, Topic

Read = Callable[[StateStore], tuple[int, Any]]
Encode = Callable[[Any], Any]


async def consistency(request: web.Request) -> str:
    """Check ``?stale``/``?consistent`` and make the local state fit for the requested mode.

    Returns "forward" for a default read that only the leader may answer.
    """
    q = request.query
    stale, consistent = "stale" in q, "consistent" in q
    if stale and consistent:
        raise Invalid("Cannot specify ?stale with ?consistent, conflicting semantics.")
    server = server_of(request)
    if consistent:
        await server.barrier()
        return "consistent"
    if stale:
        return "stale"
    await server.require_leader()
    return "leader" if server.is_leader else "forward"


def request_filter(request: web.Request) -> Predicate | None:
    """The compiled ``?filter`` expression, or None; a malformed one is a 400."""
    text = request.query.get("filter")
    if not text:
        return None
    return compile_filter(text)


def _filtered(pred: Predicate | None, payload: Any) -> Any:
    if pred is None or not isinstance(payload, list):
        return payload
    return [item for item in payload if pred(item)]


def headers_for(request: web.Request, index: int, mode: str) -> dict[str, str]:
    server = server_of(request)
    return {
        "X-Consul-Index": str(max(index, 1)),
        "X-Consul-KnownLeader": "true" if server.known_leader else "false",
        "X-Consul-LastContact": str(server.last_contact_ms()),
        "X-Consul-Effective-Consistency": mode,
    }


async def blocking(request: web.Request, read: Read, topics: Iterable[Topic] = (),
                   prefixes: Iterable[str] = (), encode: Encode | None = None) -> web.Response:
    min_index, wait = parse_wait(request)
    pred = request_filter(request)
    mode = await consistency(request)
    if mode == "forward":
        return await forward.to_leader(request, wait)
    server = server_of(request)

    def run() -> tuple[int, Any]:
        return server.read(read)

    index, payload = run()
    if min_index and index <= min_index:
        loop = request.app[LOOP]
        deadline = loop.time() + wait
        topics, prefixes = list(topics), list(prefixes)
        while index <= min_index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await server.hub.wait(topics, prefixes, remaining)
            index, payload = run()
            if server.hub.closed:
                break
    if encode is not None and payload is not NOT_FOUND:
        payload = encode(payload)
    return render(request, _filtered(pred, payload), headers_for(request, index, mode))


async def service_read(request: web.Request, name: str, read: Callable[[StateStore], Any],
                       encode: Encode) -> web.Response:
    """A blocking read of one service's instances: answered at that service's own index and woken only by a
    change to it (the name matched as the catalog matches it, without regard to case)."""
    return await blocking(request, lambda s: (s.catalog.name_index(name), read(s)), topics=[service_topic(name)],
                          encode=encode)
