"""The Raft port must not unpickle anything from a peer that does not hold the cluster key."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest

from buoy.server.raft import RaftNode


class Machine:
    def __init__(self) -> None:
        self.data: dict = {}

    def apply_batch(self, cmds: list[dict]) -> list:
        for cmd in cmds:
            self.data[cmd["key"]] = cmd["value"]
        return [None] * len(cmds)

    def dump(self) -> dict:
        return {"data": dict(self.data)}

    def load(self, data: dict) -> None:
        self.data = dict(data["data"])


class CreatesFile:
    """Unpickling this calls open(path, "w"): the file appears if the payload ever runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def frame(payload: bytes) -> bytes:
    return struct.pack("i", len(payload)) + payload


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("encoding", ["pysyncobj-wire", "raw-pickle", "utility-command"])
def test_unauthenticated_pickle_is_not_executed(tmp_path: Path, encoding: str) -> None:
    marker = tmp_path / "pwned"
    exploit = pickle.dumps(CreatesFile(marker), protocol=2)
    payload = {
        "pysyncobj-wire": zlib.compress(exploit, 3),
        "raw-pickle": exploit,
        "utility-command": zlib.compress(pickle.dumps(["status"], protocol=2), 3),
    }[encoding]
    self_addr = free_addr()
    node = RaftNode(Machine(), self_addr, [], data_dir=None, password="the-real-cluster-key")
    try:
        host, port = self_addr.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(frame(payload))
            assert closed_by_peer(sock, timeout=5), "the node kept an unauthenticated connection open"
        time.sleep(0.2)  # the node's tick thread would have run the payload by now
        assert not marker.exists()

        async def still_serves() -> None:
            await asyncio.wait_for(node.apply({"key": "k", "value": 1}), 10)

        asyncio.run(still_serves())
    finally:
        node.close()


def test_huge_unauthenticated_frame_is_cut_off(tmp_path: Path) -> None:
    """A peer without the key cannot make the node buffer an announced 1 GiB frame."""
    self_addr = free_addr()
    node = RaftNode(Machine(), self_addr, [], data_dir=None, password="the-real-cluster-key")
    try:
        host, port = self_addr.rsplit(":", 1)
        sent = 0
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(struct.pack("i", 1 << 30))
            chunk = b"\0" * 65536
            try:
                while sent < (64 << 20):  # bounded: 64 MiB at most
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # reset by the node: what we want
            assert sent < (64 << 20), "the node kept reading an unauthenticated 1 GiB frame"

        async def still_serves() -> None:
            await asyncio.wait_for(node.apply({"key": "k", "value": 1}), 10)

        asyncio.run(still_serves())
    finally:
        node.close()
