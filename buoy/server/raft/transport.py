"""TCP transport that makes the journal durable before a follower acknowledges entries."""

from __future__ import annotations

import struct
from typing import Any

from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

# Until a peer's first frame has passed Fernet's HMAC it may not make the node buffer more than this:
# pysyncobj trusts the declared frame length and grows its read buffer without bound.
UNAUTHENTICATED_BUFFER = 1 << 20
# After authentication a frame carries at most one AppendEntries batch or snapshot chunk.
MAX_FRAME = 256 << 20


class CappedConnection(TcpConnection):
    """pysyncobj's connection with bounded reads (``_TcpConnection__processRead`` is name-mangled)."""

    def _TcpConnection__processRead(self) -> bool:  # noqa: N802
        more = super()._TcpConnection__processRead()  # type: ignore[misc]
        buffer = self._TcpConnection__readBuffer  # type: ignore[attr-defined]
        authenticated = bool(self.recvLastTimestamp)
        declared = struct.unpack("i", buffer[:4])[0] if len(buffer) >= 4 else 0
        limit = MAX_FRAME if authenticated else UNAUTHENTICATED_BUFFER
        if declared < 0 or declared > limit or (not authenticated and len(buffer) > limit):
            self.disconnect()
            return False
        return more


class SyncingTransport(TCPTransport):
    """pysyncobj's TCP transport (Fernet-authenticated frames) with one hook.

    A follower acknowledges AppendEntries with a ``next_node_idx`` message, and the leader counts
    that acknowledgement towards the commit: the entries must be on disk before it leaves. The
    acknowledgements are held back until the tick's end (``flush_acks``), so that every
    AppendEntries read in one poll is covered by a single fdatasync instead of one each: with
    several batches in flight that is what bounds a follower's write rate on a slow disk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_acks: list[tuple[Any, Any]] = []

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802
        conn.__class__ = CappedConnection  # same layout, bounded reads from the first byte on
        super()._onNewIncomingConnection(conn)

    def send(self, node: Any, message: Any) -> bool:
        if type(message) is dict and message.get("type") == "next_node_idx":
            self._held_acks.append((node, message))
            return True
        return super().send(node, message)

    def flush_acks(self) -> None:
        """Make the journal durable, then release the held acknowledgements in order."""
        self._syncObj._journal.sync()
        held, self._held_acks = self._held_acks, []
        for node, message in held:
            super().send(node, message)
