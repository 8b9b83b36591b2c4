"""Query-string filters shared by catalog and health reads: ``tag`` (repeatable, all must match) and
``node-meta`` (``key:value``, repeatable, all must match)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from buoy.core.errors import Invalid
from buoy.core.structs import catalog


def tag_filter(request: web.Request) -> Callable[[dict[str, Any]], bool]:
    wanted = request.query.getall("tag", [])
    if not wanted:
        return lambda _svc: True
    return lambda svc: catalog.has_tags(svc, wanted)


def node_meta_filter(request: web.Request) -> Callable[[dict[str, Any]], bool]:
    pairs = []
    for item in request.query.getall("node-meta", []):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise Invalid(f"Invalid node-meta filter {item!r}: expected key:value")
        pairs.append((key, value))
    if not pairs:
        return lambda _node: True
    return lambda node: catalog.has_node_meta(node, pairs)


def passing_filter(request: web.Request) -> bool:
    if "passing" not in request.query:
        return False
    value = request.query["passing"].lower()
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise Invalid("Invalid value for ?passing")
