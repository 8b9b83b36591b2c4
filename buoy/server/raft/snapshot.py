"""Snapshots as plain data: msgpack ``{"version": 1, "raft": [...], "state": fsm.dump()}``.

pysyncobj's default pickles and gzips the whole object (about 1 s per 100,000 keys, and a pickle of
our classes on disk); msgpack takes a few tens of milliseconds and keeps the file readable by any
tool. pysyncobj calls the serializer on the Raft thread with ``(last_applied_entry, previous_entry,
cluster_nodes)`` and renames the temporary file into place right after it returns; the same file is
streamed to followers that are too far behind, whose deserializer then loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgpack
from pysyncobj.node import TCPNode

from buoy.files import FILE_MODE, fsync_dir, write_all

from .fsm import StateMachine

FORMAT_VERSION = 1

RaftData = tuple[tuple[bytes, int, int], tuple[bytes, int, int], list[TCPNode]]


def _entry(value: Any) -> tuple[bytes, int, int]:
    cmd, idx, term = value
    return (bytes(cmd), int(idx), int(term))


def make_serializer(fsm: StateMachine) -> Callable[[str, Any], None]:
    def serialize(path: str, raft_data: Any) -> None:
        last, prev, cluster = raft_data
        doc = {
            "version": FORMAT_VERSION,
            "raft": [list(last), list(prev), sorted(node.id for node in cluster)],
            "state": fsm.dump(),
        }
        data = msgpack.packb(doc, use_bin_type=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    return serialize


def make_deserializer(
    fsm: StateMachine, align_journal: Callable[[tuple, tuple], None]
) -> Callable[[str], RaftData]:
    """``align_journal(prev, last)`` trims the journal to start at the snapshot's entries.

    pysyncobj clears the whole journal when its first two entries differ from the snapshot's. After
    a crash between writing a snapshot and compacting the journal, that would throw away entries
    this node acknowledged after the snapshot point; trimming first keeps them.
    """

    def deserialize(path: str) -> RaftData:
        with open(path, "rb") as f:
            data = f.read()
            # A snapshot received from the leader was written and renamed without fsync; the
            # journal is about to be cleared in its favour, so make it durable first.
            os.fsync(f.fileno())
        fsync_dir(os.path.dirname(os.path.abspath(path)))
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported snapshot format version {doc.get('version')}")
        raw_last, raw_prev, addresses = doc["raft"]
        last, prev = _entry(raw_last), _entry(raw_prev)
        fsm.load(doc["state"])
        align_journal(prev, last)
        return last, prev, [TCPNode(address) for address in addresses]

    return deserialize
