"""Request bodies: bounded reads and JSON (field access is :class:`buoy.core.decode.Fields`).

Every problem becomes a 400 (or 413 for size) with a one-line reason before anything is stored.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from buoy.core.decode import DecodeFailed, json_value
from buoy.core.errors import TooLarge

MAX_JSON_BODY = 4 * 1024 * 1024


async def read_body(request: web.Request, limit: int, what: str = "Request body") -> bytes:
    """The raw body, refusing more than ``limit`` bytes.

    A declared length over the limit is refused before reading; a chunked body is cut off by aiohttp's
    ``client_max_size`` (set just above the largest limit), so memory stays bounded either way.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(declared, limit)
    if not request.body_exists:
        return b""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(None, limit) from None
    if len(body) > limit:
        raise too_large(len(body), limit)
    return body


def too_large(size: int | None, limit: int) -> TooLarge:
    what = f"Request body({size} bytes)" if size is not None else "Request body"
    return TooLarge(
        f"{what} too large, max size: {limit} bytes. See "
        "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
    )


async def read_json(request: web.Request, limit: int = MAX_JSON_BODY) -> Any:
    """The decoded JSON body, or None when the body is empty."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return None
    try:
        return json_value(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DecodeFailed(str(e)) from None
