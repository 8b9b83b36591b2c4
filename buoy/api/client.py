"""The HTTP client that every part of Buoy uses to talk to an agent's Consul-compatible /v1 API.

The generic methods (`get`, `put`, `delete`, `request`) take a path, query parameters and a raw body,
and return a `Response`. The thin helpers above them return decoded JSON, and `Result(value, index)`
for reads that carry `X-Consul-Index`, so a caller can turn any of them into a blocking query by
passing `index=` and `wait=`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from buoy import __version__

DEFAULT_ADDR = "127.0.0.1:8500"
DEFAULT_HTTP_PORT = 8500
DEFAULT_TIMEOUT = 30.0
# Buoy's own variables win over Consul's, so one shell can hold both a Consul and a Buoy setup.
ADDR_ENV = ("BUOY_HTTP_ADDR", "CONSUL_HTTP_ADDR")
TOKEN_ENV = ("BUOY_HTTP_TOKEN", "CONSUL_HTTP_TOKEN")
TOKEN_FILE_ENV = ("BUOY_HTTP_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE")

Consistency = Literal["default", "stale", "consistent"]
ParamValue = str | int | bool | None
Params = Mapping[str, ParamValue] | Sequence[tuple[str, ParamValue]]
T = TypeVar("T")


class ClientError(Exception):
    """Base of every error this client raises, so a caller can catch them all at once."""


class APIError(ClientError):
    """The agent answered with a non-2xx status; `body` is its plain-text reason."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body

    def __str__(self) -> str:
        # Consul error bodies are one line of plain text; keep the message one line whatever came back.
        text = " ".join(self.body.split())
        return text or f"the agent answered HTTP {self.status}"


class AgentUnreachable(ClientError):
    """No HTTP conversation was possible with the agent at `addr` (refused, reset, not HTTP, no route)."""

    def __init__(self, addr: str, reason: str = "", sent: bool = False) -> None:
        super().__init__(addr, reason)
        self.addr = addr
        self.reason = reason
        self.sent = sent  # whether the request may have reached the agent (so a write may have happened)

    def __str__(self) -> str:
        return f"cannot reach the agent at {self.addr}" + (f" ({self.reason})" if self.reason else "")


class AgentTimeout(ClientError):
    """The agent accepted the connection but did not answer in time."""

    def __init__(self, addr: str, timeout: float) -> None:
        super().__init__(addr, timeout)
        self.addr = addr
        self.timeout = timeout

    def __str__(self) -> str:
        return f"the agent at {self.addr} did not answer within {self.timeout:g}s"


class InvalidAddress(ClientError, ValueError):
    """An HTTP address that is neither `host:port` nor `http(s)://host:port`."""

    def __init__(self, addr: str) -> None:
        super().__init__(addr)
        self.addr = addr

    def __str__(self) -> str:
        return f"invalid HTTP address {self.addr!r}: expected host:port or http://host:port"


def resolve_addr(flag: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The agent address as the user gave it: the flag, else BUOY_HTTP_ADDR, else CONSUL_HTTP_ADDR."""
    env = os.environ if environ is None else environ
    if flag:
        return flag
    for name in ADDR_ENV:
        if env.get(name):
            return env[name]
    return DEFAULT_ADDR


def resolve_token(
    flag: str | None = None, token_file: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The ACL token: `-token`, `-token-file`, then the token and token-file environment variables."""
    env = os.environ if environ is None else environ
    if flag:
        return flag
    if token_file:
        return _read_token_file(token_file)
    for name in TOKEN_ENV:
        if env.get(name):
            return env[name]
    for name in TOKEN_FILE_ENV:
        if env.get(name):
            return _read_token_file(env[name])
    return None


def _read_token_file(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ClientError(f"cannot read token file {path}: {exc.strerror}") from None


def base_url(addr: str) -> str:
    """`scheme://host:port` for an address given as `host[:port]` or `http(s)://host[:port]`.

    A bare host gets Consul's HTTP port; an explicit scheme keeps URL semantics (80/443), as Consul's
    own client does, so an address that works with `consul` works with `buoy`.
    """
    raw = addr.strip()
    bare = "://" not in raw
    parts = urlsplit(f"http://{raw}" if bare else raw)
    try:
        port = parts.port
    except ValueError:
        raise InvalidAddress(addr) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise InvalidAddress(addr)
    if port is None:
        port = DEFAULT_HTTP_PORT if bare else (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def decode_value(pair: Mapping[str, Any]) -> bytes:
    """The raw bytes of a KVPair's `Value` (base64 in JSON, `null` for an empty value)."""
    value = pair.get("Value")
    return base64.b64decode(value) if value else b""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise ClientError(f"the agent sent a response that is not JSON (HTTP {self.status})") from None

    @property
    def index(self) -> int:
        """X-Consul-Index, or 0 when absent; Consul's clients treat the two alike."""
        try:
            return int(self.headers.get("X-Consul-Index", "0"))
        except ValueError:
            return 0

    @property
    def known_leader(self) -> bool:
        return self.headers.get("X-Consul-KnownLeader", "").lower() == "true"

    @property
    def last_contact_ms(self) -> int:
        try:
            return int(self.headers.get("X-Consul-LastContact", "0"))
        except ValueError:
            return 0


@dataclass(frozen=True)
class Result(Generic[T]):
    """Decoded JSON of a read plus its X-Consul-Index, the index to pass back for a blocking query.

    Unpacks like a pair: `pairs, index = await client.kv_list("app/")`.
    """

    value: T
    index: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.value, self.index))


def _encode_params(params: Params | None) -> list[tuple[str, str]]:
    # Consul's flags are presence-only (`?recurse`), so True becomes an empty value and False/None vanish.
    items: Iterable[tuple[str, ParamValue]] = (
        params.items() if isinstance(params, Mapping) else (params or ())
    )
    encoded = []
    for key, value in items:
        if value is None or value is False:
            continue
        encoded.append((key, "" if value is True else str(value)))
    return encoded


def _wait_param(wait: float | None) -> str | None:
    return None if wait is None else f"{max(0, int(wait * 1000))}ms"


def _node_meta(node_meta: Mapping[str, str] | None) -> list[tuple[str, ParamValue]]:
    return [("node-meta", f"{k}:{v}") for k, v in (node_meta or {}).items()]


def _path(prefix: str, name: str) -> str:
    # Everything but '/' is percent-encoded, so a '?', '#' or '%' in a key cannot end or alter the path.
    return prefix + quote(name, safe="/")


class Client:
    """An async client of one agent. Use `async with Client(...) as c:` or call `close()`."""

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        datacenter: str | None = None,
        consistency: Consistency = "default",
    ) -> None:
        self.addr = resolve_addr(addr)
        self.base_url = base_url(self.addr)
        self.token = resolve_token(token)
        self.timeout = timeout
        self.datacenter = datacenter
        self.consistency = consistency
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use so that constructing a Client needs no running event loop.
        if self._session is None:
            headers = {"User-Agent": f"buoy/{__version__}"}
            if self.token:
                headers["X-Consul-Token"] = self.token
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        data: bytes | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        allow_404: bool = False,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> Response:
        """One HTTP exchange; raises APIError on a non-2xx answer (404 too, unless `allow_404`; none at all
        when not `check`)."""
        query = _encode_params(params)
        if self.datacenter and not any(k == "dc" for k, _ in query):
            query.append(("dc", self.datacenter))
        url = URL(self.base_url + path, encoded=True)
        if query:
            url = url.with_query(query)
        if json_body is not None:
            data = json.dumps(json_body).encode()
        limit = self.timeout if timeout is None else timeout
        try:
            async with self._get_session().request(
                method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=limit)
            ) as resp:
                body = await resp.read()
                response = Response(resp.status, dict(resp.headers), body)
        except TimeoutError:
            raise AgentTimeout(self.addr, limit) from None
        except aiohttp.ClientConnectorError as exc:
            raise AgentUnreachable(self.addr, exc.strerror or "") from None
        except aiohttp.ClientError as exc:
            raise AgentUnreachable(self.addr, type(exc).__name__, sent=True) from None
        if not check or 200 <= response.status < 300 or (allow_404 and response.status == 404):
            return response
        raise APIError(response.status, body.decode("utf-8", "replace"))

    async def get(self, path: str, params: Params | None = None, **kwargs: Any) -> Response:
        return await self.request("GET", path, params=params, **kwargs)

    async def put(
        self, path: str, params: Params | None = None, data: bytes | None = None, **kwargs: Any
    ) -> Response:
        return await self.request("PUT", path, params=params, data=data, **kwargs)

    async def delete(self, path: str, params: Params | None = None, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, params=params, **kwargs)

    async def query(
        self,
        path: str,
        params: Params | None = None,
        *,
        consistency: Consistency | None = None,
        index: int | None = None,
        wait: float | None = None,
        allow_404: bool = False,
    ) -> Response:
        """A read with Consul's consistency and blocking-query parameters."""
        mode = consistency or self.consistency
        extra: list[tuple[str, ParamValue]] = [
            ("stale", mode == "stale"),
            ("consistent", mode == "consistent"),
            ("index", index),
            ("wait", _wait_param(wait)),
        ]
        base = list(params.items()) if isinstance(params, Mapping) else list(params or ())
        # Consul holds a blocking query up to wait + wait/16; the deadline must outlast that.
        timeout = None if wait is None else self.timeout + wait * 17 / 16
        return await self.get(path, base + extra, timeout=timeout, allow_404=allow_404)

    # -- status, agent, operator -----------------------------------------------------------------

    async def status_leader(self) -> str:
        return (await self.get("/v1/status/leader")).json() or ""

    async def status_peers(self) -> list[str]:
        return (await self.get("/v1/status/peers")).json() or []

    async def agent_self(self) -> dict[str, Any]:
        return (await self.get("/v1/agent/self")).json()

    async def agent_members(
        self, *, wan: bool = False, segment: str | None = None, filter: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"wan": wan, "segment": segment, "filter": filter}
        return (await self.get("/v1/agent/members", params)).json() or []

    async def raft_configuration(self, *, consistency: Consistency | None = None) -> dict[str, Any]:
        return (await self.query("/v1/operator/raft/configuration", consistency=consistency)).json()

    # -- catalog ---------------------------------------------------------------------------------

    async def catalog_datacenters(self) -> list[str]:
        return (await self.get("/v1/catalog/datacenters")).json() or []

    async def catalog_nodes(
        self,
        *,
        node_meta: Mapping[str, str] | None = None,
        near: str | None = None,
        filter: str | None = None,
        **query: Any,
    ) -> Result[list[dict[str, Any]]]:
        params = [("near", near), ("filter", filter), *_node_meta(node_meta)]
        resp = await self.query("/v1/catalog/nodes", params, **query)
        return Result(resp.json() or [], resp.index)

    async def catalog_services(
        self, *, node_meta: Mapping[str, str] | None = None, filter: str | None = None, **query: Any
    ) -> Result[dict[str, list[str]]]:
        params = [("filter", filter), *_node_meta(node_meta)]
        resp = await self.query("/v1/catalog/services", params, **query)
        return Result(resp.json() or {}, resp.index)

    async def catalog_service(
        self,
        service: str,
        *,
        tags: Sequence[str] = (),
        node_meta: Mapping[str, str] | None = None,
        near: str | None = None,
        filter: str | None = None,
        **query: Any,
    ) -> Result[list[dict[str, Any]]]:
        params = [("near", near), ("filter", filter), *_node_meta(node_meta), *(("tag", t) for t in tags)]
        resp = await self.query(_path("/v1/catalog/service/", service), params, **query)
        return Result(resp.json() or [], resp.index)

    async def catalog_node(
        self, node: str, *, filter: str | None = None, **query: Any
    ) -> Result[dict[str, Any] | None]:
        resp = await self.query(_path("/v1/catalog/node/", node), {"filter": filter}, **query)
        return Result(resp.json(), resp.index)

    # -- kv --------------------------------------------------------------------------------------

    async def kv_get(self, key: str, **query: Any) -> Result[dict[str, Any] | None]:
        """The KVPair at `key`, or None when there is none (the index is still set, to block on creation)."""
        resp = await self.query(_path("/v1/kv/", key), allow_404=True, **query)
        pairs = resp.json() if resp.status == 200 else None
        return Result(pairs[0] if pairs else None, resp.index)

    async def kv_list(self, prefix: str, **query: Any) -> Result[list[dict[str, Any]]]:
        resp = await self.query(_path("/v1/kv/", prefix), {"recurse": True}, allow_404=True, **query)
        return Result((resp.json() if resp.status == 200 else None) or [], resp.index)

    async def kv_keys(self, prefix: str, separator: str | None = None, **query: Any) -> Result[list[str]]:
        params = {"keys": True, "separator": separator or None}
        resp = await self.query(_path("/v1/kv/", prefix), params, allow_404=True, **query)
        return Result((resp.json() if resp.status == 200 else None) or [], resp.index)

    async def kv_put(
        self,
        key: str,
        value: bytes = b"",
        *,
        flags: int = 0,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """Write `value`; False means a CAS, acquire or release that did not take (Consul's `false`)."""
        params = {"flags": flags or None, "cas": cas, "acquire": acquire, "release": release}
        return (await self.put(_path("/v1/kv/", key), params, data=value)).json() is True

    async def kv_delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        params = {"recurse": recurse, "cas": cas}
        return (await self.delete(_path("/v1/kv/", key), params)).json() is not False

    # -- sessions --------------------------------------------------------------------------------

    async def session_create(self, body: Mapping[str, Any] | None = None) -> str:
        resp = await self.request("PUT", "/v1/session/create", json_body=dict(body or {}))
        return resp.json()["ID"]

    async def session_destroy(self, session_id: str) -> bool:
        return (await self.put(_path("/v1/session/destroy/", session_id))).json() is True

    async def session_renew(self, session_id: str) -> dict[str, Any] | None:
        """The renewed session, or None when it no longer exists."""
        resp = await self.put(_path("/v1/session/renew/", session_id), allow_404=True)
        sessions = resp.json() if resp.status == 200 else None
        return sessions[0] if sessions else None

    async def session_info(self, session_id: str, **query: Any) -> Result[dict[str, Any] | None]:
        resp = await self.query(_path("/v1/session/info/", session_id), **query)
        sessions = resp.json()
        return Result(sessions[0] if sessions else None, resp.index)
