"""Hosts as separate machines would be: each agent in its own network namespace with its own address on a
shared bridge, every one on Consul's default ports. Three servers and two client agents; and a smaller
mesh (one server, two clients) where an application and its sidecar proxy share one namespace, as in a
pod or on a VM, and reach each other's hosts over mutual TLS. The tests create the namespaces and veth
pairs themselves and remove them afterwards, with every process started in them (stopped by PID)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, clean_env, wait_started, wait_until

SUBNET = "10.77.0"
SERVERS, CLIENTS = 3, 2


def _netns_usable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"buoy-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Net:
    tag: str
    root: Path
    servers: int = SERVERS
    key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    namespaces: list[str] = field(default_factory=list)
    # Every process started in a namespace: agents by host number, others (proxies, backends) by name.
    procs: dict[int | str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def ns(self, host: int) -> str:
        return f"{self.tag}-h{host}"

    @staticmethod
    def addr(host: int) -> str:
        return f"{SUBNET}.{host + 1}"

    def ip(self, *args: str, ns: str | None = None) -> None:
        cmd = ["ip", *(["-n", ns] if ns else []), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=10)

    def build(self, hosts: int) -> None:
        """A bridge in a namespace of its own, and one namespace per host joined to it by a veth pair."""
        bridge = f"{self.tag}-br"
        self.ip("netns", "add", bridge)
        self.namespaces.append(bridge)
        self.ip("link", "add", "br0", "type", "bridge", ns=bridge)
        self.ip("link", "set", "br0", "up", ns=bridge)
        for h in range(hosts):
            ns = self.ns(h)
            self.ip("netns", "add", ns)
            self.namespaces.append(ns)
            self.ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{h}", "netns", bridge)
            self.ip("link", "set", f"p{h}", "master", "br0", "up", ns=bridge)
            self.ip("addr", "add", f"{self.addr(h)}/24", "dev", "eth0", ns=ns)
            self.ip("link", "set", "eth0", "up", ns=ns)
            self.ip("link", "set", "lo", "up", ns=ns)

    def start(self, host: int, server: bool) -> None:
        config = self.root / "agent.json"
        config.write_text(json.dumps({"heartbeat_ttl": "2s"}))
        joins = [a for s in range(self.servers) if s != host for a in ("-retry-join", self.addr(s))]
        role = ["-server", "-bootstrap-expect", str(self.servers)] if server else []
        cmd = ["ip", "netns", "exec", self.ns(host), sys.executable, "-m", "buoy", "agent", *role,
               "-node", f"host{host}", "-bind", self.addr(host), "-client", self.addr(host),
               "-data-dir", str(self.root / f"host{host}"), "-encrypt", self.key, "-config-file", str(config),
               "-dns-port", "-1", *joins]
        with open(self.root / f"host{host}.log", "ab") as out:
            # `ip netns exec` execs the agent, so this PID is the agent's own.
            self.procs[host] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())

    def run_in(self, host: int, name: str, *cmd: str) -> Path:
        """Start ``cmd`` in host's namespace as process ``name`` (tracked, stopped by PID); its log."""
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], stdout=out,
                                                stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
        return log

    def proxy(self, host: int, name: str, sidecar_for: str, metrics_port: int = 9102) -> Path:
        """`buoy connect proxy -sidecar-for` in host's namespace, against that host's agent, with metrics on
        the namespace's loopback; waits until it logs "proxy running"."""
        log = self.run_in(host, name, sys.executable, "-m", "buoy", "connect", "proxy", "-sidecar-for", sidecar_for,
                          "-http-addr", f"{self.addr(host)}:8500", "-metrics-addr", f"127.0.0.1:{metrics_port}")
        wait_started(self.procs[name], lambda: "proxy running" in log.read_text(errors="replace"), log,
                     f"proxy {name}", 30)
        return log

    def sh(self, host: int, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A short command in host's namespace, its result."""
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def kill(self, host: int | str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(host, None)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
            proc.wait(timeout=15)

    def curl(self, host: int, path: str, method: str = "GET", data: str | None = None) -> Any:
        """An HTTP call from inside host's namespace to its own agent (port 8500, as on a real machine)."""
        cmd = ["ip", "netns", "exec", self.ns(host), "curl", "-sS", "--fail-with-body", "-m", "20", "-X", method,
               f"http://{self.addr(host)}:8500{path}"] + (["--data-binary", data] if data is not None else [])
        out = subprocess.run(cmd, capture_output=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"curl {path} on host{host}: {out.stdout!r} {out.stderr!r}")
        return out.stdout.decode() if "raw" in path else json.loads(out.stdout or b"null")

    def teardown(self) -> None:
        for host in reversed(list(self.procs)):  # proxies and backends before their agents
            try:
                self.kill(host, signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.kill(host, signal.SIGKILL)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@contextmanager
def _network(root: Path, servers: int, clients: int) -> Iterator[Net]:
    reason = _netns_usable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces are required in CI: {reason}")
        pytest.skip(f"this platform cannot run the multi-host test: {reason}")
    n = Net(f"buoy{uuid.uuid4().hex[:6]}", root, servers)
    try:
        n.build(servers + clients)
        yield n
    finally:
        n.teardown()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert n.tag not in left, left


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    with _network(tmp_path, SERVERS, CLIENTS) as n:
        yield n


@pytest.fixture
def mesh_net(tmp_path: Path) -> Iterator[Net]:
    """One server and two client hosts."""
    with _network(tmp_path, 1, 2) as n:
        yield n


def test_three_servers_two_clients_on_separate_hosts(net: Net) -> None:
    for h in range(SERVERS):
        net.start(h, server=True)
    a, b = SERVERS, SERVERS + 1
    net.start(a, server=False)
    net.start(b, server=False)

    def alive_members(host: int) -> set[str]:
        return {m["Name"] for m in net.curl(host, "/v1/agent/members") if m["Status"] == 1}

    everyone = {f"host{h}" for h in range(SERVERS + CLIENTS)}
    wait_until(lambda: alive_members(b) == everyone, "all five hosts alive", timeout=60)
    members = {m["Name"]: m for m in net.curl(a, "/v1/agent/members")}
    assert members[f"host{a}"]["Addr"] == net.addr(a) and members[f"host{a}"]["Tags"]["role"] == "node"
    assert members["host0"]["Addr"] == net.addr(0) and members["host0"]["Tags"]["role"] == "consul"

    # A service on client a is healthy from client b.
    net.curl(a, "/v1/agent/service/register", "PUT", json.dumps({"Name": "web", "ID": "web-a", "Port": 80}))

    def healthy_web() -> list[str]:
        return [e["Node"]["Address"] for e in net.curl(b, "/v1/health/service/web?passing")]

    wait_until(lambda: healthy_web() == [net.addr(a)], "web healthy from the other client", timeout=20)
    assert net.curl(b, "/v1/kv/netns/before", "PUT", "kept") is True

    # Client a's process dies: its services turn critical in the catalog within the heartbeat TTL.
    net.kill(a)
    wait_until(lambda: healthy_web() == [], "web gone from healthy answers", timeout=20)
    serf = {c["CheckID"]: c["Status"] for c in net.curl(b, f"/v1/health/node/host{a}")}
    assert serf["serfHealth"] == "critical"

    # The leader server dies: nothing acknowledged is lost and client b carries on through the others.
    leader_addr = net.curl(b, "/v1/status/leader")
    leader = next(h for h in range(SERVERS) if leader_addr.startswith(net.addr(h) + ":"))
    net.kill(leader)
    # A write in flight at the moment of the kill may fail ("Leadership lost while committing log",
    # as in Consul): the client cannot know whether it was applied. Once the others have elected a new
    # leader, writes through the client go on.
    wait_until(lambda: (addr := net.curl(b, "/v1/status/leader")) and not addr.startswith(net.addr(leader) + ":"),
               "a new leader", timeout=30)
    assert net.curl(b, "/v1/kv/netns/after", "PUT", "written") is True
    assert net.curl(b, "/v1/kv/netns/before?raw") == "kept"
    net.curl(b, "/v1/agent/service/register", "PUT", json.dumps({"Name": "api", "Port": 81}))
    wait_until(lambda: [e["Node"]["Node"] for e in net.curl(b, "/v1/health/service/api?passing")] == [f"host{b}"],
               "a registration after the leader's death", timeout=20)
    wait_until(lambda: f"host{b}" in alive_members(b) and f"host{leader}" not in alive_members(b),
               "the dead leader failed, client b alive", timeout=30)


def test_mesh_across_hosts(mesh_net: Net) -> None:
    """A backend and its sidecar share host A's namespace (a pod, or a VM); a caller's sidecar on host B
    reaches it at A's address over mutual TLS, as intentions allow."""
    net = mesh_net
    net.start(0, server=True)
    a, b = 1, 2
    net.start(a, server=False)
    net.start(b, server=False)
    wait_until(lambda: {m["Name"] for m in net.curl(b, "/v1/agent/members") if m["Status"] == 1}
               == {"host0", f"host{a}", f"host{b}"}, "all three hosts alive", timeout=60)
    wait_until(lambda: net.curl(a, "/v1/connect/ca/roots")["Roots"], "the cluster's CA", timeout=30)

    # Host A: the backend on loopback only, then its registration with a sidecar on the agent's
    # default port and bind address, then the sidecar beside it.
    site = net.root / "site"
    site.mkdir()
    (site / "index.html").write_text("backend on host A")
    net.run_in(a, "backend", sys.executable, "-m", "http.server", "8080", "--bind", "127.0.0.1",
               "--directory", str(site))
    wait_until(lambda: net.sh(a, "curl", "-sS", "-m", "2", "http://127.0.0.1:8080/").stdout == "backend on host A",
               "the backend answering in its namespace")
    net.curl(a, "/v1/agent/service/register", "PUT", json.dumps(
        {"Name": "backend", "ID": "backend-a", "Port": 8080, "Connect": {"SidecarService": {}}}))
    backend_proxy = net.proxy(a, "proxy-backend", "backend-a")

    # Host B: the caller's sidecar with an upstream to the backend on B's loopback.
    net.curl(b, "/v1/agent/service/register", "PUT", json.dumps(
        {"Name": "caller", "ID": "caller-b", "Port": 9000, "Connect": {"SidecarService": {"Proxy": {
            "Upstreams": [{"DestinationName": "backend", "LocalBindPort": 9191}]}}}}))
    net.proxy(b, "proxy-caller", "caller-b")

    # The catalog gives the sidecar no address of its own: callers use its node's, host A's.
    entries = wait_until(lambda: net.curl(b, "/v1/health/connect/backend?passing"), "the backend's sidecar passing",
                         timeout=40)
    assert [(e["Service"]["Address"], e["Node"]["Address"], e["Service"]["Port"]) for e in entries] == [
        ("", net.addr(a), 21000)]

    def call(limit: int = 5) -> subprocess.CompletedProcess[str]:
        return net.sh(b, "curl", "-sS", "-m", str(limit), "http://127.0.0.1:9191/")

    def intention(action: str) -> None:
        assert net.curl(b, "/v1/connect/intentions/exact?source=caller&destination=backend", "PUT",
                        json.dumps({"Action": action})) is True

    def denials() -> list[str]:
        return [x for x in backend_proxy.read_text(errors="replace").splitlines() if "connection denied" in x]

    def denied_count(metrics_port: int = 9102) -> float:
        body = net.sh(a, "curl", "-sS", "-m", "5", f"http://127.0.0.1:{metrics_port}/metrics").stdout
        return sum(float(line.split()[-1]) for line in body.splitlines()
                   if line.startswith("buoy_proxy_denied_connections_total"))

    # Outside -dev no intention means deny: host A's proxy refuses the caller. An allow intention lets it in.
    wait_until(lambda: call().returncode != 0 and denials(), "the caller denied by default", timeout=30)
    assert "source=caller" in denials()[0] and "Default behavior" in denials()[0], denials()
    intention("allow")
    got = wait_until(lambda: (r := call()).returncode == 0 and r, "the caller reaching the backend", timeout=30)
    assert got.stdout == "backend on host A"

    # A deny intention: new connections are refused at host A's public listener.
    # (The proxy logs a denied source at most once per 10 s, so the count shows this refusal.)
    before = denied_count()
    intention("deny")
    wait_until(lambda: call().returncode != 0, "the deny intention applied", timeout=30)
    assert denied_count() > before
    intention("allow")
    wait_until(lambda: call().stdout == "backend on host A", "the allow intention applied again", timeout=30)

    # Host A's proxy dies: the caller's connections fail at once, not at curl's time limit.
    net.kill("proxy-backend")
    started = time.monotonic()
    failed = call(limit=10)
    elapsed = time.monotonic() - started
    assert failed.returncode not in (0, 28) and elapsed < 5, (failed, elapsed)
