"""A real 3-server Buoy cluster on loopback for tests: processes started with -bootstrap-expect and
-retry-join, killed by PID (SIGTERM or SIGKILL) and restarted on the same ports and data dirs."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.integration.conftest import REPO, clean_env, free_port


class Cluster:
    def __init__(self, root: Path, size: int = 3, config: dict[str, object] | None = None) -> None:
        self.root = root
        self.size = size
        self.key = base64.b64encode(os.urandom(32)).decode()
        self.http = [free_port() for _ in range(size)]
        self.raft = [free_port() for _ in range(size)]
        self.dns = [-1] * size  # DNS ports, -1 where DNS is off
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.clients: set[int] = set()
        self.config = root / "agent.json"  # settings every agent of the cluster shares
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(config or {}))

    def log(self, i: int) -> Path:
        return self.root / f"{self.name(i)}.log"

    def add_server(self, join: int) -> int:
        """Start one more server (no -bootstrap-expect) that joins through server ``join``."""
        self.http.append(free_port())
        self.raft.append(free_port())
        self.dns.append(-1)
        self.procs.append(None)
        self.start(len(self.procs) - 1, joins=[join], bootstrap=False)
        return len(self.procs) - 1

    def add_client(self, joins: list[int], dns: bool = False) -> int:
        """Start a client agent (no -server) named c<i> that joins through the given servers (with a DNS
        port of its own when ``dns``)."""
        self.http.append(free_port())
        self.raft.append(free_port())
        self.dns.append(free_port() if dns else -1)
        self.procs.append(None)
        i = len(self.procs) - 1
        self.clients.add(i)
        self.start(i, joins=joins, bootstrap=False)
        return i

    def name(self, i: int) -> str:
        return f"c{i}" if i in self.clients else f"s{i}"

    def start(self, i: int, joins: list[int] | None = None, bootstrap: bool = True) -> None:
        peers = [j for j in range(self.size) if j != i] if joins is None else joins
        join_flags = [a for j in peers for a in ("-retry-join", f"127.0.0.1:{self.http[j]}")]
        role = [] if i in self.clients else ["-server", *(["-bootstrap-expect", str(self.size)] if bootstrap else [])]
        cmd = [
            sys.executable, "-m", "buoy", "agent", *role, "-config-file", str(self.config),
            "-node", self.name(i), "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-http-port", str(self.http[i]), "-server-port", str(self.raft[i]), "-dns-port", str(self.dns[i]),
            "-data-dir", str(self.root / self.name(i)), "-encrypt", self.key, "-log-level", "info", *join_flags,
        ]  # fmt: skip
        with open(self.log(i), "ab") as out:
            self.procs[i] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())

    def start_all(self) -> None:
        for i in range(self.size):
            self.start(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
            proc.wait(timeout=15)
        self.procs[i] = None

    def stop_all(self) -> None:
        for i in range(len(self.procs)):
            try:
                self.kill(i, signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.kill(i, signal.SIGKILL)

    def alive(self) -> list[int]:
        """Servers whose process runs."""
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None and i not in self.clients]

    def get(self, i: int, path: str) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http[i]}{path}", timeout=5) as resp:
            return json.loads(resp.read() or b"null")

    def leader(self, i: int) -> str:
        try:
            return str(self.get(i, "/v1/status/leader") or "")
        except (OSError, ValueError):
            return ""

    def wait_leader(self, among: list[int] | None = None, timeout: float = 30.0) -> int:
        """Index of the server that every live server agrees is the leader."""
        among = self.alive() if among is None else among
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in among:
                proc = self.procs[i]
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"s{i} exited:\n{self.log(i).read_text()[-3000:]}")
            seen = {self.leader(i) for i in among}
            if len(seen) == 1 and (addr := seen.pop()):
                port = int(addr.rsplit(":", 1)[1])
                if port in self.raft and self.raft.index(port) in among:
                    return self.raft.index(port)
            time.sleep(0.1)
        logs = "\n".join(self.log(i).read_text()[-1500:] for i in among)
        raise AssertionError(f"no agreed leader within {timeout}s:\n{logs}")
