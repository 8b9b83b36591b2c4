"""RaftNode in-process: dev mode, batching, errors, snapshots and restart, in-process clusters."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from buoy.server.raft import RaftError, RaftNode, RaftSettings
from buoy.server.raft.node import JOURNAL_FILE, SNAPSHOT_FILE

KEY = "unit-test-key"


class Machine:
    def __init__(self, fail_on: str | None = None) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {}
        self.batches: list[int] = []
        self.fail_on = fail_on

    def apply_batch(self, cmds: list[dict]) -> list[Any]:
        with self.lock:
            self.batches.append(len(cmds))
            out = []
            for cmd in cmds:
                if cmd["key"] == self.fail_on:
                    raise RuntimeError("boom")
                self.data[cmd["key"]] = cmd["value"]
                out.append(f"ok:{cmd['key']}")
            return out

    def dump(self) -> dict:
        with self.lock:
            return {"data": dict(self.data)}

    def load(self, data: dict) -> None:
        with self.lock:
            self.data = dict(data["data"])


def addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def run(coro: Awaitable[Any], timeout: float = 60) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def set_cmd(key: str, value: Any) -> dict:
    return {"op": "set", "key": key, "value": value}


def test_dev_node_is_leader_at_once_and_batches() -> None:
    changes: list[bool] = []
    fsm = Machine()

    async def main() -> None:
        started = time.monotonic()
        node = RaftNode(fsm, addr(), [], data_dir=None, password=KEY, on_leader_change=changes.append)
        try:
            assert await node.apply(set_cmd("a", 1)) == "ok:a"
            first_write = time.monotonic() - started
            assert first_write < 0.5, first_write
            assert node.is_leader and node.leader == node.self_addr and node.members() == [node.self_addr]
            assert node.last_contact_ms() == 0

            results = await asyncio.gather(*(node.apply(set_cmd(f"k{i}", i)) for i in range(600)))
            assert results == [f"ok:k{i}" for i in range(600)]
            await node.barrier()
            assert max(fsm.batches) <= 256 and len(fsm.batches) <= 1 + 8  # 600 commands, few entries
            # pysyncobj counts an entry as applied just after its callbacks ran.
            await eventually(lambda: node.status()["last_applied"] == node.status()["commit_index"], 5,
                             "last_applied to reach commit_index")
            assert node.status()["state"] == "leader" and node.status()["commit_index"] > 1
        finally:
            node.close()

    run(main())
    assert changes == [True]


def test_command_errors() -> None:
    async def main() -> None:
        settings = RaftSettings(max_command_bytes=1000)
        node = RaftNode(Machine(fail_on="bad"), addr(), [], data_dir=None, password=KEY, settings=settings)
        try:
            with pytest.raises(TypeError):
                await node.apply({"key": object()})
            with pytest.raises(ValueError):
                await node.apply(set_cmd("big", "x" * 2000))
            good, bad = await asyncio.gather(node.apply(set_cmd("good", 1)), node.apply(set_cmd("bad", 2)),
                                             return_exceptions=True)
            # Same batch as the failing command: every caller of it learns about the failure.
            assert isinstance(bad, RaftError) and "State machine error" in str(bad)
            assert isinstance(good, RaftError)
            assert await node.apply(set_cmd("after", 3)) == "ok:after"
        finally:
            node.close()

    run(main())


def test_no_leader_times_out_and_close_fails_waiters() -> None:
    async def main() -> None:
        settings = RaftSettings(apply_timeout=0.5)
        node = RaftNode(Machine(), addr(), [addr(), addr()], data_dir=None, password=KEY, settings=settings)
        try:
            started = time.monotonic()
            with pytest.raises(RaftError, match="No cluster leader"):
                await node.apply(set_cmd("a", 1))
            assert time.monotonic() - started < 2
            pending = asyncio.ensure_future(node.apply(set_cmd("b", 2)))
            await asyncio.sleep(0.05)
        finally:
            node.close()
        with pytest.raises(RaftError, match="shutting down"):
            await pending

    run(main())


def test_unanswered_batch_times_out_and_frees_its_slot() -> None:
    async def main() -> None:
        settings = RaftSettings(apply_timeout=0.3, batches_in_flight=1)
        node = RaftNode(Machine(), addr(), [], data_dir=None, password=KEY, settings=settings)
        real = node._sync.apply_entry
        try:
            node._sync.apply_entry = lambda blob, callback: None  # a proposal lost without an answer
            started = time.monotonic()
            results = await asyncio.gather(node.apply(set_cmd("lost", 1)), node.barrier(),
                                           return_exceptions=True)
            assert all(isinstance(r, RaftError) and str(r) == "Raft timeout" for r in results)
            assert all(r.maybe_applied for r in results)
            assert 0.25 < time.monotonic() - started < 2
            node._sync.apply_entry = real
            assert await node.apply(set_cmd("next", 2)) == "ok:next"
        finally:
            node.close()

    run(main())


def test_password_required_and_bind_conflict() -> None:
    with pytest.raises(ValueError):
        RaftNode(Machine(), addr(), [], data_dir=None, password="")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(RaftError, match="Cannot bind"):
            RaftNode(Machine(), busy, [], data_dir=None, password=KEY)


def test_data_dir_taken(tmp_path: Path) -> None:
    node = RaftNode(Machine(), addr(), [], data_dir=str(tmp_path), password=KEY)
    try:
        with pytest.raises(RaftError, match="in use"):
            RaftNode(Machine(), addr(), [], data_dir=str(tmp_path), password=KEY)
    finally:
        node.close()


def test_snapshot_and_restart_restore_state(tmp_path: Path) -> None:
    settings = RaftSettings(compaction_min_entries=20)
    self_addr = addr()

    async def write() -> None:
        node = RaftNode(Machine(), self_addr, [], data_dir=str(tmp_path), password=KEY, settings=settings)
        try:
            for i in range(100):  # one entry each
                await node.apply(set_cmd(f"k{i}", i))
            await eventually(lambda: (tmp_path / SNAPSHOT_FILE).exists(), 10, "a snapshot")
            await eventually(lambda: len(node._sync._journal) < 50, 10, "log compaction")
            for i in range(100, 105):  # after the snapshot: only in the journal
                await node.apply(set_cmd(f"k{i}", i))
        finally:
            node.close()

    async def restart() -> None:
        fsm = Machine()
        node = RaftNode(fsm, self_addr, [], data_dir=str(tmp_path), password=KEY, settings=settings)
        try:
            assert fsm.data == {f"k{i}": i for i in range(105)}  # restored before the constructor returns
            await node.barrier()
            assert fsm.data == {f"k{i}": i for i in range(105)}
            assert await node.apply(set_cmd("new", 1)) == "ok:new"
        finally:
            node.close()

    run(write())
    assert (tmp_path / JOURNAL_FILE).stat().st_size < 20_000
    run(restart())


def test_in_process_cluster_with_separate_journals(tmp_path: Path) -> None:
    addrs = [addr() for _ in range(3)]
    machines = [Machine() for _ in addrs]

    async def main() -> None:
        nodes = [RaftNode(m, a, addrs, data_dir=str(tmp_path / str(i)), password=KEY)
                 for i, (m, a) in enumerate(zip(machines, addrs, strict=True))]
        try:
            for node in nodes:  # each SyncObj got the journal built for it
                assert node._sync._SyncObj__raftLog is node._sync._journal
            assert len({id(node._sync._journal) for node in nodes}) == 3
            await eventually(lambda: sum(n.is_leader for n in nodes) == 1, 20, "a leader")
            leader = next(n for n in nodes if n.is_leader)
            follower = next(n for n in nodes if not n.is_leader)
            follower_fsm = machines[nodes.index(follower)]
            assert await follower.apply(set_cmd("via-follower", 1)) == "ok:via-follower"
            assert follower_fsm.data["via-follower"] == 1  # applied locally before the answer
            assert follower.leader == leader.self_addr and follower.last_contact_ms() < 1000
            assert await leader.apply(set_cmd("via-leader", 2)) == "ok:via-leader"
            for node in nodes:
                await node.barrier()
            assert all(m.data == {"via-follower": 1, "via-leader": 2} for m in machines)
            assert sorted(addrs) == leader.members()
        finally:
            for node in nodes:
                node.close()

    run(main())


def test_add_member() -> None:
    a, b = addr(), addr()
    fsm_b = Machine()

    async def main() -> None:
        first = RaftNode(Machine(), a, [], data_dir=None, password=KEY)
        second = RaftNode(fsm_b, b, [a], data_dir=None, password=KEY)
        try:
            await first.apply(set_cmd("before", 1))
            await first.add_member(b)
            assert first.members() == sorted([a, b])
            assert await first.apply(set_cmd("after", 2)) == "ok:after"
            await eventually(lambda: fsm_b.data == {"before": 1, "after": 2}, 20, "the new member to catch up")
            assert second.members() == sorted([a, b])
        finally:
            second.close()
            first.close()

    run(main())
