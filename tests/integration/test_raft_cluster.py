"""Three Raft servers as real processes on 127.0.0.1, killed with SIGKILL and restarted."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HELPER = Path(__file__).with_name("raft_node_child.py")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (TimeoutError, NodeGone):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class NodeGone(Exception):
    pass


class NodeProc:
    """One helper process and the JSON-line conversation with it."""

    def __init__(self, addr: str, peers: list[str], data_dir: Path, compact_entries: int, memory: bool = False) -> None:
        self.addr = addr
        self.memory = memory
        self.peers = peers
        self.data_dir = data_dir
        self.compact_entries = compact_entries
        self.proc: subprocess.Popen | None = None
        self.acked: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._responses: dict[int, dict] = {}
        self._ready = threading.Event()
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log_path = self.data_dir.parent / f"{self.data_dir.name}.log{self.starts}"
        log = open(log_path, "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(REPO))
        args = ["--addr", self.addr, "--peers", ",".join(self.peers), "--compact-entries", str(self.compact_entries)]
        if not self.memory:
            args += ["--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO,
            env=env,
        )
        log.close()
        self._ready.clear()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + 20
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"node {self.addr} did not start:\n{log_path.read_text()[-2000:]}")

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            if "id" in msg:
                with self._cond:
                    self._responses[msg["id"]] = msg
                    self._cond.notify_all()
            elif msg.get("event") == "ack":
                self.acked[msg["key"]] = msg["value"]
            elif msg.get("event") == "ready":
                self._ready.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, op: str, **args: Any) -> int:
        if not self.alive:
            raise NodeGone(self.addr)
        request_id = next(self._ids)
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"id": request_id, "op": op, "args": args}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise NodeGone(self.addr) from e
        return request_id

    def response(self, request_id: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self._responses:
                remaining = deadline - time.monotonic()
                if not self.alive:
                    raise NodeGone(self.addr)
                if remaining <= 0:
                    raise TimeoutError(f"{self.addr}: no answer to request {request_id}")
                self._cond.wait(min(remaining, 0.2))
            return self._responses.pop(request_id)

    def call(self, op: str, timeout: float = 15, **args: Any) -> dict:
        return self.response(self.send(op, **args), timeout)

    def result(self, op: str, timeout: float = 15, **args: Any) -> Any:
        answer = self.call(op, timeout, **args)
        assert answer["ok"], f"{self.addr} {op}: {answer.get('error')}"
        return answer["result"]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class Cluster:
    def __init__(self, root: Path, size: int = 3, compact_entries: int = 200_000, memory: bool = False) -> None:
        addrs = [f"127.0.0.1:{free_port()}" for _ in range(size)]
        self.nodes = [NodeProc(addr, addrs, root / f"node{i}", compact_entries, memory) for i, addr in enumerate(addrs)]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def alive(self) -> list[NodeProc]:
        return [node for node in self.nodes if node.alive]

    def leader(self, timeout: float = 20) -> NodeProc:
        def find() -> NodeProc | None:
            leaders = [n for n in self.alive() if n.result("status", timeout=2)["is_leader"]]
            return leaders[0] if len(leaders) == 1 else None

        return wait_until(find, timeout, "a single leader")

    def followers(self, leader: NodeProc) -> list[NodeProc]:
        return [n for n in self.alive() if n is not leader]

    def wait_converged(self, timeout: float = 30) -> str:
        """Barrier through every live node, then wait for equal state digests; returns the digest."""

        def converged() -> str | None:
            for node in self.alive():
                if not node.call("barrier", timeout=15)["ok"]:
                    return None
            digests = {node.result("status", timeout=5)["digest"] for node in self.alive()}
            return digests.pop() if len(digests) == 1 else None

        return wait_until(converged, timeout, "all live nodes to converge", interval=0.2)

    def shutdown(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture
def make_cluster(tmp_path: Path):
    clusters: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path, **kwargs)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.shutdown()


def test_writes_failover_and_rejoin(make_cluster) -> None:
    # A small compaction threshold makes the leader snapshot while a node is down, so the restarted
    # node catches up through an installed snapshot, not only through the log.
    cluster = make_cluster(compact_entries=50)
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]

    assert isinstance(leader.result("put", key="on-leader", value=1), int)
    assert isinstance(follower.result("put", key="on-follower", value=2), int)
    cluster.wait_converged()
    for node in cluster.nodes:
        data = node.result("state")["data"]
        assert data["on-leader"] == 1 and data["on-follower"] == 2

    leader.kill()
    new_leader = cluster.leader()
    assert new_leader is not leader
    for i in range(120):  # one entry each: more than the compaction threshold
        new_leader.result("put", key=f"after-failover-{i}", value=i)
    cluster.followers(new_leader)[0].result("put", key="via-remaining-follower", value=3)

    leader.start()
    digest = cluster.wait_converged()
    assert len(cluster.alive()) == 3
    rejoined = leader.result("state")
    assert rejoined["digest"] == digest
    assert rejoined["data"]["after-failover-119"] == 119
    assert rejoined["data"]["via-remaining-follower"] == 3
    assert (new_leader.data_dir / "raft-snapshot.bin").exists()


def test_kill_all_keeps_every_acknowledged_write(make_cluster) -> None:
    cluster = make_cluster(compact_entries=200)
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    loads = [
        (leader, leader.send("load", prefix="L", writers=16, seconds=60)),
        (follower, follower.send("load", prefix="F", writers=4, seconds=60)),
    ]

    wait_until(lambda: len(leader.acked) >= 3000 and len(follower.acked) >= 100, 60, "writes to be acked")
    for node in cluster.nodes:  # mid-load, no warning
        node.kill()
    acked = {**leader.acked, **follower.acked}
    for node, _ in loads:
        assert node.proc is not None and node.proc.returncode == -signal.SIGKILL

    cluster.start()
    cluster.leader()
    digest = cluster.wait_converged()
    for node in cluster.nodes:
        state = node.result("state", timeout=30)
        assert state["digest"] == digest
        lost = {k for k, v in acked.items() if state["data"].get(k) != v}
        assert not lost, f"{node.addr} lost {len(lost)} of {len(acked)} acknowledged writes"
    assert any((node.data_dir / "raft-snapshot.bin").exists() for node in cluster.nodes)
