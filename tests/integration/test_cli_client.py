"""What `buoy.api.Client` and the CLI put on the wire, checked against a recording HTTP server on loopback.

The dev agent does not enforce tokens or datacenters, so the plumbing of `-token`, `-datacenter` and
`-stale` is checked here, where every request is seen as it arrived.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from buoy.api import AgentTimeout, AgentUnreachable, APIError, Client, InvalidAddress, base_url, resolve_addr
from buoy.api.client import resolve_token

if TYPE_CHECKING:
    from conftest import Run


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"true"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """An HTTP server that answers with queued replies and remembers every request."""

    addr: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def reply(self, body: bytes = b"true", status: int = 200, **kwargs: Any) -> None:
        self.replies.append(Reply(status, body, **kwargs))

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            Seen(
                request.method,
                request.raw_path.split("?")[0],
                list(request.query.items()),
                dict(request.headers),
                await request.read(),
            )
        )
        reply = self.replies.pop(0) if self.replies else Reply()
        await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    started = threading.Event()

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        rec.addr = f"127.0.0.1:{runner.addresses[0][1]}"
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert started.wait(10)
    yield rec
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def call(coro_fn: Callable[[Client], Any], **client_args: Any) -> Any:
    async def go() -> Any:
        async with Client(**client_args) as client:
            return await coro_fn(client)

    return asyncio.run(go())


# -- address and token resolution ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("127.0.0.1:8500", "http://127.0.0.1:8500"),
        ("127.0.0.1", "http://127.0.0.1:8500"),
        ("http://127.0.0.1:18500", "http://127.0.0.1:18500"),
        ("http://127.0.0.1", "http://127.0.0.1:80"),
        ("https://localhost:8501/", "https://localhost:8501"),
        ("[::1]:8500", "http://[::1]:8500"),
    ],
)
def test_base_url(addr: str, url: str) -> None:
    assert base_url(addr) == url


@pytest.mark.parametrize(
    "addr", ["", "127.0.0.1:port", "ftp://127.0.0.1:21", "http://127.0.0.1:8500/v1", ":8500"]
)
def test_base_url_rejects(addr: str) -> None:
    with pytest.raises(InvalidAddress):
        base_url(addr)


def test_resolve_addr_order() -> None:
    env = {"BUOY_HTTP_ADDR": "127.0.0.2:1", "CONSUL_HTTP_ADDR": "127.0.0.3:1"}
    assert resolve_addr("127.0.0.1:1", env) == "127.0.0.1:1"
    assert resolve_addr(None, env) == "127.0.0.2:1"
    assert resolve_addr(None, {"CONSUL_HTTP_ADDR": "127.0.0.3:1"}) == "127.0.0.3:1"
    assert resolve_addr(None, {}) == "127.0.0.1:8500"


def test_resolve_token_order(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    (tmp_path / "env-token").write_text("from-env-file\n")
    env = {"BUOY_HTTP_TOKEN": "buoy-env", "CONSUL_HTTP_TOKEN": "consul-env"}
    assert resolve_token("flag", str(tmp_path / "token"), env) == "flag"
    assert resolve_token(None, str(tmp_path / "token"), env) == "from-file"
    assert resolve_token(None, None, env) == "buoy-env"
    assert resolve_token(None, None, {"CONSUL_HTTP_TOKEN": "consul-env"}) == "consul-env"
    assert (
        resolve_token(None, None, {"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "env-token")}) == "from-env-file"
    )
    assert resolve_token(None, None, {}) is None


# -- the client on the wire ----------------------------------------------------------------------


def test_token_datacenter_and_consistency(recorder: Recorder) -> None:
    recorder.reply(b"[]", headers={"X-Consul-Index": "7"})
    result = call(
        lambda c: c.catalog_nodes(node_meta={"rack": "r1"}),
        addr=recorder.addr,
        token="secret",
        datacenter="dc2",
        consistency="stale",
    )
    assert (result.value, result.index) == ([], 7)
    seen = recorder.seen[0]
    assert (seen.method, seen.path) == ("GET", "/v1/catalog/nodes")
    assert seen.headers["X-Consul-Token"] == "secret"
    assert sorted(seen.query) == [("dc", "dc2"), ("node-meta", "rack:r1"), ("stale", "")]


def test_no_token_sends_no_header(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BUOY_HTTP_TOKEN", "CONSUL_HTTP_TOKEN", "BUOY_HTTP_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    call(lambda c: c.kv_put("k", b"v"), addr=recorder.addr)
    assert "X-Consul-Token" not in recorder.seen[0].headers


def test_kv_keys_are_escaped_and_values_raw(recorder: Recorder) -> None:
    call(lambda c: c.kv_put("a b/c?d#e%f", b"\x00\xff", flags=3), addr=recorder.addr)
    seen = recorder.seen[0]
    assert (seen.method, seen.path, seen.query, seen.body) == (
        "PUT",
        "/v1/kv/a%20b/c%3Fd%23e%25f",
        [("flags", "3")],
        b"\x00\xff",
    )


def test_blocking_query_parameters_and_missing_key(recorder: Recorder) -> None:
    recorder.reply(b"", status=404, headers={"X-Consul-Index": "12"})
    result = call(lambda c: c.kv_get("app/x", index=11, wait=2.5), addr=recorder.addr)
    assert (result.value, result.index) == (None, 12)
    assert recorder.seen[0].query == [("index", "11"), ("wait", "2500ms")]


def test_cas_refused_is_false_not_an_error(recorder: Recorder) -> None:
    recorder.reply(b"false")
    assert call(lambda c: c.kv_put("k", b"v", cas=5), addr=recorder.addr) is False
    assert recorder.seen[0].query == [("cas", "5")]


def test_error_answer_raises_api_error_with_the_body(recorder: Recorder) -> None:
    recorder.reply(b"No cluster leader\n", status=500)
    with pytest.raises(APIError) as caught:
        call(lambda c: c.kv_get("k"), addr=recorder.addr)
    assert (caught.value.status, str(caught.value)) == (500, "No cluster leader")


def test_unreachable_and_timeout(recorder: Recorder, port_picker: Callable[[], int]) -> None:
    closed = f"127.0.0.1:{port_picker()}"
    with pytest.raises(AgentUnreachable) as caught:
        call(lambda c: c.status_leader(), addr=closed)
    assert caught.value.addr == closed

    recorder.reply(b'""', delay=2)
    with pytest.raises(AgentTimeout):
        call(lambda c: c.status_leader(), addr=recorder.addr, timeout=0.3)


# -- the CLI's shared flags ----------------------------------------------------------------------


def test_cli_sends_token_datacenter_and_stale(recorder: Recorder, buoy_cli: Callable[..., Run]) -> None:
    recorder.reply(b'[{"Key": "k", "Flags": 0, "Value": "dg==", "CreateIndex": 1, "ModifyIndex": 1}]')
    run = buoy_cli(
        "kv", "get", "-token=tok", "-datacenter", "dc9", "-stale", "k", env={"BUOY_HTTP_ADDR": recorder.addr}
    )
    assert (run.code, run.out, run.stderr) == (0, "v\n", "")
    seen = recorder.seen[0]
    assert seen.headers["X-Consul-Token"] == "tok"
    assert sorted(seen.query) == [("dc", "dc9"), ("stale", "")]


def test_cli_token_from_environment_and_file(
    recorder: Recorder, buoy_cli: Callable[..., Run], tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("file-token\n")
    env = {"BUOY_HTTP_ADDR": recorder.addr, "CONSUL_HTTP_TOKEN": "env-token"}
    assert buoy_cli("kv", "put", "k", "v", env=env).code == 0
    assert buoy_cli("kv", "put", f"-token-file={tmp_path / 'token'}", "k", "v", env=env).code == 0
    assert [s.headers["X-Consul-Token"] for s in recorder.seen] == ["env-token", "file-token"]


def test_cli_prints_the_agents_error_body(recorder: Recorder, buoy_cli: Callable[..., Run]) -> None:
    recorder.reply(b"Permission denied: token lacks permission 'key:write' on \"k\"", status=403)
    run = buoy_cli("kv", "put", "k", "v", env={"BUOY_HTTP_ADDR": recorder.addr})
    assert (run.code, run.stdout) == (1, b"")
    assert (
        run.stderr
        == "Error! Failed writing data: Permission denied: token lacks permission 'key:write' on \"k\"\n"
    )

    recorder.reply(b"No cluster leader", status=500)
    run = buoy_cli("operator", "raft", "list-peers", env={"BUOY_HTTP_ADDR": recorder.addr})
    assert (run.code, run.stderr) == (1, "Error getting peers: No cluster leader\n")
