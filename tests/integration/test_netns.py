"""Five hosts as separate machines would be: each agent in its own network namespace with its own
address on a shared bridge, every one on Consul's default ports. Three servers and two client agents;
the test creates the namespaces and veth pairs itself and removes them afterwards."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, clean_env, wait_until

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
    key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    namespaces: list[str] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

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
        joins = [a for s in range(SERVERS) if s != host for a in ("-retry-join", self.addr(s))]
        role = ["-server", "-bootstrap-expect", str(SERVERS)] if server else []
        cmd = ["ip", "netns", "exec", self.ns(host), sys.executable, "-m", "buoy", "agent", *role,
               "-node", f"host{host}", "-bind", self.addr(host), "-client", self.addr(host),
               "-data-dir", str(self.root / f"host{host}"), "-encrypt", self.key, "-config-file", str(config),
               "-dns-port", "-1", *joins]
        with open(self.root / f"host{host}.log", "ab") as out:
            # `ip netns exec` execs the agent, so this PID is the agent's own.
            self.procs[host] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())

    def kill(self, host: int, sig: int = signal.SIGKILL) -> None:
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
        for host in list(self.procs):
            try:
                self.kill(host, signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.kill(host, signal.SIGKILL)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    reason = _netns_usable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces are required in CI: {reason}")
        pytest.skip(f"this platform cannot run the multi-host test: {reason}")
    n = Net(f"buoy{uuid.uuid4().hex[:6]}", tmp_path)
    try:
        n.build(SERVERS + CLIENTS)
        yield n
    finally:
        n.teardown()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert n.tag not in left, left


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
