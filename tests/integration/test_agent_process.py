"""The agent process: config files (JSON and HCL), refusals at startup, logs, signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.integration.conftest import REPO, clean_env, free_port


def _agent(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "buoy", "agent", *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())


@contextlib.contextmanager
def _running(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """An agent process for the length of a test, killed by PID if it is still there at the end."""
    log = tmp_path / "agent.log"
    proc = _agent(*args, log=log)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _dev_flags(http_port: int, *extra: str) -> tuple[str, ...]:
    return ("-dev", "-http-port", str(http_port), "-server-port", str(free_port()), "-dns-port", "-1", *extra)


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "agent exited early"
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/status/leader", timeout=1).json():
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("agent did not answer")


def _run_to_exit(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buoy", "agent", *args], capture_output=True, text=True,
                          cwd=REPO, env=clean_env(), timeout=timeout)


def test_server_refuses_to_start_without_a_key(tmp_path) -> None:
    out = _run_to_exit("-server", "-bootstrap-expect", "1", "-data-dir", str(tmp_path), "-http-port", "1")
    assert out.returncode == 1 and "encrypt" in out.stderr and "buoy keygen" in out.stderr
    bad = _run_to_exit("-server", "-data-dir", str(tmp_path), "-encrypt", "not-base64!")
    assert bad.returncode == 1 and "base64" in bad.stderr
    short = _run_to_exit("-server", "-data-dir", str(tmp_path), "-encrypt", "c2hvcnQ=")
    assert short.returncode == 1 and "bytes" in short.stderr


def test_server_needs_a_data_dir() -> None:
    out = _run_to_exit("-server", "-encrypt", "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=")
    assert out.returncode == 1 and "data_dir" in out.stderr


def test_bad_config_file_names_file_and_key(tmp_path) -> None:
    conf = tmp_path / "bad.json"
    conf.write_text(json.dumps({"datacenter": "dc2", "no_such_key": 1}))
    out = _run_to_exit("-dev", "-config-file", str(conf))
    assert out.returncode == 1 and str(conf) in out.stderr and "no_such_key" in out.stderr
    conf.write_text(json.dumps({"ports": {"http": "eighty"}}))
    out = _run_to_exit("-dev", "-config-file", str(conf))
    assert out.returncode == 1 and "ports.http" in out.stderr and "int" in out.stderr
    hcl = tmp_path / "broken.hcl"
    hcl.write_text("datacenter = \n")
    out = _run_to_exit("-dev", "-config-file", str(hcl))
    assert out.returncode == 1 and str(hcl) in out.stderr and "cannot parse" in out.stderr


def test_config_dir_json_and_hcl_flags_win(tmp_path) -> None:
    http_port = free_port()
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "10-base.json").write_text(json.dumps({"datacenter": "east", "node_name": "from-json",
                                                   "ports": {"http": http_port}}))
    (conf / "20-more.hcl").write_text('node_name = "from-hcl"\nlimits {\n  kv_max_value_size = 10\n}\n')
    with _running(tmp_path, "-dev", "-config-dir", str(conf), "-datacenter", "west", "-server-port",
                  str(free_port()), "-dns-port", "-1") as (proc, _log):
        _wait_http(http_port, proc)
        me = requests.get(f"http://127.0.0.1:{http_port}/v1/agent/self", timeout=5).json()
        assert me["Config"]["NodeName"] == "from-hcl"  # the later file wins
        assert me["Config"]["Datacenter"] == "west"  # the flag wins over both
        r = requests.put(f"http://127.0.0.1:{http_port}/v1/kv/small", data=b"x" * 11, timeout=5)
        assert r.status_code == 413


def test_sigterm_shuts_down_cleanly_and_logs_json(tmp_path) -> None:
    http_port = free_port()
    with _running(tmp_path, *_dev_flags(http_port, "-log-json", "-log-level", "info")) as (proc, log):
        _wait_http(http_port, proc)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [entry["event"] for entry in lines]
    assert "agent started" in events and "agent stopped" in events
    assert all("level" in entry and "timestamp" in entry for entry in lines)


def test_second_signal_exits_at_once(tmp_path) -> None:
    http_port = free_port()
    with _running(tmp_path, *_dev_flags(http_port)) as (proc, _log):
        _wait_http(http_port, proc)
        # A request whose body is still arriving keeps the graceful shutdown busy (open blocking queries
        # are answered at once, but a half-received PUT is waited for), so the second signal is the one
        # that ends the process, with exit code 1.
        slow = socket.create_connection(("127.0.0.1", http_port), timeout=5)
        slow.sendall(b"PUT /v1/kv/held HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None, "the first signal should wait for the open request"
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(15) == 1
        slow.close()


def test_shutdown_answers_open_blocking_queries(tmp_path) -> None:
    http_port = free_port()
    with _running(tmp_path, *_dev_flags(http_port)) as (proc, _log):
        _wait_http(http_port, proc)
        base = f"http://127.0.0.1:{http_port}/v1/kv/held"
        requests.put(base, data=b"x", timeout=5)
        index = requests.get(base, timeout=5).headers["X-Consul-Index"]
        answered: list[int] = []
        held = threading.Thread(target=lambda: answered.append(
            requests.get(f"{base}?index={index}&wait=60s", timeout=70).status_code), daemon=True)
        held.start()
        deadline = time.monotonic() + 10
        while _blocking_queries(http_port) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
        held.join(timeout=10)
        assert answered == [200]  # answered with what the agent had, not cut off


def _blocking_queries(http_port: int) -> int:
    self_info = requests.get(f"http://127.0.0.1:{http_port}/v1/agent/self", timeout=5).json()
    return int(self_info["Stats"]["buoy"]["blocking_queries"])
