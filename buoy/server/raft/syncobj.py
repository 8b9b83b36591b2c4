"""The pysyncobj subclasses. Everything that touches pysyncobj's private names lives here.

pysyncobj is pinned to 0.3.17 because of these overrides. Private names used:
``_SyncObj__onMessageReceived`` (overridden), ``_SyncObj__raftLog``, ``_SyncObj__raftNextIndex``,
``_SyncObj__raftState``, ``_SyncObj__otherNodes``, ``_SyncObj__sendNextNodeIdx``,
``_SyncObj__generateRaftTimeout`` (overridden), ``_SyncObj__mainThread``, ``_SyncObj__thread``,
``_SyncObj__pipeNotifier``, ``_SyncObj__transport``, ``_TcpConnection__processRead`` and
``_TcpConnection__readBuffer`` (transport.py), and the module global ``pysyncobj.syncobj.createJournal``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pysyncobj.syncobj
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.syncobj import SyncObjException

from .errors import RaftError
from .transport import SyncingTransport

_STATE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}


class SafeSyncObj(SyncObj):
    """SyncObj with the AppendEntries truncation bug fixed.

    pysyncobj's follower deletes every entry after ``prevLogIdx`` whenever it holds any, without
    comparing terms (syncobj.py:991-1006). A duplicate or stale AppendEntries, which its leader
    produces all the time by moving ``nextIndex`` backwards on every ack (:1079-1082), then cuts
    entries the follower has already acknowledged. If the leader dies at that moment a shorter log
    can win the election and committed, applied entries are lost. Raft's rule is to truncate only at
    a conflict; this subclass enforces it on the follower and keeps the leader's ``nextIndex`` from
    moving backwards, which removes most duplicates in the first place.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._last_leader_contact = time.monotonic()
        super().__init__(*args, **kwargs)

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802
        kind = message.get("type") if type(message) is dict else None
        ack = None
        if kind == "append_entries" and message["term"] >= self.raftCurrentTerm:
            self._last_leader_contact = time.monotonic()
            message, ack = self._skip_held_entries(message)
        elif kind == "next_node_idx" and self._isLeader():
            next_index = self._SyncObj__raftNextIndex
            before = next_index.get(node)
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            if (
                before is not None
                and message["success"]
                and not message["reset"]
                and next_index.get(node, before) < before
            ):
                next_index[node] = before
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        if ack is not None:
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=ack, success=True)

    def _skip_held_entries(self, message: dict) -> tuple[dict, int | None]:
        """Rewrite an AppendEntries so that pysyncobj's handler never truncates a matching entry.

        Returns the message to hand to pysyncobj and, when the reply must be sent here instead,
        the ``next_node_idx`` to acknowledge.
        """
        prev_idx = message.get("prevLogIdx")
        if prev_idx is None or message.get("transmission") is not None:
            return message, None
        log = self._SyncObj__raftLog
        first, last = log[0][1], log[-1][1]
        if not first <= prev_idx <= last or log[prev_idx - first][2] != message["prevLogTerm"]:
            return message, None  # pysyncobj answers with a reset
        entries = message.get("entries") or []
        held = 0
        for _, idx, term in entries:
            if idx > last or log[idx - first][2] != term:
                break
            held += 1
        if held < len(entries):
            if held == 0:
                return message, None
            # Append from the first new or conflicting entry; pysyncobj truncates only there.
            _, anchor_idx, anchor_term = entries[held - 1]
            return {**message, "prevLogIdx": anchor_idx, "prevLogTerm": anchor_term,
                    "entries": entries[held:]}, None
        end = prev_idx + held
        if end == last and not entries:
            return message, None
        if end == last or log[-1][2] == message["term"]:
            # Every entry already held. If the log goes further and its last entry carries the
            # leader's term, the whole log came from this leader (Log Matching), so anchoring at
            # its end is exact and acknowledges all of it.
            return {**message, "prevLogIdx": last, "prevLogTerm": log[-1][2], "entries": []}, None
        # Held, but followed by entries of older terms that this message does not vouch for: they
        # may have been acknowledged, so keep them, acknowledge only what the message covers and do
        # not let the commit index reach past it. pysyncobj still handles term, leader and timers.
        heartbeat = {k: v for k, v in message.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")}
        heartbeat["commit_index"] = min(message["commit_index"], end)
        return heartbeat, end + 1


_CREATE_JOURNAL_LOCK = threading.Lock()


@contextlib.contextmanager
def _journal_installed(journal: Any) -> Iterator[None]:
    # SyncObj.__init__ builds its journal through this module global and takes no parameter for it.
    # Swap it only for the duration of one construction, so nodes with different journals can live
    # in one process.
    with _CREATE_JOURNAL_LOCK:
        original = pysyncobj.syncobj.createJournal
        pysyncobj.syncobj.createJournal = lambda journalFile=None: journal
        try:
            yield
        finally:
            pysyncobj.syncobj.createJournal = original


class ReplicatedLog(SafeSyncObj):
    """The node's SyncObj: one replicated method that carries a batch of commands."""

    def __init__(
        self,
        self_addr: str,
        partners: list[str],
        conf: SyncObjConf,
        journal: Any,
        apply_blob: Callable[[bytes], Any],
    ) -> None:
        self._journal = journal
        self._apply_blob = apply_blob
        with _journal_installed(journal):
            super().__init__(self_addr, partners, conf=conf, transportClass=SyncingTransport)
        try:
            self.waitBinded()
        except SyncObjException:
            self._doDestroy()
            raise RaftError(f"Cannot bind Raft address {self_addr}") from None
        # The tick thread stops when the constructing thread ends; tie it to the process instead,
        # so a node may be built from a worker thread.
        self._SyncObj__mainThread = threading.main_thread()
        # Runs just before the tick thread waits for I/O, after a leader has sent its new entries:
        # the leader's fdatasync then overlaps the followers' instead of following their acks
        # (setRaftCommitIndex would otherwise do it). A follower makes everything it appended in
        # the last poll durable with one fdatasync and only then sends the held acknowledgements.
        self.addOnTickCallback(self._SyncObj__transport.flush_acks)

    @replicated
    def apply_entry(self, blob: bytes) -> Any:
        return self._apply_blob(blob)

    def _checkCommandsToApply(self) -> None:  # noqa: N802
        super()._checkCommandsToApply()
        # A lone leader commits its new entries at the next tick, but no peer reply will wake the
        # poller before the tick period ends; wake it now instead of adding up to a tick per write.
        if not self._SyncObj__otherNodes and self._isLeader() and self.raftCommitIndex < self.last_log[0]:
            notifier = getattr(self, "_SyncObj__pipeNotifier", None)
            if notifier is not None:
                notifier.notify()

    def _SyncObj__generateRaftTimeout(self) -> float:  # noqa: N802
        # Alone in its configuration a node is its own majority: elect it at the first tick.
        if not self._SyncObj__otherNodes:
            return 0.0
        return SyncObj._SyncObj__generateRaftTimeout(self)

    def stop(self, timeout: float) -> bool:
        """Stop the tick thread (it closes the transport and the journal); True once it has ended."""
        self.destroy()
        thread = self._SyncObj__thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def state_name(self) -> str:
        return _STATE_NAMES.get(self._SyncObj__raftState, "unknown")

    @property
    def last_log(self) -> tuple[int, int]:
        try:
            _, idx, term = self._SyncObj__raftLog[-1]
        except IndexError:  # read from another thread during a journal rewrite
            return 0, 0
        return idx, term

    @property
    def last_leader_contact(self) -> float:
        return self._last_leader_contact
