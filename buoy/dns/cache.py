"""Encoded answers, reused for every later query with the same question.

The key is the query after its 2-byte ID: flags, section counts, the question with its name folded to
lower case, and the additional section (so the EDNS buffer size, which decides what fits, is part of it).
A hit needs no parsing and no encoding: the cached answer gets the query's ID and the query's own spelling
of the name (0x20-randomising resolvers check it) and goes out. Each entry keeps a few encodings of the
same answer in different shuffles and hands them out in turn, so answers stay shuffled per query. Entries
are dropped when a view they were built from changes, oldest first when a table is over its byte budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import cycle
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buoy.dns.view import Watch

HEADER = 12
MAX_BYTES = 32 * 1024 * 1024  # per table (UDP, TCP)


def key_of(data: bytes) -> bytes:
    """The cache key of a query, or b"" when its question name does not end inside the packet."""
    end = data.find(0, HEADER)  # the root label ends the name: no other byte of a valid name is zero
    if end < 0:
        return b""
    # Only the name is folded: lower() on the binary fields could make two different queries one key.
    return data[2:HEADER] + data[HEADER:end].lower() + data[end:]


def question_end(data: bytes) -> int:
    """Where the question of a one-question query ends (name, type, class), assuming key_of found a name."""
    return data.find(0, HEADER) + 5


class Entry:
    __slots__ = ("table", "key", "rotation", "qend", "watches", "size", "used")

    def __init__(self, table: Table, key: bytes, encodings: list[bytes], qend: int,
                 watches: tuple[Watch, ...]) -> None:
        self.table = table
        self.key = key
        self.rotation: Iterator[tuple[bytes, bytes]] = cycle([(e[2:HEADER], e[qend:]) for e in encodings])
        self.qend = qend
        self.watches = watches
        self.size = sum(len(e) for e in encodings) + len(key)
        self.used = False

    def reply(self, query: bytes) -> bytes:
        """The next encoding, with the query's ID and its spelling of the question."""
        head, tail = next(self.rotation)
        self.used = True
        return b"".join((query[:2], head, query[HEADER:self.qend], tail))


class Table:
    """One transport's entries (UDP and TCP answers differ in what fits)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.max_bytes = max_bytes
        self.bytes = 0

    def put(self, key: bytes, encodings: list[bytes], qend: int, watches: tuple[Watch, ...]) -> None:
        entry = Entry(self, key, encodings, qend, watches)
        old = self.entries.get(key)
        if old is not None:
            remove(old)
        self.entries[key] = entry
        self.bytes += entry.size
        for w in watches:
            w.entries.add(entry)
        while self.bytes > self.max_bytes and self.entries:
            remove(next(iter(self.entries.values())))  # dicts keep insertion order: the oldest


def remove(entry: Entry) -> None:
    table = entry.table
    if table.entries.get(entry.key) is entry:
        del table.entries[entry.key]
        table.bytes -= entry.size
    for w in entry.watches:
        w.entries.discard(entry)


def drop(watch: Watch) -> None:
    """Forget every answer built from ``watch``'s data (it changed, expired or closed)."""
    for entry in list(watch.entries):
        remove(entry)
