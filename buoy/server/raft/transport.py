"""TCP transport that makes the journal durable before a follower acknowledges entries."""

from __future__ import annotations

from typing import Any

from pysyncobj.transport import TCPTransport


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
