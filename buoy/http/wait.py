"""``?index`` and ``?wait``, as every blocking endpoint reads them, Consul's limits and jitter included: the
agent's own endpoints (service health, leaf certificates) and the server's state reads alike."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from buoy.core.errors import Invalid
from buoy.durations import parse_duration
from buoy.http.context import agent_of

T = TypeVar("T", int, float)


def _non_negative(request: web.Request, name: str, parse: Callable[[str], T], problem: str) -> T | None:
    if name not in request.query:
        return None
    try:
        value = parse(request.query[name])
        if value < 0:
            raise ValueError
    except ValueError:
        raise Invalid(problem) from None
    return value


def parse_wait(request: web.Request) -> tuple[int, float]:
    cfg = agent_of(request).cfg
    index = _non_negative(request, "index", int, "Invalid index") or 0
    wait = _non_negative(request, "wait", parse_duration, "Invalid wait time")
    if wait is None:
        wait = cfg.default_query_time
    if not index:
        return 0, wait
    wait = min(wait, cfg.max_query_time) if wait else cfg.default_query_time
    return index, wait + random.uniform(0, wait / 16)
