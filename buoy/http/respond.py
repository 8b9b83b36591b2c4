"""Responses in Consul's form: JSON (pretty with ``?pretty`` or in dev mode), the blocking-query headers,
and sentinel payloads for a 404 that still carries an index or a raw body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from buoy.http.context import PRETTY


@dataclass(frozen=True)
class Raw:
    body: bytes
    content_type: str = "text/plain"


NOT_FOUND = object()


def dumps(request: web.Request, data: Any) -> bytes:
    if request.app[PRETTY] or "pretty" in request.query:
        return json.dumps(data, indent=4).encode() + b"\n"
    return orjson.dumps(data)


def json_response(request: web.Request, data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(request, data), status=status, content_type="application/json",
                        headers=headers)


def render(request: web.Request, payload: Any, headers: dict[str, str]) -> web.Response:
    if payload is NOT_FOUND:
        return web.Response(status=404, headers=headers)
    if isinstance(payload, Raw):
        headers = dict(headers, **{"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        return web.Response(body=payload.body, headers=headers, content_type=payload.content_type)
    if isinstance(payload, web.Response):
        payload.headers.update(headers)
        return payload
    return json_response(request, payload, headers=headers)
