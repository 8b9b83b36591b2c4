"""``?index`` and ``?wait``, as every blocking endpoint reads them, Consul's limits and jitter included: the
agent's own endpoints (service health, leaf certificates) and the server's state reads alike."""

from __future__ import annotations

import random

from aiohttp import web

from buoy.core.errors import Invalid
from buoy.durations import parse_duration
from buoy.http.context import agent_of


def parse_wait(request: web.Request) -> tuple[int, float]:
    cfg = agent_of(request).cfg
    q = request.query
    index = 0
    if "index" in q:
        try:
            index = int(q["index"])
            if index < 0:
                raise ValueError
        except ValueError:
            raise Invalid("Invalid index") from None
    wait = cfg.default_query_time
    if "wait" in q:
        try:
            wait = parse_duration(q["wait"])
            if wait < 0:
                raise ValueError
        except ValueError:
            raise Invalid("Invalid wait time") from None
    if not index:
        return 0, wait
    wait = min(wait, cfg.max_query_time) if wait else cfg.default_query_time
    return index, wait + random.uniform(0, wait / 16)
