from __future__ import annotations

import os
from pathlib import Path

import pytest

from buoy.server.raft import journal as journal_mod
from buoy.server.raft.journal import DurableJournal, align_to_snapshot


def entries(first: int, last: int, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(f"cmd{i}".encode(), i, term) for i in range(first, last + 1)]


@pytest.fixture
def paths(tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / "raft-journal.bin"), str(tmp_path / "raft-meta.bin")


def open_journal(paths: tuple[str, str], **kwargs) -> DurableJournal:
    return DurableJournal(*paths, **kwargs)


def fill(journal: DurableJournal, items) -> None:
    for item in items:
        journal.add(*item)


def test_write_and_replay(paths) -> None:
    j = open_journal(paths)
    fill(j, entries(1, 50))
    j.setRaftCommitIndex(40)
    j._destroy()

    j = open_journal(paths)
    assert j[:] == entries(1, 50)
    assert len(j) == 50 and j[-1] == (b"cmd50", 50, 1) and j[0][1] == 1
    assert j.getRaftCommitIndex() == 40
    j._destroy()


def test_commit_index_never_beyond_the_log(paths) -> None:
    j = open_journal(paths)
    fill(j, entries(1, 5))
    j.setRaftCommitIndex(9)
    assert j.getRaftCommitIndex() == 5
    j._destroy()


@pytest.mark.parametrize("damage", ["torn", "bad_crc", "garbage_length"])
def test_damaged_tail_is_dropped(paths, damage) -> None:
    j = open_journal(paths)
    fill(j, entries(1, 10))
    j.sync()
    good_size = os.path.getsize(paths[0])
    j.add(b"cmd11", 11, 1)
    j._destroy()
    with open(paths[0], "r+b") as f:
        data = f.read()
        tail = bytearray(data[good_size:])
        if damage == "torn":
            tail = tail[:-3]
        elif damage == "bad_crc":
            tail[-1] ^= 0xFF
        else:
            tail[0:4] = (1 << 30).to_bytes(4, "little")
        f.seek(good_size)
        f.write(tail)
        f.truncate()

    j = open_journal(paths)
    assert j[:] == entries(1, 10)
    assert os.path.getsize(paths[0]) == good_size  # cut, so new records follow valid ones
    j.add(b"cmd11", 11, 2)
    j._destroy()
    j = open_journal(paths)
    assert j[-1] == (b"cmd11", 11, 2)
    j._destroy()


def test_truncation_takes_list_positions(paths) -> None:
    j = open_journal(paths)
    fill(j, entries(5, 14))  # positions 0..9 hold indexes 5..14
    j.deleteEntriesFrom(4)  # drops indexes 9..14
    assert j[-1][1] == 8
    fill(j, entries(9, 10, term=2))
    j._destroy()

    j = open_journal(paths)
    assert j[:] == entries(5, 8) + entries(9, 10, term=2)
    j._destroy()


def test_compaction_rewrites_the_file(paths) -> None:
    j = open_journal(paths)
    fill(j, entries(1, 1000))
    j.sync()
    before = os.path.getsize(paths[0])
    j.deleteEntriesTo(990)  # keep positions 990.. = indexes 991..1000
    assert j[0][1] == 991 and len(j) == 10
    assert os.path.getsize(paths[0]) < before / 50
    fill(j, entries(1001, 1002))
    j._destroy()

    j = open_journal(paths)
    assert j[:] == entries(991, 1002)
    j._destroy()


def test_clear(paths) -> None:
    j = open_journal(paths)
    fill(j, entries(1, 10))
    j.clear()
    fill(j, entries(100, 101))
    j._destroy()
    j = open_journal(paths)
    assert j[:] == entries(100, 101)
    j._destroy()


def test_term_and_vote_are_persisted(paths) -> None:
    j = open_journal(paths)
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (0, None)
    j.setCurrentTerm(7, "127.0.0.1:8300")
    j.close()  # like a crash: no orderly sync; setCurrentTerm must have been durable on its own
    j = open_journal(paths)
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (7, "127.0.0.1:8300")
    assert not os.path.exists(paths[1] + ".tmp")
    j._destroy()


def test_sync_only_when_dirty(paths, monkeypatch) -> None:
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(journal_mod.os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    j = open_journal(paths)
    j.sync()
    assert calls == []
    j.add(b"x", 1, 1)
    j.sync()
    j.sync()
    assert len(calls) == 1
    j.setRaftCommitIndex(1)  # nothing new to make durable: the commit record waits
    assert len(calls) == 1
    j.add(b"y", 2, 1)
    j.setRaftCommitIndex(2)  # a leader's new entries must be on disk before it applies them
    assert len(calls) == 2
    j._destroy()


def test_oversize_asks_for_compaction(paths) -> None:
    asked = []
    j = open_journal(paths, max_bytes=10_000, on_oversize=lambda: asked.append(True))
    fill(j, [(b"x" * 1000, i, 1) for i in range(1, 20)])
    j.sync()
    assert asked
    j._destroy()


def test_not_a_journal(paths) -> None:
    Path(paths[0]).write_bytes(b"something else entirely")
    with pytest.raises(ValueError):
        open_journal(paths)


def test_align_to_snapshot_keeps_the_tail(paths) -> None:
    j = open_journal(paths)
    fill(j, entries(1, 20))
    align_to_snapshot(j, entries(9, 9)[0], entries(10, 10)[0])
    assert j[:] == entries(9, 20)
    align_to_snapshot(j, (b"other", 12, 1), entries(13, 13)[0])  # not ours: untouched
    assert j[:] == entries(9, 20)
    j._destroy()


def test_one_server_per_data_directory(paths) -> None:
    j = open_journal(paths)
    with pytest.raises(journal_mod.JournalInUse):
        open_journal(paths)
    j._destroy()
    open_journal(paths)._destroy()  # released on close (and by the kernel on kill -9)
