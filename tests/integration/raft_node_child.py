"""Not a test module: the server process that test_raft_cluster.py starts, one per Raft node.

Runs a RaftNode over a small dict state machine and takes JSON-line requests on stdin
(``{"id": 1, "op": "put", "args": {...}}``); it answers on stdout with ``{"id": 1, "ok": ...}``.
The ``load`` operation also streams ``{"event": "ack", ...}`` lines as writes are acknowledged,
so that the parent knows every acknowledged write even if it kills this process with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import threading
import time
from typing import Any

import msgpack


class DictMachine:
    """key -> value, plus the count of applied commands (every server must agree on both)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {}
        self.applied = 0

    def apply_batch(self, cmds: list[dict]) -> list[Any]:
        results = []
        with self.lock:
            for cmd in cmds:
                self.applied += 1
                if cmd.get("op") == "set":
                    self.data[cmd["key"]] = cmd["value"]
                    results.append(self.applied)
                else:
                    results.append({"error": f"unknown op {cmd.get('op')!r}"})
        return results

    def dump(self) -> dict:
        with self.lock:
            return {"data": dict(self.data), "applied": self.applied}

    def load(self, data: dict) -> None:
        with self.lock:
            self.data = dict(data["data"])
            self.applied = data["applied"]

    def digest(self) -> str:
        with self.lock:
            items = sorted(self.data.items())
            applied = self.applied
        return hashlib.sha256(msgpack.packb([applied, items])).hexdigest()[:16]


def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(int(len(sorted_values) * q), len(sorted_values) - 1)]


async def op_status(node, fsm: DictMachine) -> dict:
    return {
        "status": node.status(),
        "members": node.members(),
        "is_leader": node.is_leader,
        "leader": node.leader,
        "applied": fsm.applied,
        "keys": len(fsm.data),
        "digest": fsm.digest(),
    }


async def op_put(node, fsm: DictMachine, key: str, value: Any) -> Any:
    return await node.apply({"op": "set", "key": key, "value": value})


async def op_barrier(node, fsm: DictMachine) -> None:
    await node.barrier()


async def op_state(node, fsm: DictMachine) -> dict:
    return {"data": fsm.dump()["data"], "digest": fsm.digest(), "applied": fsm.applied}


async def op_load(node, fsm: DictMachine, prefix: str, writers: int, seconds: float) -> dict:
    from buoy.server.raft import RaftError

    deadline = time.monotonic() + seconds
    counts = {"acked": 0, "errors": 0}

    async def writer(w: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            key, value = f"{prefix}:{w}:{i}", i
            try:
                await node.apply({"op": "set", "key": key, "value": value})
            except RaftError:
                counts["errors"] += 1
                await asyncio.sleep(0.05)
            else:
                counts["acked"] += 1
                emit({"event": "ack", "key": key, "value": value})
            i += 1

    await asyncio.gather(*(writer(w) for w in range(writers)))
    return counts


async def op_bench(node, fsm: DictMachine, writers: int, seconds: float, value_size: int = 64) -> dict:
    from buoy.server.raft import RaftError

    value = "x" * value_size
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    deadline = start + seconds

    async def writer(w: int) -> None:
        nonlocal errors
        i = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                await node.apply({"op": "set", "key": f"bench:{w}:{i % 1000}", "value": value})
            except RaftError:
                errors += 1
            else:
                latencies.append(time.perf_counter() - t0)
            i += 1

    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "writers": writers,
        "writes": len(latencies),
        "errors": errors,
        "writes_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


async def op_add_member(node, fsm: DictMachine, addr: str) -> list[str]:
    await node.add_member(addr)
    return node.members()


OPS = {
    "status": op_status,
    "put": op_put,
    "barrier": op_barrier,
    "state": op_state,
    "load": op_load,
    "bench": op_bench,
    "add_member": op_add_member,
}


async def handle(node, fsm: DictMachine, request: dict) -> None:
    from buoy.server.raft import RaftError

    try:
        result = await OPS[request["op"]](node, fsm, **request.get("args", {}))
    except RaftError as e:
        emit({"id": request["id"], "ok": False, "error": str(e)})
    else:
        emit({"id": request["id"], "ok": True, "result": result})


async def serve(args: argparse.Namespace) -> None:
    from buoy.server.raft import RaftNode, RaftSettings

    fsm = DictMachine()
    settings = RaftSettings(compaction_min_entries=args.compact_entries)
    peers = [p for p in args.peers.split(",") if p]
    node = RaftNode(fsm, args.addr, peers, data_dir=args.data_dir, password=args.password, settings=settings)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "ready", "pid": os.getpid()})
    tasks: set[asyncio.Task] = set()
    try:
        while line := await reader.readline():
            task = asyncio.create_task(handle(node, fsm, json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        node.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--peers", default="")
    parser.add_argument("--data-dir")
    parser.add_argument("--password", default="test-cluster-key")
    parser.add_argument("--compact-entries", type=int, default=200_000)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
