"""HTTP and TCP checks run by the agent against endpoints on loopback, with Consul's status mapping and
thresholds."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.test_agent_services import eventually


class Endpoint:
    """A local HTTP endpoint whose status code the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.seen_headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.seen_headers.append(dict(self.headers))
                body = f"status {outer.status}".encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    try:
        yield e
    finally:
        e.close()


def status_of(c, check_id: str) -> str:
    return c.agent.checks().get(check_id, {}).get("Status", "")


def test_http_check_maps_status_codes(dev_agent, c, endpoint) -> None:
    c.agent.service.register("probe-web", check={"HTTP": endpoint.url, "Interval": "1s", "Timeout": "2s",
                                                 "Header": {"X-Probe": ["yes"]}})
    cid = "service:probe-web"
    eventually(lambda: status_of(c, cid) == "passing")
    assert "HTTP GET " + endpoint.url + ": 200 OK Output: status 200" == c.agent.checks()[cid]["Output"]
    assert endpoint.seen_headers[-1]["X-Probe"] == "yes"
    endpoint.status = 429
    eventually(lambda: status_of(c, cid) == "warning")
    endpoint.status = 503
    eventually(lambda: status_of(c, cid) == "critical")
    eventually(lambda: any(ch["Status"] == "critical" for e in c.health.service("probe-web")[1]
                           for ch in e["Checks"] if ch["CheckID"] == cid))
    c.agent.service.deregister("probe-web")


def test_failures_before_critical(dev_agent, c, endpoint) -> None:
    c.agent.check.register("flappy", check={"HTTP": endpoint.url, "Interval": "1s", "FailuresBeforeCritical": 2},
                           check_id="flappy")
    eventually(lambda: status_of(c, "flappy") == "passing")
    endpoint.status = 500
    # The first failure only changes the output; the second in a row turns the check critical.
    eventually(lambda: "500" in c.agent.checks()["flappy"]["Output"])
    assert status_of(c, "flappy") == "passing"
    eventually(lambda: status_of(c, "flappy") == "critical", timeout=15)
    c.agent.check.deregister("flappy")


def test_tcp_check_follows_the_listener(dev_agent, c) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        c.agent.check.register("tcp-probe", check={"TCP": f"127.0.0.1:{port}", "Interval": "1s"},
                               check_id="tcp-probe")
        eventually(lambda: status_of(c, "tcp-probe") == "passing")
        assert c.agent.checks()["tcp-probe"]["Output"] == f"TCP connect 127.0.0.1:{port}: Success"
    finally:
        listener.close()
    eventually(lambda: status_of(c, "tcp-probe") == "critical")
    c.agent.check.deregister("tcp-probe")


def test_a_probe_check_cannot_be_reported_by_hand(dev_agent, c, base, endpoint) -> None:
    import requests

    c.agent.check.register("by-probe", check={"HTTP": endpoint.url, "Interval": "5s"}, check_id="by-probe")
    r = requests.put(f"{base}/v1/agent/check/pass/by-probe", timeout=5)
    assert r.status_code == 500 and "not a TTL check" in r.text
    c.agent.check.deregister("by-probe")
