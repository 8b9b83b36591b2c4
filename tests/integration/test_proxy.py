"""The built-in proxy (`buoy connect proxy`) with real processes: a dev agent, proxies started from the
command line, backends on loopback, and real clients (openssl s_client, curl, Python's ssl).

Covered: the public listener refusing a client without a leaf and admitting one with it, its certificate's
SPIFFE ID, curl through an upstream, intentions denying and allowing new connections, round robin and
least-connections over three instances, a proxy killed under load, leaf renewal and root rotation under an
open connection, the agent stopped while the proxies carry on, bad certificates of every kind, handshake
and idle timeouts, the upstream connection limit, and the metrics that count all of it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    REPO,
    DevAgent,
    _stop,
    clean_env,
    free_port,
    running_dev_agent,
    wait_started,
    wait_until,
)

READY_TIMEOUT = 20.0
IO_TIMEOUT = 10.0


# ---- backends ---------------------------------------------------------------------------------------

class _Handler(socketserver.BaseRequestHandler):
    """Answers an HTTP GET with the backend's name (and closes); echoes anything else."""

    def handle(self) -> None:
        self.request.settimeout(30)
        try:
            data = self.request.recv(65536)
            if data.startswith(b"GET "):
                body = self.server.name.encode()  # type: ignore[attr-defined]
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                                     % (len(body), body))
                return
            while data:
                self.request.sendall(data)
                data = self.request.recv(65536)
        except OSError:
            pass


class Backend(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def start(name: str) -> Backend:
        started.append(Backend(name))
        return started[-1]

    yield start
    for b in started:
        b.shutdown()
        b.server_close()


# ---- proxies ----------------------------------------------------------------------------------------

@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        body = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body) for s in fam.samples}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for (n, ls), v in self.metrics().items()
                   if n == name and set(labels.items()) <= set(ls))


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """Start `buoy connect proxy ARGS` against an agent; every one is stopped by PID at teardown."""
    started: list[Proxy] = []

    def start(agent: DevAgent, *args: str) -> Proxy:
        metrics_port = free_port()
        log = tmp_path / f"proxy-{len(started)}.log"
        cmd = [sys.executable, "-m", "buoy", "connect", "proxy", "-http-addr", agent.http_addr,
               "-metrics-addr", f"127.0.0.1:{metrics_port}", *args]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
        proxy = Proxy(proc, log, metrics_port)
        started.append(proxy)
        wait_started(proc, lambda: "proxy running" in proxy.text(), log, "the proxy", READY_TIMEOUT)
        return proxy

    yield start
    for proxy in started:
        _stop(proxy.proc)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevAgent]:
    """A dev agent of this module's own (intentions default to allow in -dev)."""
    with running_dev_agent(tmp_path_factory.mktemp("proxy-agent")) as a:
        yield a


@pytest.fixture
def own_agent(tmp_path: Path) -> Iterator[DevAgent]:
    """A dev agent for one test: its CA gets reconfigured, or it gets stopped."""
    with running_dev_agent(tmp_path) as a:
        wait_until(lambda: requests.get(f"http://{a.http_addr}/v1/connect/ca/roots", timeout=5).json()["Roots"],
                   "the CA's first root")
        yield a


# ---- the agent's API ----------------------------------------------------------------------------------

def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def api(agent: DevAgent, method: str, path: str, **kwargs: Any) -> Any:
    resp = requests.request(method, f"http://{agent.http_addr}{path}", timeout=30, **kwargs)
    assert resp.status_code == 200, (method, path, resp.status_code, resp.text)
    return resp.json() if resp.content else None


def sidecar(agent: DevAgent, name: str, port: int, *, sid: str = "", config: dict[str, Any] | None = None,
            upstreams: list[dict[str, Any]] | None = None) -> int:
    """Register service ``name`` on ``port`` with a sidecar on a free loopback port; that port."""
    public = free_port()
    proxy = {"Config": {"bind_address": "127.0.0.1", **(config or {})}, "Upstreams": upstreams or []}
    api(agent, "PUT", "/v1/agent/service/register", json={
        "Name": name, "ID": sid or name, "Port": port,
        "Connect": {"SidecarService": {"Port": public, "Proxy": proxy}}})
    return public


def upstream(name: str, port: int, **config: Any) -> dict[str, Any]:
    return {"DestinationName": name, "LocalBindPort": port, "Config": config}


def intention(agent: DevAgent, source: str, destination: str, action: str) -> None:
    api(agent, "PUT", f"/v1/connect/intentions/exact?source={source}&destination={destination}",
        json={"Action": action})


def passing(agent: DevAgent, name: str) -> int:
    return len(api(agent, "GET", f"/v1/health/connect/{name}?passing"))


@dataclass
class Pair:
    """A service behind its sidecar and a client whose sidecar has it as an upstream, both proxies running."""

    name: str  # the service; its backend answers with this name
    up: int  # the client's upstream port
    server: Proxy
    client: Proxy


def pair(agent: DevAgent, backends: Any, proxies: Any, prefix: str) -> Pair:
    name, client, up = unique(prefix), unique(f"{prefix}-client"), free_port()
    sidecar(agent, name, backends(name).port)
    sidecar(agent, client, 1, upstreams=[upstream(name, up)])
    server_proxy = proxies(agent, "-sidecar-for", name)
    client_proxy = proxies(agent, "-sidecar-for", client)
    wait_until(lambda: passing(agent, name) == 1, "the sidecar passing", timeout=30)
    return Pair(name, up, server_proxy, client_proxy)


def pems(agent: DevAgent, tmp_path: Path, service: str) -> tuple[Path, Path, Path]:
    """The roots, and a leaf and key for ``service``, as files."""
    roots = api(agent, "GET", "/v1/agent/connect/ca/roots")
    leaf = api(agent, "GET", f"/v1/agent/connect/ca/leaf/{service}")
    paths = tmp_path / f"{service}-roots.pem", tmp_path / f"{service}-cert.pem", tmp_path / f"{service}-key.pem"
    paths[0].write_text("".join(r["RootCert"] for r in roots["Roots"]))
    paths[1].write_text(leaf["CertPEM"])
    paths[2].write_text(leaf["PrivateKeyPEM"])
    return paths


# ---- clients ------------------------------------------------------------------------------------------

def http_get(port: int) -> str:
    """One request on a new connection through a local listener; the body."""
    return requests.get(f"http://127.0.0.1:{port}/", timeout=IO_TIMEOUT, headers={"Connection": "close"}).text


def curl(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-m", "10", f"http://127.0.0.1:{port}/"], capture_output=True,
                          text=True, timeout=30)


def echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def tls_client(roots: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if roots is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(str(roots))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_echo(port: int, ctx: ssl.SSLContext, data: bytes = b"ping") -> bytes:
    """Connect with ``ctx``, send, read back what comes; an exchange the server refuses gives b""
    (TLS 1.3 reports a refused client certificate only at the first read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                return echo(s, data)
        except (ssl.SSLError, ConnectionError):
            return b""


# ---- tests ----------------------------------------------------------------------------------------------

def test_public_listener_wants_a_leaf(agent: DevAgent, backends: Any, proxies: Any, tmp_path: Path) -> None:
    name = unique("echo")
    port = sidecar(agent, name, backends(name).port)
    proxy = proxies(agent, "-sidecar-for", name)
    roots, cert, key = pems(agent, tmp_path, "probe")
    s_client = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(roots)]

    # Without a client certificate: TLS 1.2 fails in the handshake (the server hangs up), TLS 1.3 right
    # after it; no byte passes either way.
    refused = subprocess.run([*s_client, "-tls1_2"], input=b"", capture_output=True, timeout=30)
    assert refused.returncode != 0 and (b"unexpected eof" in refused.stderr or b"alert" in refused.stderr), refused
    assert tls_echo(port, tls_client(roots)) == b""
    wait_until(lambda: proxy.metric("buoy_proxy_handshake_failures_total", reason="no_certificate") == 2,
               "two refusals counted")

    # With a leaf from the agent: verified both ways, and the server is the service's SPIFFE identity.
    accepted = subprocess.run([*s_client, "-cert", str(cert), "-key", str(key), "-showcerts", "-verify_return_error"],
                              input=b"", capture_output=True, timeout=30)
    assert accepted.returncode == 0 and b"Verify return code: 0 (ok)" in accepted.stdout, accepted
    server_cert = x509.load_pem_x509_certificates(accepted.stdout)[0]
    trust_domain = api(agent, "GET", "/v1/connect/ca/roots")["TrustDomain"]
    uris = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == [f"spiffe://{trust_domain}/ns/default/dc/dc1/svc/{name}"]
    assert tls_echo(port, tls_client(roots, cert, key)) == b"ping"
    assert b"TLSv1.3" in subprocess.run([*s_client, "-cert", str(cert), "-key", str(key), "-brief"], input=b"",
                                        capture_output=True, timeout=30).stderr
    assert proxy.metric("buoy_proxy_bytes_total", direction="rx") >= 4
    assert proxy.metric("buoy_proxy_connect_seconds_count") >= 1


def test_upstream_and_intentions(agent: DevAgent, backends: Any, proxies: Any) -> None:
    dest, source = unique("dest"), unique("src")
    sidecar(agent, dest, backends(f"{dest}-body").port)
    up, limited = free_port(), free_port()
    sidecar(agent, source, 1, upstreams=[upstream(dest, up),
                                         upstream(dest, limited, limits={"max_connections": 1})])
    dest_proxy = proxies(agent, "-sidecar-for", dest)
    src_proxy = proxies(agent, "-sidecar-for", source)
    wait_until(lambda: passing(agent, dest) == 1, "the destination's sidecar passing", timeout=30)

    ok = wait_until(lambda: (r := curl(up)).returncode == 0 and r, "curl through the upstream", timeout=30)
    assert ok.stdout == f"{dest}-body"

    # A deny intention: new connections are cut at the destination's public listener, and logged with it.
    intention(agent, source, dest, "deny")
    wait_until(lambda: curl(up).returncode != 0, "the deny intention applied")
    assert dest_proxy.metric("buoy_proxy_denied_connections_total") >= 1
    line = next(x for x in dest_proxy.text().splitlines() if "connection denied" in x)
    assert f"source={source}" in line and "Matched L4 intention" in line and "Action: DENY" in line

    intention(agent, source, dest, "allow")
    assert wait_until(lambda: curl(up).stdout == f"{dest}-body", "the allow intention applied")

    # The limited upstream holds one connection; a second is closed at once and counted.
    with socket.create_connection(("127.0.0.1", limited), timeout=IO_TIMEOUT) as first:
        first.sendall(b"x")  # through to the backend, which echoes it
        assert first.recv(10) == b"x"
        with socket.create_connection(("127.0.0.1", limited), timeout=IO_TIMEOUT) as second:
            second.sendall(b"y")
            try:
                assert second.recv(10) == b""
            except ConnectionResetError:
                pass
    assert src_proxy.metric("buoy_proxy_rejected_connections_total", reason="limit") == 1


def test_balancing_and_an_instance_killed_under_load(agent: DevAgent, backends: Any, proxies: Any) -> None:
    name, client = unique("bal"), unique("cl")
    instance_proxies = []
    for i in range(3):
        sidecar(agent, name, backends(f"b{i}").port, sid=f"{name}-{i}")
        instance_proxies.append(proxies(agent, "-sidecar-for", f"{name}-{i}"))
    rr, least = free_port(), free_port()
    sidecar(agent, client, 1, upstreams=[upstream(name, rr),
                                         upstream(name, least, load_balancer={"policy": "least_request"})])
    client_proxy = proxies(agent, "-sidecar-for", client)
    wait_until(lambda: passing(agent, name) == 3, "three passing instances", timeout=40)
    wait_until(lambda: len({http_get(rr) for _ in range(6)}) == 3, "the client proxy using all three")

    # Round robin: 30 new connections, 10 to each instance.
    counts = Counter(http_get(rr) for _ in range(30))
    assert set(counts) == {"b0", "b1", "b2"} and max(counts.values()) - min(counts.values()) <= 1, counts

    # Least connections: two held connections occupy two instances, so new ones all go to the third.
    held = [socket.create_connection(("127.0.0.1", least), timeout=IO_TIMEOUT) for _ in range(2)]
    try:
        for s in held:
            assert echo(s, b"hold") == b"hold"
        chosen = set()
        for _ in range(6):
            chosen.add(http_get(least))
            # The next pick must see this connection gone, or it would tie with the held ones.
            wait_until(lambda: client_proxy.metric("buoy_proxy_active_connections", listener=f"{name}:{least}") == 2,
                       "the request's connection released")
        assert len(chosen) == 1, chosen
    finally:
        for s in held:
            s.close()

    # Load from four threads; one instance's proxy is killed partway. Only requests in flight on it may
    # fail: later connects to it are refused and retried on another instance, then it is ejected.
    results: list[bool] = []
    killed = threading.Event()

    def worker() -> None:
        for _ in range(60):
            try:
                results.append(http_get(rr) in {"b0", "b1", "b2"})
            except requests.RequestException:
                results.append(False)
            if len(results) >= 60 and not killed.is_set():
                killed.set()
                os.kill(instance_proxies[0].proc.pid, signal.SIGKILL)

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(worker) for _ in range(4)]:
            f.result(timeout=120)
    assert killed.is_set() and len(results) == 240
    assert results.count(False) <= 4, results.count(False)
    assert client_proxy.metric("buoy_proxy_connect_failures_total", listener=f"{name}:{rr}") >= 1
    assert "instance ejected" in client_proxy.text()


def test_rotation_keeps_open_connections(own_agent: DevAgent, backends: Any, proxies: Any,
                                         tmp_path: Path) -> None:
    agent = own_agent
    config = api(agent, "GET", "/v1/connect/ca/configuration")["Config"]
    api(agent, "PUT", "/v1/connect/ca/configuration", json={"Provider": "consul",
                                                            "Config": dict(config, LeafCertTTL="10s")})
    p = pair(agent, backends, proxies, "rot")
    name, up, server_proxy, client_proxy = p.name, p.up, p.server, p.client

    with socket.create_connection(("127.0.0.1", up), timeout=IO_TIMEOUT) as open_conn:
        assert echo(open_conn, b"before") == b"before"
        # Leaves of 10 s are renewed within 5-9 s: both proxies take the new ones; the connection stays.
        for proxy in (server_proxy, client_proxy):
            wait_until(lambda p=proxy: p.text().count("TLS material updated") >= 1, "a renewed leaf", timeout=30)
        assert echo(open_conn, b"renewed") == b"renewed"

        # Root rotation: a new root, cross-signed; new leaves follow, new connections chain to the new root.
        old_root = api(agent, "GET", "/v1/connect/ca/roots")["ActiveRootID"]
        api(agent, "PUT", "/v1/connect/ca/configuration", json={"Provider": "consul",
                                                                "Config": dict(config, LeafCertTTL="10s",
                                                                               RotationPeriod="2000h")})
        new = wait_until(lambda: (d := api(agent, "GET", "/v1/connect/ca/roots"))["ActiveRootID"] != old_root and d,
                         "the new root")
        new_root = next(r for r in new["Roots"] if r["ID"] == new["ActiveRootID"])
        only_new = tmp_path / "new-root.pem"
        only_new.write_text(new_root["RootCert"])
        _, cert, key = pems(agent, tmp_path, "probe")
        public = int(api(agent, "GET", f"/v1/agent/service/{name}-sidecar-proxy")["Port"])
        wait_until(lambda: tls_echo(public, tls_client(only_new, cert, key)) == b"ping",
                   "the public listener serving a leaf of the new root", timeout=30)
        assert echo(open_conn, b"rotated") == b"rotated"
        assert wait_until(lambda: http_get(up) == name, "a new connection through the upstream")
    assert server_proxy.metric("buoy_proxy_idle_timeouts_total") == 0


def test_agent_stopped_proxies_carry_on(own_agent: DevAgent, backends: Any, proxies: Any) -> None:
    agent = own_agent
    p = pair(agent, backends, proxies, "keep")
    name, up, server_proxy, client_proxy = p.name, p.up, p.server, p.client
    assert wait_until(lambda: http_get(up) == name, "a request through the pair")

    os.kill(agent.pid, signal.SIGKILL)
    wait_until(lambda: "cannot reach the agent" in client_proxy.text(), "the proxy noticing", timeout=30)
    for _ in range(10):
        assert http_get(up) == name  # certificates, intentions and instances as last known
    assert server_proxy.proc.poll() is None and client_proxy.proc.poll() is None


def _leaf_from(issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Name, uri: str | None,
               not_after: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=2)).not_valid_after(not_after))
    if uri is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                                        critical=True)
    return key, builder.sign(issuer_key, hashes.SHA256())


def _files(tmp_path: Path, label: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / f"{label}.crt", tmp_path / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_bad_peers_and_slow_connections(own_agent: DevAgent, backends: Any, proxies: Any, tmp_path: Path) -> None:
    agent = own_agent
    # The CA takes a key this test holds, so the test can sign certificates the CA would never issue.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    config = api(agent, "GET", "/v1/connect/ca/configuration")["Config"]
    api(agent, "PUT", "/v1/connect/ca/configuration", json={
        "Provider": "consul", "ForceWithoutCrossSigning": True, "Config": dict(config, PrivateKey=ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())})
    doc = api(agent, "GET", "/v1/connect/ca/roots")
    root = x509.load_pem_x509_certificate(next(r for r in doc["Roots"] if r["Active"])["RootCert"].encode())
    td = doc["TrustDomain"]

    name = unique("guard")
    port = sidecar(agent, name, backends(name).port, config={"handshake_timeout_ms": 500, "idle_timeout_ms": 1000})
    proxy = proxies(agent, "-sidecar-for", name)
    roots, good_cert, good_key = pems(agent, tmp_path, "friend")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    expired = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other CA")])
    cases = {
        "expired": _leaf_from(ca_key, root.subject, f"spiffe://{td}/ns/default/dc/dc1/svc/friend", expired),
        "untrusted": _leaf_from(other_ca_key, other_ca, f"spiffe://{td}/ns/default/dc/dc1/svc/friend", later),
        "other_trust_domain": _leaf_from(ca_key, root.subject,
                                         "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/x",
                                         later),
        "bad_identity": _leaf_from(ca_key, root.subject, None, later),
    }
    for reason, (key, cert) in cases.items():
        cert_path, key_path = _files(tmp_path, reason, key, cert)
        for _ in range(3):
            assert tls_echo(port, tls_client(roots, cert_path, key_path)) == b"", reason
        wait_until(lambda r=reason: proxy.metric("buoy_proxy_handshake_failures_total", reason=r) == 3,
                   f"three {reason} refusals counted")
    for _ in range(3):
        assert tls_echo(port, tls_client(roots)) == b""
    # Logged once per reason (rate limited), and the listener still serves a good peer.
    log = proxy.text()
    for reason in [*cases, "no_certificate"]:
        assert log.count(f"reason={reason}") == 1, (reason, log)
    assert tls_echo(port, tls_client(roots, good_cert, good_key)) == b"ping"

    # A client that connects and never starts its handshake is dropped after handshake_timeout_ms.
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as silent:
        assert silent.recv(10) == b""
    assert proxy.metric("buoy_proxy_handshake_failures_total", reason="timeout") == 1
    # A piped connection that moves nothing for idle_timeout_ms is closed.
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw, \
            tls_client(roots, good_cert, good_key).wrap_socket(raw) as idle:
        assert echo(idle, b"once") == b"once"
        try:
            assert idle.recv(10) == b""
        except (ssl.SSLError, ConnectionError):
            pass
    assert proxy.metric("buoy_proxy_idle_timeouts_total") == 1
    assert proxy.metric("buoy_proxy_active_connections") == 0


def test_bad_usage(agent: DevAgent, buoy_cli: Any) -> None:
    env = {"BUOY_HTTP_ADDR": agent.http_addr}
    buoy_cli("connect", "proxy", env=env).assert_one_line_error(
        2, "Error: exactly one of -sidecar-for, -proxy-id or -service is required")
    buoy_cli("connect", "proxy", "-sidecar-for", "nothing-here", env=env).assert_one_line_error(
        1, "Error: No sidecar proxy registered for nothing-here")
    buoy_cli("connect", "proxy", "-service", "x", "-upstream", "db", env=env).assert_one_line_error(
        1, "Error: -upstream: expected name:port, got 'db'")
    buoy_cli("connect", "proxy", "-service", "x", "-http-addr", f"127.0.0.1:{free_port()}").assert_one_line_error(1)


def test_standalone_proxy(agent: DevAgent, backends: Any, proxies: Any) -> None:
    """`-service` with `-listen`, `-service-addr` and `-upstream`, for a service not registered as a sidecar."""
    name = unique("solo")
    listen, up = free_port(), free_port()
    backend = backends(name)
    proxies(agent, "-service", name, "-listen", f"127.0.0.1:{listen}", "-service-addr", f"127.0.0.1:{backend.port}")
    # The standalone proxy is not registered; register it by hand as Consul users do, then reach it.
    api(agent, "PUT", "/v1/agent/service/register", json={
        "Name": f"{name}-proxy", "Kind": "connect-proxy", "Port": listen, "Address": "127.0.0.1",
        "Proxy": {"DestinationServiceName": name}})
    proxies(agent, "-service", unique("caller"), "-upstream", f"{name}:{up}")
    assert wait_until(lambda: http_get(up) == name, "a request through two standalone proxies")


def test_bulk_bytes_arrive_intact(agent: DevAgent, backends: Any, proxies: Any) -> None:
    """16 MiB each way through the pair, with back-pressure on every hop: nothing lost, reordered or reused."""
    up = pair(agent, backends, proxies, "bulk").up
    payload = os.urandom(16 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", up), timeout=30) as s:
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        got = bytearray()
        while len(got) < len(payload):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        sender.join(timeout=30)
    assert len(got) == len(payload) and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_upstream_checks_the_destinations_identity(agent: DevAgent, backends: Any, proxies: Any) -> None:
    """An instance listed for the destination that presents another service's leaf is refused: the upstream
    only talks to the service it was configured for."""
    real, wanted, client = unique("real"), unique("wanted"), unique("wc")
    public = sidecar(agent, real, backends(real).port)
    proxies(agent, "-sidecar-for", real)
    # A connect-proxy that claims to serve `wanted` but is `real`'s listener.
    api(agent, "PUT", "/v1/agent/service/register", json={
        "Name": f"{wanted}-sidecar-proxy", "Kind": "connect-proxy", "Port": public, "Address": "127.0.0.1",
        "Proxy": {"DestinationServiceName": wanted}})
    up = free_port()
    sidecar(agent, client, 1, upstreams=[upstream(wanted, up)])
    client_proxy = proxies(agent, "-sidecar-for", client)
    wait_until(lambda: passing(agent, wanted) == 1, "the impostor listed as passing", timeout=30)
    wait_until(lambda: curl(up).returncode != 0 and "reason=wrong_service" in client_proxy.text(),
               "the connection refused for its identity")
    line = next(x for x in client_proxy.text().splitlines() if "reason=wrong_service" in x)
    assert f"expected {wanted!r}" in line and f"presented {real!r}" in line
