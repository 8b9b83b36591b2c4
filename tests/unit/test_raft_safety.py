"""Replays of pysyncobj's AppendEntries truncation bug against real SyncObj objects.

A follower receives AE(a, b, c, commit 4), then a stale duplicate AE(a), then a vote request from a
node whose log ends at index 2. Plain pysyncobj truncates b and c (already acknowledged and
applied) and grants the vote, so the shorter log can win and overwrite committed entries. With
SafeSyncObj the follower keeps b and c and refuses the vote.
"""

from __future__ import annotations

import logging

import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.transport import Transport

from buoy.server.raft.syncobj import SafeSyncObj

LEADER = TCPNode("127.0.0.1:1001")
SELF = "127.0.0.1:1002"
CANDIDATE = TCPNode("127.0.0.1:1003")

# Entry commands typed NO_OP (first byte 1) so that applying them touches no state machine.
A, B, C = (b"\x01a", 2, 1), (b"\x01b", 3, 1), (b"\x01c", 4, 1)


class FakeTransport(Transport):
    def __init__(self) -> None:
        super().__init__(None, None, None)
        self.sent: list[tuple[TCPNode, dict]] = []

    def send(self, node, message):
        self.sent.append((node, message))
        return True

    def deliver(self, node, message) -> None:
        self._onMessageReceived(node, message)

    def sent_types(self) -> list[str]:
        return [m["type"] for _, m in self.sent]


def make_follower(cls: type[SyncObj]) -> tuple[SyncObj, FakeTransport]:
    transport = FakeTransport()
    conf = SyncObjConf(autoTick=False, raftMinTimeout=60, raftMaxTimeout=61, connectionTimeout=61)
    return cls(SELF, [LEADER.address, CANDIDATE.address], conf=conf, transport=transport), transport


def append_entries(term: int, prev: tuple[int, int], entries: list, commit: int) -> dict:
    return {"type": "append_entries", "term": term, "commit_index": commit,
            "prevLogIdx": prev[0], "prevLogTerm": prev[1], "entries": entries}


def log_indexes(obj: SyncObj) -> list[int]:
    return [entry[1] for entry in obj._SyncObj__raftLog[:]]


# The plain SyncObj case pins the library's behaviour: if an upgrade fixes it, this fails and the
# override in buoy/server/raft/syncobj.py deserves a second look.
@pytest.mark.parametrize(
    ("cls", "log_after", "vote_granted"),
    [(SyncObj, [1, 2], True), (SafeSyncObj, [1, 2, 3, 4], False)],
    ids=["pysyncobj-bug", "safe"],
)
def test_stale_append_entries_replay(cls, log_after, vote_granted, caplog) -> None:
    follower, transport = make_follower(cls)
    try:
        transport.deliver(LEADER, append_entries(1, (1, 0), [A, B, C], commit=4))
        follower.doTick(0)
        assert follower.raftLastApplied == 4
        assert transport.sent[-1][1]["next_node_idx"] == 5  # acknowledged a, b, c

        with caplog.at_level(logging.CRITICAL, logger="pysyncobj.syncobj"):
            transport.deliver(LEADER, append_entries(1, (1, 0), [A], commit=4))
        assert log_indexes(follower) == log_after
        assert ("truncating already-applied" in caplog.text) == (cls is SyncObj)

        transport.sent.clear()
        transport.deliver(CANDIDATE, {"type": "request_vote", "term": 2, "last_log_index": 2,
                                      "last_log_term": 1})
        assert ("response_vote" in transport.sent_types()) == vote_granted
    finally:
        follower._doDestroy()


def test_held_prefix_is_skipped_and_new_entries_appended() -> None:
    follower, transport = make_follower(SafeSyncObj)
    try:
        transport.deliver(LEADER, append_entries(1, (1, 0), [A, B], commit=1))
        transport.deliver(LEADER, append_entries(1, (1, 0), [A, B, C], commit=1))
        assert log_indexes(follower) == [1, 2, 3, 4]
        assert transport.sent[-1][1]["next_node_idx"] == 5
    finally:
        follower._doDestroy()


def test_conflicting_entries_are_still_replaced() -> None:
    follower, transport = make_follower(SafeSyncObj)
    try:
        transport.deliver(LEADER, append_entries(1, (1, 0), [A, B, C], commit=1))
        new_b = (b"\x01B", 3, 2)
        transport.deliver(LEADER, append_entries(2, (1, 0), [A, new_b], commit=1))
        assert follower._SyncObj__raftLog[:] == [(b"\x01", 1, 0), A, new_b]
    finally:
        follower._doDestroy()


def test_unvouched_older_term_tail_is_kept_but_not_acknowledged() -> None:
    follower, transport = make_follower(SafeSyncObj)
    try:
        # Entries of term 1 replicated by a leader of term 2 that has not sent its own entry yet.
        transport.deliver(LEADER, append_entries(2, (1, 0), [A, B, C], commit=1))
        transport.deliver(LEADER, append_entries(2, (1, 0), [A], commit=4))
        assert log_indexes(follower) == [1, 2, 3, 4]
        assert transport.sent[-1][1] == {"type": "next_node_idx", "next_node_idx": 3,
                                         "reset": False, "success": True}
        assert follower.raftCommitIndex == 2  # not past what the message vouched for
    finally:
        follower._doDestroy()


def test_leader_next_index_does_not_move_backwards() -> None:
    transport = FakeTransport()
    conf = SyncObjConf(autoTick=False, raftMinTimeout=60, raftMaxTimeout=61, connectionTimeout=61)
    leader = SafeSyncObj(SELF, [], conf=conf, transport=transport)
    try:
        leader._SyncObj__onBecomeLeader()
        next_index, match_index = leader._SyncObj__raftNextIndex, leader._SyncObj__raftMatchIndex
        peer = TCPNode("127.0.0.1:1009")
        next_index[peer], match_index[peer] = 10, 0
        leader._SyncObj__lastResponseTime[peer] = 0
        transport.deliver(peer, {"type": "next_node_idx", "next_node_idx": 6, "reset": False,
                                 "success": True})
        assert (match_index[peer], next_index[peer]) == (5, 10)
        transport.deliver(peer, {"type": "next_node_idx", "next_node_idx": 3, "reset": True,
                                 "success": False})
        assert next_index[peer] == 3  # a follower's reset still rewinds
    finally:
        leader._doDestroy()
