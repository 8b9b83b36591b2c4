"""UDP, script, gRPC, H2PING and alias checks run by real `buoy agent -dev` processes against endpoints the
tests start on loopback; failures_before_warning, deregister_critical_service_after, the initial status,
and the definitions the agent refuses."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import consul
import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.exceptions import ProtocolError

from tests.integration.conftest import REPO, clean_env, free_port
from tests.integration.test_agent_probes import status_of
from tests.integration.test_agent_services import eventually

Output = str | Callable[[str], bool] | None

# ---- agents ----------------------------------------------------------------------------------------------


class Agent:
    """An agent under test: py-consul for reads, raw PUTs for registrations (their 400s are the point)."""

    def __init__(self, http_port: int) -> None:
        self.base = f"http://127.0.0.1:{http_port}"
        self.c = consul.Consul(host="127.0.0.1", port=http_port)

    def put(self, path: str, body: Any) -> requests.Response:
        return requests.put(f"{self.base}{path}", json=body, timeout=5)

    def register_check(self, body: dict[str, Any]) -> None:
        r = self.put("/v1/agent/check/register", body)
        assert r.status_code == 200, r.text

    def register_service(self, body: dict[str, Any]) -> None:
        r = self.put("/v1/agent/service/register", body)
        assert r.status_code == 200, r.text

    def check(self, check_id: str) -> dict[str, Any]:
        return self.c.agent.checks().get(check_id, {})

    def wait_status(self, check_id: str, status: str, output: Output = None, timeout: float = 15.0) -> dict[str, Any]:
        """The check once it shows ``status`` with ``output`` (a string, or a test of it), by default with
        any output at all (a new check has none); fails after ``timeout`` seconds."""

        def reached() -> dict[str, Any] | None:
            check = self.check(check_id)
            out = check.get("Output", "")
            ok = bool(out) if output is None else output(out) if callable(output) else out == output
            return check if ok and check.get("Status") == status else None

        found = eventually(reached, timeout=timeout)
        assert isinstance(found, dict)
        return found

    def registered(self) -> tuple[set[str], set[str]]:
        return set(self.c.agent.services()), set(self.c.agent.checks())

    def deregister_all_but(self, kept: tuple[set[str], set[str]]) -> None:
        for sid in set(self.c.agent.services()) - kept[0]:
            self.c.agent.service.deregister(sid)
        for cid in set(self.c.agent.checks()) - kept[1]:
            self.c.agent.check.deregister(cid)


def _leader(c: consul.Consul) -> bool:
    try:
        return bool(c.status.leader())
    except requests.RequestException:
        return False


@pytest.fixture
def agent(dev_agent) -> Iterator[Agent]:
    """The session's dev agent (no config file: script checks over HTTP are off). Whatever the test
    registers is removed afterwards, even when it fails, since later tests compare the agent's checks."""
    a = Agent(dev_agent.http_port)
    kept = a.registered()
    yield a
    a.deregister_all_but(kept)


@pytest.fixture(scope="module")
def script_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """A dev agent started with a config file that sets enable_script_checks."""
    tmp = tmp_path_factory.mktemp("script-agent")
    conf = tmp / "agent.json"
    conf.write_text(json.dumps({"enable_script_checks": True}))
    http_port = free_port()
    cmd = [sys.executable, "-m", "buoy", "agent", "-dev", "-http-port", str(http_port), "-dns-port", "-1",
           "-server-port", str(free_port()), "-config-file", str(conf)]
    with open(tmp / "agent.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
    try:
        a = Agent(http_port)
        eventually(lambda: proc.poll() is not None or _leader(a.c), timeout=20)
        assert proc.poll() is None, (tmp / "agent.log").read_text()
        yield a
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def scripts(script_agent: Agent) -> Iterator[Agent]:
    kept = script_agent.registered()
    yield script_agent
    script_agent.deregister_all_but(kept)


def silent_udp() -> socket.socket:
    """A bound UDP socket that never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def addr_of(sock: socket.socket) -> str:
    return f"127.0.0.1:{sock.getsockname()[1]}"


# ---- UDP -------------------------------------------------------------------------------------------------


class UDPEcho:
    """A UDP socket on loopback that echoes every datagram, until closed."""

    def __init__(self) -> None:
        self.sock = silent_udp()
        self.addr = addr_of(self.sock)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(2048)
                self.sock.sendto(data, peer)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def test_udp_check(agent: Agent) -> None:
    echo, silent = UDPEcho(), silent_udp()
    with silent_udp() as gone:
        closed = addr_of(gone)
    try:
        for name, target in (("udp-echo", echo.addr), ("udp-silent", addr_of(silent)), ("udp-closed", closed)):
            agent.register_check({"Name": name, "UDP": target, "Interval": "1s", "Timeout": "1s"})
        assert agent.wait_status("udp-echo", "passing", f"UDP connect {echo.addr}: Success")["Type"] == "udp"
        # No answer and no ICMP error: Consul counts the port as up.
        agent.wait_status("udp-silent", "passing", f"UDP connect {addr_of(silent)}: Success")
        agent.wait_status("udp-closed", "critical", lambda out: out.startswith("read udp 127.0.0.1:")
                          and out.endswith(f"->{closed}: read: connection refused"))
    finally:
        echo.close()
        silent.close()
    agent.wait_status("udp-echo", "critical", lambda out: out.endswith("read: connection refused"))


# ---- script ----------------------------------------------------------------------------------------------


def write_script(path: Path, body: str) -> list[str]:
    """A Python script, as Args for a script check (run without a shell)."""
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_script_exit_codes(scripts: Agent, tmp_path: Path) -> None:
    args = write_script(tmp_path / "exit.py", """
        import sys
        print("exiting with", sys.argv[1])
        sys.exit(int(sys.argv[1]))
    """)
    outcomes = {0: "passing", 1: "warning", 2: "critical"}
    for code in outcomes:
        scripts.register_check({"Name": f"exit-{code}", "Args": [*args, str(code)], "Interval": "1s"})
    for code, status in outcomes.items():
        assert scripts.wait_status(f"exit-{code}", status, f"exiting with {code}\n")["Type"] == "script"
    # ScriptArgs is Consul's older name for Args.
    scripts.register_service({"Name": "scripted", "Check": {"ScriptArgs": [*args, "0"], "Interval": "1s"}})
    scripts.wait_status("service:scripted", "passing", "exiting with 0\n")
    scripts.register_check({"Name": "missing", "Args": [str(tmp_path / "no-such-program")], "Interval": "1s"})
    scripts.wait_status("missing", "critical", lambda out: "No such file" in out)


def _alive(pid: int) -> bool:
    """Whether a process still runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_script_timeout_kills_the_process_group(scripts: Agent, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    args = write_script(tmp_path / "hang.py", f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open({str(pids)!r}, "a") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}\\n")
        print("started", flush=True)
        time.sleep(120)
    """)
    scripts.register_check({"Name": "hang", "Args": args, "Interval": "1s", "Timeout": "2s"})
    scripts.wait_status("hang", "critical", "Timed out (2s) running check\n\nstarted\n")
    first_run = [int(p) for p in pids.read_text().splitlines()[0].split()]
    eventually(lambda: not any(_alive(p) for p in first_run))
    # Deregistering the check stops a run in progress too, children included.
    scripts.c.agent.check.deregister("hang")
    every_run = [int(p) for line in pids.read_text().splitlines() for p in line.split()]
    eventually(lambda: not any(_alive(p) for p in every_run))


def test_script_output_is_capped(scripts: Agent, tmp_path: Path) -> None:
    args = write_script(tmp_path / "chatty.py", """
        import sys
        sys.stdout.write("a" * 6000 + "b" * 3999 + "E")
    """)
    scripts.register_check({"Name": "chatty", "Args": args, "Interval": "1s"})
    scripts.register_check({"Name": "chatty-100", "Args": args, "Interval": "1s", "OutputMaxSize": 100})
    # Consul keeps the end of the output, the part that usually says what went wrong.
    scripts.wait_status("chatty", "passing", "Captured 4096 of 10000 bytes\n...\n" + "a" * 96 + "b" * 3999 + "E")
    scripts.wait_status("chatty-100", "passing", "Captured 100 of 10000 bytes\n...\n" + "b" * 99 + "E")


def test_script_checks_need_enable_script_checks(agent: Agent, tmp_path: Path) -> None:
    before = agent.registered()
    args = write_script(tmp_path / "ok.py", "print('ok')\n")
    for path, body in (("/v1/agent/check/register", {"Name": "s", "Args": args, "Interval": "1s"}),
                       ("/v1/agent/service/register", {"Name": "s", "Check": {"Args": args, "Interval": "1s"}})):
        r = agent.put(path, body)
        assert r.status_code == 400 and "Scripts are disabled" in r.text and "enable_script_checks" in r.text, r.text
    assert agent.registered() == before


# ---- gRPC ------------------------------------------------------------------------------------------------


@pytest.fixture
def grpc_server() -> Iterator[tuple[str, health.HealthServicer, grpc.Server]]:
    """A real gRPC server on loopback with the standard health service: the whole server SERVING,
    service "db" NOT_SERVING."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("db", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        yield f"127.0.0.1:{port}", servicer, server
    finally:
        server.stop(0)


def test_grpc_check(agent: Agent, grpc_server) -> None:
    addr, servicer, server = grpc_server
    agent.register_check({"Name": "grpc-all", "GRPC": addr, "Interval": "1s"})
    agent.register_check({"Name": "grpc-db", "GRPC": f"{addr}/db", "Interval": "1s"})
    agent.register_check({"Name": "grpc-nope", "GRPC": f"{addr}/nope", "Interval": "1s"})
    assert agent.wait_status("grpc-all", "passing", f"gRPC check {addr}: success")["Type"] == "grpc"
    agent.wait_status("grpc-db", "critical", f"gRPC {addr}/db serving status: NOT_SERVING")
    agent.wait_status("grpc-nope", "critical", lambda out: out.startswith("rpc error: code = NotFound"))
    servicer.set("db", health_pb2.HealthCheckResponse.SERVING)
    agent.wait_status("grpc-db", "passing", f"gRPC check {addr}/db: success")
    server.stop(0)
    agent.wait_status("grpc-all", "critical", lambda out: out.startswith("rpc error: code = Unavailable"))


# ---- H2PING ----------------------------------------------------------------------------------------------


class H2Server:
    """A minimal HTTP/2 server on loopback (cleartext h2c, or TLS with ALPN h2) that acknowledges PINGs."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    sock = tls.wrap_socket(self.request, server_side=True) if tls else self.request
                    conn = H2Connection(H2Configuration(client_side=False))
                    conn.initiate_connection()
                    sock.sendall(conn.data_to_send())
                    while data := sock.recv(65536):
                        conn.receive_data(data)  # h2 answers a PING with its ACK by itself
                        sock.sendall(conn.data_to_send())
                except (OSError, ProtocolError):
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_tls(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1, offering ALPN h2."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "buoy-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    ctx.set_alpn_protocols(["h2"])
    return ctx


def test_h2ping_check(agent: Agent, tmp_path: Path) -> None:
    h2c, h2tls = H2Server(), H2Server(self_signed_tls(tmp_path))
    try:
        agent.register_check({"Name": "h2c", "H2PING": h2c.addr, "H2PingUseTLS": False, "Interval": "1s"})
        agent.register_check({"Name": "h2-tls", "H2PING": h2tls.addr, "TLSSkipVerify": True, "Interval": "1s"})
        agent.register_check({"Name": "h2-untrusted", "H2PING": h2tls.addr, "Interval": "1s"})
        assert agent.wait_status("h2c", "passing", "HTTP2 ping was successful")["Type"] == "h2ping"
        agent.wait_status("h2-tls", "passing", "HTTP2 ping was successful")
        agent.wait_status("h2-untrusted", "critical", lambda out: out.startswith(f"Failed to dial to {h2tls.addr}:")
                          and "CERTIFICATE_VERIFY_FAILED" in out)
    finally:
        h2c.close()
        h2tls.close()
    agent.wait_status("h2c", "critical", lambda out: out.startswith(f"Failed to dial to {h2c.addr}:"))


# ---- alias -----------------------------------------------------------------------------------------------


def test_alias_service_follows_its_target(agent: Agent) -> None:
    c = agent.c
    node = c.agent.self()["Config"]["NodeName"]
    target = {"Name": "alias-target", "ID": "alias-target-1", "Check": {"Name": "target ttl", "TTL": "60s"}}
    agent.register_service(target)
    # Consul's use: a sidecar-like service whose health is that of the instance it fronts.
    agent.register_service({"Name": "alias-front", "Check": {"AliasService": "alias-target-1"}})
    cid, ttl = "service:alias-front", "service:alias-target-1"
    # The target's TTL check starts critical, with no output yet.
    check = agent.wait_status(cid, "critical", 'Aliased check "target ttl" failing: ')
    assert check["Type"] == "alias" and check["Interval"] == ""
    c.agent.check.ttl_pass(ttl, notes="fine")
    agent.wait_status(cid, "passing", "All checks passing.")
    c.agent.check.ttl_warn(ttl, notes="slow")
    agent.wait_status(cid, "warning", 'Aliased check "target ttl" failing: slow')
    c.agent.check.ttl_fail(ttl, notes="down")
    agent.wait_status(cid, "critical", 'Aliased check "target ttl" failing: down')
    # The catalog, where DNS and health queries look, has the alias's verdict too.
    eventually(lambda: [ch["Status"] for e in c.health.service("alias-front")[1] for ch in e["Checks"]
                        if ch["CheckID"] == cid] == ["critical"])
    c.agent.service.deregister("alias-target-1")
    agent.wait_status(cid, "critical", f"Service alias-target-1 could not be found on node {node}")
    agent.register_service(target)
    c.agent.check.ttl_pass(ttl)
    agent.wait_status(cid, "passing", "All checks passing.")


def test_alias_node_follows_the_node_checks(agent: Agent) -> None:
    c, remote = agent.c, "alias-remote-node"

    def node_check(status: str) -> None:
        c.catalog.register(remote, "10.0.0.7", check={"CheckID": "remote-health", "Name": "remote health",
                                                      "Status": status, "Output": f"it is {status}"})

    node_check("passing")
    try:
        agent.register_service({"Name": "alias-node-front", "Check": {"AliasNode": remote}})
        cid = "service:alias-node-front"
        agent.wait_status(cid, "passing", "All checks passing.")
        node_check("critical")
        agent.wait_status(cid, "critical", 'Aliased check "remote health" failing: it is critical')
        c.catalog.deregister(remote)
        agent.wait_status(cid, "critical", f"Node {remote} could not be found")
    finally:
        c.catalog.deregister(remote)


# ---- thresholds, reaping, initial status -----------------------------------------------------------------


def test_failures_before_warning(agent: Agent) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        addr = addr_of(listener)
        agent.register_check({"Name": "fbw", "TCP": addr, "Interval": "1s", "FailuresBeforeWarning": 1,
                              "FailuresBeforeCritical": 4})
        agent.wait_status("fbw", "passing")
    # The first failure turns the check warning, with the failure's output; the fourth turns it critical.
    agent.wait_status("fbw", "warning", lambda out: out.startswith(f"dial tcp {addr}:"))
    agent.wait_status("fbw", "critical")


def test_deregister_critical_service_after(agent: Agent) -> None:
    agent.register_service({"Name": "reaped", "Check": {"TTL": "60s", "DeregisterCriticalServiceAfter": "1s"}})
    agent.register_service({"Name": "kept", "Check": {"TTL": "60s", "Status": "passing",
                                                      "DeregisterCriticalServiceAfter": "1s"}})
    assert agent.check("service:reaped")["Definition"]["DeregisterCriticalServiceAfter"] == "1s"
    # Critical from the start (new checks are) and never reported: the agent deregisters the service.
    eventually(lambda: "reaped" not in agent.c.agent.services())
    assert "service:reaped" not in agent.c.agent.checks()
    eventually(lambda: agent.c.catalog.service("reaped")[1] == [])
    # A service whose check is not critical stays.
    assert "kept" in agent.c.agent.services() and status_of(agent.c, "service:kept") == "passing"


def test_initial_status(agent: Agent) -> None:
    """A new check is critical until its first result, unless the definition gives a status. A UDP probe
    of a silent port takes its whole timeout to decide, so the first result is 30 s away here."""
    with silent_udp() as silent:
        for name, status in (("first-critical", None), ("first-warning", "warning")):
            body = {"Name": name, "UDP": addr_of(silent), "Interval": "1s", "Timeout": "30s"}
            agent.register_check(dict(body, Status=status) if status else body)
        assert status_of(agent.c, "first-critical") == "critical"
        assert status_of(agent.c, "first-warning") == "warning"


# ---- refused definitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"Name": "c", "UDP": "nohost", "Interval": "5s"}, "UDP must be host:port"),
        ({"Name": "c", "UDP": "127.0.0.1:70000", "Interval": "5s"}, "UDP must be host:port"),
        ({"Name": "c", "UDP": "127.0.0.1:53"}, "Interval is required for UDP checks"),
        ({"Name": "c", "GRPC": "127.0.0.1/svc", "Interval": "5s"}, "GRPC must be host:port"),
        ({"Name": "c", "GRPC": "127.0.0.1:1", "GRPCUseTLS": True, "TLSSkipVerify": True, "Interval": "5s"},
         "TLSSkipVerify is not supported for gRPC"),
        ({"Name": "c", "H2PING": "127.0.0.1:1", "Interval": "500ms"}, "Interval must be at least 1s"),
        ({"Name": "c", "H2PING": ":443", "Interval": "5s"}, "H2PING must be host:port"),
        ({"Name": "c", "UDP": "127.0.0.1:1", "GRPC": "127.0.0.1:1", "Interval": "5s"},
         "exactly one of TTL, HTTP, TCP, UDP, GRPC, H2PING, Args or AliasService, not UDP and GRPC"),
        ({"Name": "c", "TTL": "5s", "AliasService": "web"}, "not TTL and AliasService"),
        ({"Name": "c", "Interval": "5s"}, "a check needs exactly one of"),
        ({"Name": "c", "DockerContainerID": "f972c95ebf0e", "Args": ["true"], "Interval": "5s"},
         "DockerContainerID checks are not supported"),
        ({"Name": "c", "Docker": "x"}, "unknown field"),
        ({"Name": "c", "AliasService": "", "AliasNode": ""}, "AliasService or AliasNode must name"),
        ({"Name": "c", "TCP": "127.0.0.1:1", "Interval": "5s", "FailuresBeforeWarning": 3,
          "FailuresBeforeCritical": 2}, "FailuresBeforeWarning must not be greater than FailuresBeforeCritical"),
        ({"Name": "c", "TCP": "127.0.0.1:1", "Interval": "5s", "FailuresBeforeCritical": -1}, "must not be negative"),
        ({"Name": "c", "TTL": "10s", "DeregisterCriticalServiceAfter": "500ms"},
         "DeregisterCriticalServiceAfter must be at least 1s"),
    ],
)
def test_bad_check_definitions(agent: Agent, body: dict[str, Any], text: str) -> None:
    before = agent.registered()
    for path, payload in (("/v1/agent/check/register", body),
                          ("/v1/agent/service/register", {"Name": "bad-def", "Check": body})):
        r = agent.put(path, payload)
        assert r.status_code == 400 and text in r.text, (path, r.status_code, r.text)
    assert agent.registered() == before


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"Name": "c", "Args": [], "Interval": "5s"}, "Args must name a program"),
        ({"Name": "c", "Args": "true", "Interval": "5s"}, "expected a list of strings"),
        ({"Name": "c", "Args": ["true"], "ScriptArgs": ["true"], "Interval": "5s"}, "exactly one"),
        ({"Name": "c", "Args": ["true"]}, "Interval is required for Args checks"),
        ({"Name": "c", "Args": ["true"], "Interval": "5s", "OutputMaxSize": -1}, "must not be negative"),
    ],
)
def test_bad_script_definitions(scripts: Agent, body: dict[str, Any], text: str) -> None:
    before = scripts.registered()
    r = scripts.put("/v1/agent/check/register", body)
    assert r.status_code == 400 and text in r.text, r.text
    assert scripts.registered() == before
