"""TCP transport that makes the journal durable before a follower acknowledges entries."""

from __future__ import annotations

from typing import Any

from pysyncobj.transport import TCPTransport


class SyncingTransport(TCPTransport):
    """pysyncobj's TCP transport (Fernet-authenticated frames) with one hook.

    A follower acknowledges AppendEntries with a ``next_node_idx`` message, and the leader counts
    that acknowledgement towards the commit: the entries must be on disk before it leaves. One
    fdatasync covers everything the follower appended since its previous acknowledgement.
    """

    def send(self, node: Any, message: Any) -> bool:
        if type(message) is dict and message.get("type") == "next_node_idx":
            self._syncObj._journal.sync()
        return super().send(node, message)
