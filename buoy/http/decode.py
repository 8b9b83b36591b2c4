"""Request bodies: bounded reads, JSON with Consul's case-insensitive field names, typed field access.

Every problem becomes a 400 (or 413 for size) with a one-line reason before anything is stored.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from aiohttp import web

from buoy.durations import parse_duration
from buoy.http.errors import HTTPError, bad_request

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


def too_large(size: int | None, limit: int) -> HTTPError:
    what = f"Request body({size} bytes)" if size is not None else "Request body"
    return HTTPError(
        413,
        f"{what} too large, max size: {limit} bytes. See "
        "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
    )


async def read_json(request: web.Request, limit: int = MAX_JSON_BODY) -> Any:
    """The decoded JSON body, or None when the body is empty."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"Request decode failed: {e}") from None


class Fields:
    """A JSON object read the way Go's decoder reads it: field names match case-insensitively.

    ``allowed`` lists the field names Consul's struct has; anything else is refused, as Consul refuses
    unknown fields on the endpoints that use strict decoding.
    """

    def __init__(self, data: Any, what: builtins.str, allowed: set[builtins.str] | None = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise bad_request(f"Request decode failed: {what}: expected a JSON object")
        self.what = what
        self._data = {str(k).lower().replace("_", ""): v for k, v in data.items()}
        if allowed is not None:
            known = {a.lower().replace("_", "") for a in allowed}
            for k in data:
                if str(k).lower().replace("_", "") not in known:
                    raise bad_request(f"Request decode failed: {what}: unknown field {k!r}")

    def has(self, name: builtins.str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: builtins.str, default: Any = None) -> Any:
        v = self._data.get(name.lower().replace("_", ""))
        return default if v is None else v

    def _typed(self, name: builtins.str, kinds: type | tuple[type, ...], label: builtins.str, default: Any) -> Any:
        v = self.raw(name)
        if v is None:
            return default
        if isinstance(v, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise bad_request(f"Request decode failed: {self.what}.{name}: expected {label}")
        if not isinstance(v, kinds):
            raise bad_request(f"Request decode failed: {self.what}.{name}: expected {label}")
        return v

    def str(self, name: builtins.str, default: builtins.str = "") -> builtins.str:
        return self._typed(name, str, "a string", default)

    def int(self, name: builtins.str, default: builtins.int = 0) -> builtins.int:
        return self._typed(name, int, "an integer", default)

    def bool(self, name: builtins.str, default: builtins.bool = False) -> builtins.bool:
        return self._typed(name, bool, "a boolean", default)

    def str_list(self, name: builtins.str) -> list[builtins.str]:
        v = self._typed(name, list, "a list of strings", [])
        if not all(isinstance(x, str) for x in v):
            raise bad_request(f"Request decode failed: {self.what}.{name}: expected a list of strings")
        return list(v)

    def str_map(self, name: builtins.str) -> dict[builtins.str, builtins.str]:
        v = self._typed(name, dict, "an object of strings", {})
        if not all(isinstance(x, str) for x in v.values()):
            raise bad_request(f"Request decode failed: {self.what}.{name}: expected an object of strings")
        return dict(v)

    def checks(self) -> list[Any]:
        """The embedded ``Check`` object followed by the ``Checks`` list (Consul accepts both at once)."""
        found = [self.obj("Check")] if self.obj("Check") is not None else []
        more = self.raw("Checks", [])
        if not isinstance(more, list):
            raise bad_request(f"Request decode failed: {self.what}.Checks: expected a list")
        return found + more

    def obj(self, name: builtins.str) -> Any:
        return self._typed(name, dict, "an object", None)

    def duration(self, name: builtins.str, default: float | None = None) -> float | None:
        """A Go duration string, or a number of nanoseconds (how Go encodes time.Duration)."""
        v = self.raw(name)
        if v is None:
            return default
        if isinstance(v, bool):
            raise bad_request(f"Request decode failed: {self.what}.{name}: expected a duration")
        if isinstance(v, int | float):
            return v / 1e9
        if isinstance(v, str):
            try:
                return parse_duration(v)
            except ValueError:
                raise bad_request(f"Request decode failed: {self.what}.{name}: invalid duration {v!r}") from None
        raise bad_request(f"Request decode failed: {self.what}.{name}: expected a duration")
