"""The contract between the Raft layer and the replicated state it drives."""

from __future__ import annotations

from typing import Any, Protocol


class StateMachine(Protocol):
    """Replicated state: every server feeds it the same commands in the same order.

    All three methods run on the Raft thread (``load`` may also run before the node starts), so the
    implementation decides how readers on other threads see a consistent state.
    """

    def apply_batch(self, cmds: list[dict]) -> list[Any]:
        """Apply commands in log order and return one result per command.

        Must be deterministic and should not raise: a failure that concerns one command belongs in
        that command's result. If it raises anyway, every caller of the batch gets a RaftError.
        """
        ...

    def dump(self) -> dict:
        """The whole state as plain msgpack-able data, for a snapshot."""
        ...

    def load(self, data: dict) -> None:
        """Replace the whole state with a former ``dump()``."""
        ...
