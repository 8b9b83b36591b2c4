"""RaftNode: the asyncio-facing Raft node, with application-level batching of proposals."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
from pysyncobj import FAIL_REASON

from buoy.files import private_dir

from .errors import NO_LEADER, RETRYABLE, SHUTDOWN, TIMEOUT, RaftError, error_for
from .fsm import StateMachine
from .journal import DurableJournal, JournalInUse, MemoryJournal, align_to_snapshot
from .settings import RaftSettings, syncobj_conf
from .snapshot import make_deserializer, make_serializer
from .syncobj import ReplicatedLog

logger = logging.getLogger(__name__)

JOURNAL_FILE = "raft-journal.bin"
META_FILE = "raft-meta.bin"
SNAPSHOT_FILE = "raft-snapshot.bin"

_RETRY_DELAY = 0.05
_LEADER_STATE = 2
_RESTORE_TIMEOUT = 60.0


class _ApplyFailed:
    """Returned through pysyncobj instead of raising, which would wedge its apply loop."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _Batch:
    __slots__ = ("blob", "waiters", "deadline")

    def __init__(self, blob: bytes, waiters: list[tuple[asyncio.Future, int, float]], deadline: float) -> None:
        self.blob = blob
        # (future, position of its command in the batch or -1 for a barrier, caller's deadline)
        self.waiters = waiters
        # Past this the slot is given back even if pysyncobj never answers (e.g. a forwarded
        # command lost with its connection).
        self.deadline = deadline


class RaftNode:
    """One server's Raft node driving a StateMachine.

    ``data_dir`` holds ``raft-journal.bin``, ``raft-meta.bin`` and ``raft-snapshot.bin`` (created if
    missing, locked against a second server); None keeps the log in memory (snapshots then go to a
    private temporary directory, removed by ``close``). The constructor returns once the state
    machine holds the restored state (snapshot plus journal up to the last commit index this server
    recorded) and the Raft port is bound. ``apply``, ``barrier`` and the membership calls must run
    on one asyncio loop.
    """

    def __init__(
        self,
        fsm: StateMachine,
        self_addr: str,
        partners: list[str],
        *,
        data_dir: str | None,
        password: str,
        on_leader_change: Callable[[bool], None] | None = None,
        settings: RaftSettings | None = None,
    ) -> None:
        if not password:
            raise ValueError("a non-empty cluster key is required: Raft peers unpickle what they receive")
        self._fsm = fsm
        self._self_addr = self_addr
        self._on_leader_change = on_leader_change
        self._settings = settings = settings or RaftSettings()
        self._loop: asyncio.AbstractEventLoop | None = None
        # (packed command or None for a barrier, caller's future, caller's deadline); deadlines
        # only grow along the queue because the timeout is fixed.
        self._pending: deque[tuple[bytes | None, asyncio.Future, float]] = deque()
        self._inflight: set[_Batch] = set()
        self._flush_scheduled = False
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._membership_lock: asyncio.Lock | None = None
        self._sync: ReplicatedLog | None = None

        self._tmp_dir: str | None = None
        journal, snapshot_dir = self._open_storage(data_dir)
        dump_file = os.path.join(snapshot_dir, SNAPSHOT_FILE)
        deserialize = make_deserializer(fsm, functools.partial(align_to_snapshot, journal))
        self._snapshot_loads = 0

        def deserializer(path: str) -> Any:
            try:
                return deserialize(path)
            finally:
                self._snapshot_loads += 1

        conf = syncobj_conf(
            settings,
            bind_address=self_addr,
            password=password,
            dump_file=dump_file,
            serializer=make_serializer(fsm),
            deserializer=deserializer,
            on_state_changed=self._on_state_changed,
        )
        restore_to = journal.getRaftCommitIndex()
        must_load_snapshot = os.path.exists(dump_file)
        others = sorted({p for p in partners if p != self_addr})
        try:
            self._sync = ReplicatedLog(self_addr, others, conf, journal, self._apply_blob)
        except BaseException:
            if isinstance(journal, DurableJournal):
                journal.close()
            if self._tmp_dir is not None:
                shutil.rmtree(self._tmp_dir, ignore_errors=True)
            raise
        self._wait_restored(restore_to, must_load_snapshot)

    def _open_storage(self, data_dir: str | None) -> tuple[DurableJournal | MemoryJournal, str]:
        if data_dir is None:
            self._tmp_dir = tempfile.mkdtemp(prefix="buoy-raft-")
            return MemoryJournal(), self._tmp_dir
        private_dir(data_dir)
        try:
            journal = DurableJournal(
                os.path.join(data_dir, JOURNAL_FILE),
                os.path.join(data_dir, META_FILE),
                max_bytes=self._settings.journal_max_bytes,
                on_oversize=self._force_compaction,
            )
        except JournalInUse as e:
            raise RaftError(str(e)) from None
        return journal, data_dir

    def _wait_restored(self, commit_index: int, must_load_snapshot: bool) -> None:
        # pysyncobj loads the snapshot and replays the journal on its first ticks. Wait for it, so
        # the state machine holds everything this server knew committed when it returns (Consul
        # restores before serving too).
        assert self._sync is not None
        deadline = time.monotonic() + _RESTORE_TIMEOUT
        while (must_load_snapshot and not self._snapshot_loads) or self._sync.raftLastApplied < commit_index:
            if time.monotonic() > deadline:
                logger.warning("Raft state not restored after %.0f s; continuing", _RESTORE_TIMEOUT)
                return
            time.sleep(0.005)

    # -- proposals ---------------------------------------------------------------------------------

    async def apply(self, cmd: dict) -> Any:
        """Replicate ``cmd`` and return the state machine's result for it once applied locally.

        Works on any server (a follower forwards to the leader). Raises RaftError when the command
        could not be committed in ``settings.apply_timeout``, TypeError when ``cmd`` is not
        msgpack-able and ValueError when it exceeds ``settings.max_command_bytes``. The command
        reaches ``apply_batch`` after a msgpack round trip (tuples arrive as lists).
        """
        packed = msgpack.packb(cmd, use_bin_type=True)
        if len(packed) > self._settings.max_command_bytes:
            raise ValueError(f"command of {len(packed)} bytes exceeds the Raft limit")
        return await self._enqueue(packed)

    async def barrier(self) -> None:
        """Return once an entry proposed now has been applied locally.

        On the leader this confirms it still leads (a deposed leader cannot commit); everywhere it
        means every write acknowledged before the call is visible in local state.
        """
        await self._enqueue(None)

    def _enqueue(self, packed: bytes | None) -> asyncio.Future:
        loop = self._bind_loop()
        if self._closed:
            raise RaftError(SHUTDOWN)
        fut = loop.create_future()
        deadline = loop.time() + self._settings.apply_timeout
        self._pending.append((packed, fut, deadline))
        self._schedule_flush()
        # One timer for all callers instead of one per call: asyncio.timeout() cost about a third
        # of the loop's time at 256 concurrent writers.
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_at(deadline, self._sweep)
        return fut

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError("RaftNode is already used from another event loop")
            # A new loop (e.g. a second asyncio.run in tests): the old one's futures died with it.
            self._loop = loop
            self._pending.clear()
            self._inflight.clear()
            self._flush_scheduled = False
            self._sweep_handle = None
            self._membership_lock = None
        return loop

    def _schedule_flush(self) -> None:
        # Deferred by one loop iteration so that every coroutine proposing in this iteration shares
        # the batch.
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed:
            return
        s = self._settings
        loop = self._loop
        assert loop is not None
        while self._pending and len(self._inflight) < s.batches_in_flight:
            parts: list[bytes] = []
            waiters: list[tuple[asyncio.Future, int, float]] = []
            size = 0
            while self._pending and len(waiters) < s.batch_max_commands:
                packed, fut, deadline = self._pending[0]
                if fut.done():  # its caller gave up before it was proposed
                    self._pending.popleft()
                    continue
                if packed is not None and parts and size + len(packed) > s.batch_max_bytes:
                    break
                self._pending.popleft()
                if packed is None:
                    waiters.append((fut, -1, deadline))
                else:
                    waiters.append((fut, len(parts), deadline))
                    parts.append(packed)
                    size += len(packed)
            if not waiters:
                break
            blob = _array_header(len(parts)) + b"".join(parts)
            batch = _Batch(blob, waiters, loop.time() + s.apply_timeout)
            self._inflight.add(batch)
            self._propose(batch)

    def _propose(self, batch: _Batch) -> None:
        if batch not in self._inflight or self._sync is None or self._loop is None:
            return
        callback = functools.partial(self._on_result, self._loop, batch)
        self._sync.apply_entry(batch.blob, callback=callback)

    def _on_result(self, loop: asyncio.AbstractEventLoop, batch: _Batch, result: Any, err: int) -> None:
        # Raft thread.
        try:
            loop.call_soon_threadsafe(self._resolve, batch, result, err)
        except RuntimeError:
            pass  # loop closed: nobody is waiting any more

    def _resolve(self, batch: _Batch, result: Any, err: int) -> None:
        if batch not in self._inflight:
            return  # expired
        assert self._loop is not None
        if err in RETRYABLE and not self._closed and self._loop.time() + _RETRY_DELAY < batch.deadline:
            # Never entered a leader's log (no leader yet, or forwarded to a node that just lost
            # leadership): propose again, as Consul holds writes during an election.
            self._loop.call_later(_RETRY_DELAY, self._propose, batch)
            return
        self._inflight.discard(batch)
        if err != FAIL_REASON.SUCCESS:
            self._fail(batch, lambda: error_for(err))
        elif isinstance(result, _ApplyFailed):
            self._fail(batch, lambda: RaftError(result.message))
        else:
            for fut, slot, _ in batch.waiters:
                if not fut.done():
                    fut.set_result(result[slot] if slot >= 0 else None)
        self._schedule_flush()

    def _sweep(self) -> None:
        """Fail callers whose deadline passed, give back stuck batch slots, re-arm for the next deadline."""
        self._sweep_handle = None
        loop = self._loop
        if loop is None or self._closed:
            return
        now = loop.time()
        message = self._timeout_message()
        while self._pending and self._pending[0][2] <= now:
            _, fut, _ = self._pending.popleft()
            if not fut.done():  # never proposed: certainly not applied
                fut.set_exception(RaftError(message))
        upcoming = [self._pending[0][2]] if self._pending else []
        for batch in list(self._inflight):
            if batch.deadline <= now:
                self._inflight.discard(batch)
                self._fail(batch, lambda: RaftError(message, maybe_applied=True))
                self._schedule_flush()
                continue
            upcoming.append(batch.deadline)
            for fut, _, deadline in batch.waiters:
                if fut.done():
                    continue
                if deadline > now:
                    upcoming.append(deadline)
                    break
                fut.set_exception(RaftError(message, maybe_applied=True))
        if upcoming:
            self._sweep_handle = loop.call_at(min(upcoming), self._sweep)

    @staticmethod
    def _fail(batch: _Batch, make_error: Callable[[], RaftError]) -> None:
        for fut, _, _ in batch.waiters:
            if not fut.done():
                fut.set_exception(make_error())

    def _timeout_message(self) -> str:
        return TIMEOUT if self.leader is not None else NO_LEADER

    def _apply_blob(self, blob: bytes) -> Any:
        # Raft thread, every server, log order.
        try:
            cmds = msgpack.unpackb(blob, raw=False, strict_map_key=False)
            if not cmds:
                return []
            results = self._fsm.apply_batch(cmds)
            if len(results) != len(cmds):
                raise ValueError(f"apply_batch returned {len(results)} results for {len(cmds)} commands")
            return results
        except Exception as e:
            logger.exception("state machine failed to apply a batch")
            return _ApplyFailed(f"State machine error: {e}")

    # -- membership --------------------------------------------------------------------------------

    async def add_member(self, addr: str) -> None:
        """Add a server to the configuration; changes are serialized on this node.

        Call it on one node only (the leader's duties): pysyncobj does not stop two concurrent
        changes proposed from different nodes.
        """
        await self._change_membership(addr, adding=True)

    async def remove_member(self, addr: str) -> None:
        """Remove a server (not the leader itself; transfer leadership first)."""
        await self._change_membership(addr, adding=False)

    async def _change_membership(self, addr: str, *, adding: bool) -> None:
        loop = self._bind_loop()
        if self._membership_lock is None:
            self._membership_lock = asyncio.Lock()
        assert self._sync is not None
        change = self._sync.addNodeToCluster if adding else self._sync.removeNodeFromCluster
        deadline = time.monotonic() + self._settings.apply_timeout
        async with self._membership_lock:
            while True:
                if (addr in self.members()) == adding:
                    return
                if self._closed:
                    raise RaftError(SHUTDOWN)
                fut = loop.create_future()

                def done(_res: Any, err: int, fut: asyncio.Future = fut) -> None:
                    try:
                        loop.call_soon_threadsafe(_set_result_once, fut, err)
                    except RuntimeError:
                        pass

                change(addr, callback=done)
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                        err = await fut
                except TimeoutError:
                    raise RaftError(self._timeout_message(), maybe_applied=True) from None
                if err == FAIL_REASON.SUCCESS:
                    return
                # Denied until the leader's first entry of its term is applied; no leader yet.
                if err not in RETRYABLE and err != FAIL_REASON.REQUEST_DENIED:
                    raise error_for(err)
                if time.monotonic() + 0.1 >= deadline:
                    raise error_for(err)
                await asyncio.sleep(0.1)

    # -- state -------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._sync is not None and self._sync._isLeader()

    @property
    def leader(self) -> str | None:
        """The leader's address, or None. A follower that has not heard from its leader for longer
        than the election timeout stops naming it: pysyncobj keeps the old name for ever when the
        follower cannot reach anyone to start an election with."""
        node = self._sync._getLeader() if self._sync is not None else None
        if node is None:
            return None
        if not self.is_leader and self.last_contact_ms() > self._settings.election_timeout_max * 1000:
            return None
        return node.id

    @property
    def self_addr(self) -> str:
        return self._self_addr

    def members(self) -> list[str]:
        """Raft addresses of the current configuration, this node included."""
        others = self._sync.otherNodes if self._sync is not None else set()
        return sorted({self._self_addr, *(node.id for node in others)})

    def last_contact_ms(self) -> int:
        if self.is_leader or self._sync is None:
            return 0
        return int((time.monotonic() - self._sync.last_leader_contact) * 1000)

    def status(self) -> dict:
        sync = self._sync
        assert sync is not None
        last_index, last_term = sync.last_log
        return {
            "state": sync.state_name,
            "term": sync.raftCurrentTerm,
            "commit_index": sync.raftCommitIndex,
            "last_applied": sync.raftLastApplied,
            "last_log_index": last_index,
            "last_log_term": last_term,
            "leader": self.leader,
            "num_peers": len(sync.otherNodes),
            "last_contact_ms": self.last_contact_ms(),
        }

    def _on_state_changed(self, old: int, new: int) -> None:
        # Raft thread.
        was_leader, is_leader = old == _LEADER_STATE, new == _LEADER_STATE
        if was_leader != is_leader and self._on_leader_change is not None:
            try:
                self._on_leader_change(is_leader)
            except Exception:
                logger.exception("on_leader_change callback failed")

    def _force_compaction(self) -> None:
        if self._sync is not None:
            self._sync.forceLogCompaction()

    # -- shutdown ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the Raft thread, close connections and flush the journal; waits at most a few seconds."""
        if self._closed:
            return
        self._closed = True
        if self._sync is not None and not self._sync.stop(timeout=5.0):
            logger.warning("Raft thread did not stop within 5 s")
        self._fail_everything_soon()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def _fail_everything_soon(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fail_everything()
        else:
            try:
                loop.call_soon_threadsafe(self._fail_everything)
            except RuntimeError:
                pass

    def _fail_everything(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for batch in list(self._inflight):
            self._fail(batch, lambda: RaftError(SHUTDOWN, maybe_applied=True))
        self._inflight.clear()
        while self._pending:
            _, fut, _ = self._pending.popleft()
            if not fut.done():
                fut.set_exception(RaftError(SHUTDOWN))


def _set_result_once(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")
