"""Durable Raft journal for pysyncobj, replacing its mmap journal that is never fsynced.

One append-only file of records; each record is ``<u32 length><u32 crc32>`` followed by a msgpack
array: ``[1, idx, term, command]`` appends an entry, ``[2, idx]`` drops the entries from ``idx`` on,
``[3, idx]`` records the commit index. Opening replays the records and stops at the first torn or
corrupt one, cutting the file there: with fdatasync before every acknowledgement only the tail can be
torn. Compaction and ``clear`` rewrite the file (small then: only the tail after a snapshot
survives) through a temporary file, rename and directory fsync.

Current term and vote live in a separate small file, replaced durably before ``setCurrentTerm``
returns, which pysyncobj calls before it sends a vote or a vote request.

Durability points (pysyncobj never asks for them): ``sync()`` runs before a follower acknowledges
entries (``transport.py``) and in ``setRaftCommitIndex``, which a leader calls after its commit index
moved and before it applies the entries or tells anyone, so an entry is on disk on a majority
before it is applied or reported anywhere. Leaders also sync at the end of each tick
(``syncobj.py``), overlapping their fdatasync with the followers'.

pysyncobj calls ``deleteEntriesFrom`` and ``deleteEntriesTo`` with positions in the in-memory list,
not Raft indexes. All methods run on the Raft thread.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
from pysyncobj.journal import Journal
from pysyncobj.journal import MemoryJournal as _PysyncobjMemoryJournal

from buoy.files import fsync_dir, replace_file, write_all

logger = logging.getLogger(__name__)

MAGIC = b"BUOYRAFTLOG\n"
FORMAT_VERSION = 1
_HEADER = MAGIC + struct.pack("<I", FORMAT_VERSION)
_RECORD = struct.Struct("<II")

_ENTRY = 1
_TRUNCATE = 2
_COMMIT = 3

Entry = tuple[bytes, int, int]


class JournalInUse(RuntimeError):
    pass


def fail_stop(message: str) -> None:
    """Stop the process when the disk refuses a write or a sync.

    After a failed fsync the kernel may have dropped the dirty pages, and pysyncobj has already moved
    its commit index in memory: carrying on could acknowledge or apply entries that are not on disk.
    """
    logger.critical("%s; stopping the process to keep the Raft log safe", message)
    os._exit(70)


def _lock_dir(directory: str, lock_path: str) -> int:
    # Two servers appending to one journal would interleave their logs. The kernel drops the lock
    # when its holder dies, kill -9 included.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalInUse(f"the Raft data directory {directory} is in use by another server") from None
    return fd


def _record(payload: list[Any]) -> bytes:
    body = msgpack.packb(payload, use_bin_type=True)
    return _RECORD.pack(len(body), zlib.crc32(body)) + body


class MemoryJournal(_PysyncobjMemoryJournal):
    """pysyncobj's in-memory journal plus the ``sync`` hook the transport calls."""

    def sync(self) -> None:
        pass


class DurableJournal(Journal):
    def __init__(
        self,
        path: str,
        meta_path: str,
        *,
        max_bytes: int = 256 << 20,
        on_oversize: Callable[[], None] | None = None,
    ) -> None:
        self._path = path
        self._meta_path = meta_path
        self._dir = os.path.dirname(os.path.abspath(path))
        self._max_bytes = max_bytes
        self.on_oversize = on_oversize
        self._entries: list[Entry] = []
        self._commit = 1
        self._commit_written = 1
        self._buffer = bytearray()
        self._unsynced = False
        self._size = 0
        self._fd = -1
        self._lock_fd = _lock_dir(self._dir, path + ".lock")
        try:
            self._term, self._voted_for = self._read_meta()
            if os.path.exists(path):
                self._replay()
            else:
                self._rewrite()
        except BaseException:
            self.close()
            raise

    # -- pysyncobj's Journal interface -------------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._entries.append((command, idx, term))
        self._buffer += _record([_ENTRY, idx, term, command])

    def clear(self) -> None:
        self._entries = []
        self._rewrite()

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 - pysyncobj's name
        if entryFrom >= len(self._entries):
            return
        first_dropped = self._entries[max(entryFrom, 0)][1]
        del self._entries[entryFrom:]
        self._buffer += _record([_TRUNCATE, first_dropped])

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802 - pysyncobj's name
        # The snapshot that allows this compaction was renamed into this directory just before;
        # make that rename durable before the entries it covers disappear from the journal.
        fsync_dir(self._dir)
        self._entries = self._entries[entryTo:]
        self._rewrite()

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._fd >= 0:
            self._flush_commit()
            self.sync()
        self.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802 - pysyncobj's name
        self._commit = raftCommitIndex
        # On a leader this runs right after the commit index advanced and before the entries are
        # applied or the new index is advertised. Followers have synced before acknowledging, so
        # for them this is a no-op and the commit record rides along with the next sync.
        self.sync()

    def getRaftCommitIndex(self) -> int:  # noqa: N802 - pysyncobj's name
        if not self._entries:
            return 1
        return min(self._commit, self._entries[-1][1])

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802 - pysyncobj's name
        self._term, self._voted_for = term, votedForNodeId
        data = msgpack.packb({"version": FORMAT_VERSION, "term": term, "voted_for": votedForNodeId})
        try:
            replace_file(self._meta_path, data)
        except OSError as e:
            fail_stop(f"cannot persist Raft term and vote: {e}")

    def getCurrentTerm(self) -> int:  # noqa: N802 - pysyncobj's name
        return self._term

    def getVotedForNodeId(self) -> Any:  # noqa: N802 - pysyncobj's name
        return self._voted_for

    def onOneSecondTimer(self) -> None:  # noqa: N802 - pysyncobj's name
        # Lets a follower's commit index reach the file even when no entries arrive; a stale commit
        # index only delays what a restarted node applies before it hears from a leader.
        if self._commit != self._commit_written:
            self._flush_commit()
            self._write_buffer()

    # -- durability --------------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every record handed to the journal durable (fdatasync, only when there is news)."""
        if not self._buffer and not self._unsynced:
            return
        self._flush_commit()
        self._write_buffer()
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            fail_stop(f"cannot sync the Raft journal: {e}")
        self._unsynced = False
        if self._size > self._max_bytes and self.on_oversize is not None:
            self.on_oversize()

    def close(self) -> None:
        """Release the files without a final sync (``_destroy`` is the orderly shutdown)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    @property
    def size(self) -> int:
        return self._size + len(self._buffer)

    def _flush_commit(self) -> None:
        if self._commit != self._commit_written:
            self._buffer += _record([_COMMIT, self._commit])
            self._commit_written = self._commit

    def _write_buffer(self) -> None:
        if not self._buffer:
            return
        try:
            write_all(self._fd, self._buffer)
        except OSError as e:
            fail_stop(f"cannot write the Raft journal: {e}")
        self._size += len(self._buffer)
        self._buffer.clear()
        self._unsynced = True

    # -- file handling -----------------------------------------------------------------------------

    def _rewrite(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        parts = [_HEADER]
        parts += [_record([_ENTRY, idx, term, cmd]) for cmd, idx, term in self._entries]
        parts.append(_record([_COMMIT, self._commit]))
        data = b"".join(parts)
        try:
            replace_file(self._path, data)
        except OSError as e:
            fail_stop(f"cannot rewrite the Raft journal: {e}")
        self._commit_written = self._commit
        self._buffer.clear()
        self._unsynced = False
        self._size = len(data)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)

    def _replay(self) -> None:
        with open(self._path, "rb") as f:
            data = f.read()
        if data[: len(MAGIC)] != MAGIC:
            raise ValueError(f"{self._path} is not a Buoy Raft journal")
        (version,) = struct.unpack_from("<I", data, len(MAGIC))
        if version != FORMAT_VERSION:
            raise ValueError(f"{self._path}: unsupported journal format version {version}")
        entries = self._entries
        offset = len(_HEADER)
        end = len(data)
        view = memoryview(data)
        while offset < end:
            if end - offset < _RECORD.size:
                break
            length, crc = _RECORD.unpack_from(data, offset)
            body_start = offset + _RECORD.size
            if length > end - body_start:
                break
            body = view[body_start : body_start + length]
            if zlib.crc32(body) != crc:
                break
            try:
                record = msgpack.unpackb(body, raw=False)
                kind = record[0]
                if kind == _ENTRY:
                    _, idx, term, cmd = record
                    if entries and idx != entries[-1][1] + 1:
                        raise ValueError(f"entry {idx} does not follow {entries[-1][1]}")
                    entries.append((cmd, idx, term))
                elif kind == _TRUNCATE:
                    if entries:
                        del entries[max(record[1] - entries[0][1], 0) :]
                elif kind == _COMMIT:
                    self._commit = record[1]
                else:
                    raise ValueError(f"unknown record kind {kind}")
            except (ValueError, TypeError, IndexError, msgpack.UnpackException) as e:
                logger.error("Raft journal %s: bad record at offset %d: %s", self._path, offset, e)
                break
            offset = body_start + length
        if offset < end:
            logger.warning(
                "Raft journal %s: dropping %d bytes of torn or corrupt tail at offset %d",
                self._path, end - offset, offset,
            )
            with open(self._path, "r+b") as f:
                f.truncate(offset)
                os.fsync(f.fileno())
        self._commit_written = self._commit
        self._size = offset
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)

    def _read_meta(self) -> tuple[int, Any]:
        try:
            with open(self._meta_path, "rb") as f:
                meta = msgpack.unpackb(f.read(), raw=False)
        except FileNotFoundError:
            return 0, None
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self._meta_path}: unsupported format version {meta.get('version')}")
        return meta["term"], meta["voted_for"]


def align_to_snapshot(journal: Journal, prev: Entry, last: Entry) -> None:
    """Drop the journal's entries before a snapshot's ``prev`` entry, if it holds both of its entries."""
    if len(journal) < 2:
        return
    pos = prev[1] - journal[0][1]
    if pos <= 0 or pos + 1 >= len(journal):
        return
    if journal[pos] == prev and journal[pos + 1] == last:
        journal.deleteEntriesTo(pos)
