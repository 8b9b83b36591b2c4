"""Fixtures that run real Buoy processes on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import consul
import pytest

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE = 20.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: the repo importable, no agent address or token leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUOY_", "CONSUL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass(frozen=True)
class Run:
    """What one `buoy` process did."""

    code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape")

    def lines(self) -> list[str]:
        return self.out.splitlines()

    def assert_one_line_error(self, code: int, text: str | None = None) -> None:
        """A failure: exactly one line on stderr, nothing on stdout, never a traceback."""
        assert self.code == code, self
        assert self.stdout == b"", self
        assert "Traceback" not in self.stderr, self.stderr
        assert self.stderr.endswith("\n") and self.stderr.count("\n") == 1, self.stderr
        if text is not None:
            assert self.stderr == text + "\n"


def run_buoy(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Run:
    """Run the `buoy` command line as a separate process, the way a user or a script does."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [sys.executable, "-m", "buoy", *args],
        input=data,
        capture_output=True,
        cwd=REPO,
        env=clean_env(**(env or {})),
        timeout=60,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


@pytest.fixture(scope="session")
def buoy_cli() -> Callable[..., Run]:
    """`run_buoy`: run `buoy ARGS...` in a clean environment and collect exit status and output."""
    return run_buoy


@pytest.fixture
def buoy_background() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `buoy ARGS...` in the background (text stdout and stderr piped); stopped by PID at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "buoy", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=clean_env(**(env or {})),
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        _stop(proc)


@pytest.fixture(scope="session")
def port_picker() -> Callable[[], int]:
    """`free_port`: a loopback port nothing listens on, for as long as nobody takes it."""
    return free_port


@dataclass(frozen=True)
class DevAgent:
    pid: int
    http_port: int
    server_port: int
    log: Path

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"http://{self.http_addr}{path}", timeout=5) as resp:
            return json.loads(resp.read() or b"null")


def _leader(http_port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/status/leader", timeout=1) as resp:
            return json.loads(resp.read()) or ""
    except (OSError, ValueError):
        return ""


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def wait_started(proc: subprocess.Popen[Any], ready: Callable[[], Any], log: Path, what: str,
                 timeout: float = START_DEADLINE) -> None:
    """Poll ``ready`` until it is true; a failure (with the log's tail) if ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} was not ready after {timeout:g}s:\n{_tail(log)}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def running_dev_agent(log_dir: Path, *extra: str) -> Iterator[DevAgent]:
    """A `buoy agent -dev` (server and agent in one process, in memory) with a leader, stopped by PID after."""
    http_port, server_port = free_port(), free_port()
    log = log_dir / "agent.log"
    cmd = [
        sys.executable, "-m", "buoy", "agent", "-dev",
        "-http-port", str(http_port), "-dns-port", "-1", "-server-port", str(server_port), *extra,
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
    try:
        wait_started(proc, lambda: _leader(http_port), log, "buoy agent -dev (waiting for a leader)")
        yield DevAgent(proc.pid, http_port, server_port, log)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def dev_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevAgent]:
    """One dev agent for the whole session."""
    with running_dev_agent(tmp_path_factory.mktemp("dev-agent")) as agent:
        yield agent


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """A real 3-server cluster (tests/integration/cluster.py) with a leader, stopped by PID afterwards."""
    from tests.integration.cluster import Cluster  # cluster.py imports this module's helpers

    c = Cluster(tmp_path)
    c.start_all()
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def base(dev_agent: DevAgent) -> str:
    """The dev agent's HTTP base URL, for raw requests."""
    return f"http://{dev_agent.http_addr}"


@pytest.fixture
def c(dev_agent: DevAgent) -> consul.Consul:
    """py-consul, a real Consul client, pointed at the dev agent."""
    return consul.Consul(host="127.0.0.1", port=dev_agent.http_port)


@pytest.fixture
def buoy(buoy_cli: Callable[..., Run], dev_agent: DevAgent) -> Callable[..., Run]:
    """Run `buoy` against the dev agent, addressed the way most users do it: through the environment."""

    def run(*args: str, input: str | bytes | None = None) -> Run:
        return buoy_cli(*args, input=input, env={"BUOY_HTTP_ADDR": dev_agent.http_addr})

    return run


@pytest.fixture
def prefix() -> str:
    """A key prefix of the test's own, so tests sharing one agent never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (a failure
    naming ``what``). Errors while polling count as "not yet": the thing may be restarting."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as e:  # noqa: BLE001 - the agent may be between states; keep polling
            last = e
        else:
            if value:
                return value
            last = value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
