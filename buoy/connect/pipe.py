"""Two connections joined into one: whatever one end receives the other end writes, with back-pressure.

Each end is a ``Side``, an asyncio protocol. When one end's write buffer fills, the transport tells that
end's protocol to pause writing, and it stops reading from the other end until the buffer drains; so a fast
sender never fills memory in front of a slow receiver. End of stream from either end closes both, once
what is buffered has been written: every pair has a TLS end, and TLS cannot carry a half-close (Consul's
built-in proxy closes both ends the same way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from buoy.connect.metrics import Stats


class Side(asyncio.Protocol):
    def __init__(self, stats: Stats, inbound: bool, on_made: Callable[[Side], None] | None = None,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.stats = stats
        self.inbound = inbound  # the end the downstream client is on
        self.on_made = on_made
        self.on_lost = on_lost
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.peer: Side | None = None
        self.pending: list[bytes] = []  # what arrived before the other end existed
        self.received = 0
        self.closed = False
        self.quiet_since = 0.0  # kept by the listener's sweeper
        self.last_seen = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.received += n
        if self.inbound:
            self.stats.rx += n
        else:
            self.stats.tx += n
        peer = self.peer
        if peer is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.peer is not None:
            self.peer.transport.close()  # after writing what is buffered
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()


def paused(side: Side) -> None:
    """An ``on_made`` for an end that must not be read until it is linked (and, downstream, admitted)."""
    side.transport.pause_reading()


def link(a: Side, b: Side) -> None:
    """Join two connected ends and start the bytes flowing both ways."""
    a.peer, b.peer = b, a
    for src, dst in ((a, b), (b, a)):
        if src.pending:
            dst.transport.write(b"".join(src.pending))
            src.pending = []
    for side in (a, b):
        if side.closed:
            side.connection_lost(None)
            return
    a.transport.resume_reading()
    b.transport.resume_reading()
