"""Start and stop the servers under test: a 3-member etcd cluster, a 3-server Buoy cluster, bare servers.

Every process is started in its own session and recorded here; `stop_all` (also registered with atexit)
terminates each one by its process id, then kills it if it has not exited after a few seconds.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import select
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


class StartError(Exception):
    """A server or cluster did not come up in time; the message includes the tail of its log."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None
    _buf: bytes = b""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return "(no log)"
        text = self.log.read_bytes()[-20000:].decode(errors="replace").splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:]) or "    (empty log)"

    def readline(self, deadline: float) -> str | None:
        """Next stdout line (for processes started with a pipe), or None at the deadline or end of file."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()


_procs: list[Proc] = []


def spawn(name: str, argv: list[str], log: Path | None, pipe_stdout: bool = False) -> Proc:
    """Start argv in its own session with stderr (and stdout unless piped) going to log."""
    out: IO[bytes] | int = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child keeps it; closed below
    try:
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else out,
            stderr=out,
            start_new_session=True,
        )
    finally:
        if not isinstance(out, int):
            out.close()
    proc = Proc(name, popen, log)
    _procs.append(proc)
    return proc


def stop(proc: Proc, grace: float = 5.0) -> None:
    """Terminate proc (and its process group, which only it and its children use) by id."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not proc.alive():
            break
        try:
            os.killpg(proc.pid, sig)  # the group id is the pid: start_new_session=True
        except ProcessLookupError:
            pass
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    if proc.popen.stdout is not None:
        proc.popen.stdout.close()
    if proc in _procs:
        _procs.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_procs)):
        stop(proc)


atexit.register(stop_all)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_json(method: str, url: str, body: Any = None, timeout: float = 2.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def wait_until(what: str, procs: list[Proc], timeout: float, check: Callable[[], Any]) -> Any:
    """Poll check() until it returns a truthy value; fail early if a process dies, or at the timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise StartError(
                    f"{what}: {p.name} exited with code {p.popen.returncode}; {p.log}:\n{p.tail()}"
                )
        try:
            value = check()
            if value:
                return value
            last = f"not ready yet: {value!r}"
        except Exception as e:  # connection refused, bad JSON, ... until it is up
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.25)
    tails = "\n".join(f"  {p.name} ({p.log}):\n{p.tail()}" for p in procs)
    raise StartError(f"{what}: not ready after {timeout:.0f} s (last check: {last})\n{tails}")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime+stime of each pid plus its live descendants (threads are included by /proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu seconds)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (field 3 of proc(5)); ppid is field 4, utime 14, stime 15.
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, float] = {}
    for root in pids:
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += stats.get(pid, (0, 0.0))[1]
            todo += children.get(pid, [])
        out[root] = total
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    tick = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / tick, v[7] / tick


@dataclass
class Target:
    """A running system under test: where to send load and which processes to account CPU to."""

    name: str
    ports: list[int]  # client (HTTP) port of every member, the leader's first
    procs: list[Proc]
    info: str = ""
    leader: str = ""  # process name of the leader, in a cluster
    notes: list[str] = field(default_factory=list)
    http: dict[str, int] = field(default_factory=dict)  # process name -> client (HTTP) port

    def stop(self) -> None:
        for p in self.procs:
            stop(p)


def start_etcd(workdir: Path, timeout: float, size: int = 3) -> Target:
    ports = free_ports(2 * size)
    names = [f"e{i + 1}" for i in range(size)]
    client = {n: ports[2 * i] for i, n in enumerate(names)}
    peer = {n: ports[2 * i + 1] for i, n in enumerate(names)}
    initial = ",".join(f"{n}=http://127.0.0.1:{peer[n]}" for n in names)
    procs = []
    for n in names:
        argv = [
            "etcd",
            "--name", n,
            "--data-dir", str(workdir / "etcd" / n),
            "--listen-client-urls", f"http://127.0.0.1:{client[n]}",
            "--advertise-client-urls", f"http://127.0.0.1:{client[n]}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer[n]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[n]}",
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "bench",
        ]  # fmt: skip
        procs.append(spawn(n, argv, workdir / "logs" / f"{n}.log"))

    def healthy() -> bool:
        return all(
            http_json("GET", f"http://127.0.0.1:{client[n]}/health").get("health") == "true" for n in names
        )

    def leader() -> str | None:
        for n in names:
            status = http_json("POST", f"http://127.0.0.1:{client[n]}/v3/maintenance/status", {})
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return n
        return None

    wait_until("etcd cluster health", procs, timeout, healthy)
    lead = wait_until("etcd leader", procs, timeout, leader)
    ports = [client[lead]] + [client[n] for n in names if n != lead]
    return Target("etcd", ports, procs, f"leader {lead} at 127.0.0.1:{client[lead]}", lead)


def buoy_key(python: Path) -> str:
    """An encryption key from `buoy keygen` (base64 of 32 random bytes); generated here if keygen fails."""
    try:
        out = (
            subprocess.run(
                [str(python), "-m", "buoy", "keygen"], cwd=REPO, capture_output=True, timeout=30, check=True
            )
            .stdout.decode()
            .strip()
        )
        if len(base64.b64decode(out, validate=True)) == 32:
            return out
    except (subprocess.SubprocessError, ValueError, OSError):
        pass
    return base64.b64encode(os.urandom(32)).decode()


def buoy_agent_argv(
    python: Path, workdir: Path, node: str, http_port: int, key: str, role: list[str], dns_port: int = -1
) -> list[str]:
    """`buoy agent` on loopback with its data dir under workdir; role adds -server and -retry-join flags.
    DNS is off unless a bench measures it."""
    data = workdir / "buoy" / node
    data.mkdir(parents=True, exist_ok=True)
    return [
        str(python), "-m", "buoy", "agent", "-node", node, "-bind", "127.0.0.1", "-client", "127.0.0.1",
        "-http-port", str(http_port), "-dns-port", str(dns_port), "-data-dir", str(data), "-encrypt", key,
        "-log-level", "warn", *role,
    ]  # fmt: skip


def start_buoy(workdir: Path, python: Path, timeout: float, size: int = 3, key: str | None = None) -> Target:
    ports = free_ports(2 * size)
    names = [f"s{i + 1}" for i in range(size)]
    http = {n: ports[2 * i] for i, n in enumerate(names)}
    server = {n: ports[2 * i + 1] for i, n in enumerate(names)}
    key = key or buoy_key(python)
    procs = []
    for n in names:
        role = ["-server", "-bootstrap-expect", str(size), "-server-port", str(server[n])]
        for other in names:
            if other != n:
                role += ["-retry-join", f"127.0.0.1:{http[other]}"]
        procs.append(spawn(n, buoy_agent_argv(python, workdir, n, http[n], key, role), workdir / "logs" / f"{n}.log"))

    def leaders() -> dict[str, str] | None:
        got = {n: http_json("GET", f"http://127.0.0.1:{http[n]}/v1/status/leader") for n in names}
        return got if all(isinstance(v, str) and v for v in got.values()) else None

    got = wait_until("buoy cluster leader", procs, timeout, leaders)
    addr = got[names[0]]
    port = int(addr.rsplit(":", 1)[1])
    lead = next((n for n in names if port in (server[n], http[n])), None)
    if lead is None:
        raise StartError(f"buoy: leader address {addr!r} matches no server port {server} or http port {http}")
    ports = [http[lead]] + [http[n] for n in names if n != lead]
    info = f"leader {lead} at 127.0.0.1:{http[lead]} (reported {addr})"
    return Target("buoy", ports, procs, info, lead, http=http)


def start_bare(workdir: Path, python: Path, timeout: float, raw: bool = False) -> Target:
    (port,) = free_ports(1)
    name = "raw" if raw else "bare"
    argv = [str(python), "-m", "bench.bare", "--port", str(port)] + (["--raw"] if raw else [])
    proc = spawn(name, argv, workdir / "logs" / f"{name}.log")
    url = f"http://127.0.0.1:{port}/"
    wait_until(f"{name} server", [proc], timeout, lambda: http_json("GET", url) is not None)
    return Target(name, [port], [proc], f"127.0.0.1:{port}")
