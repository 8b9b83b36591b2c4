"""The one exception the Raft layer raises to callers, and how pysyncobj's failure codes map to it."""

from __future__ import annotations

from pysyncobj import FAIL_REASON

from buoy.core.errors import NO_LEADER, Unavailable

TIMEOUT = "Raft timeout"
LEADERSHIP_LOST = "Leadership lost while committing log"
SHUTDOWN = "Raft is shutting down"


class RaftError(Unavailable):
    """A proposal failed; ``message`` says why in a few words (Consul's, where it has them).

    ``maybe_applied`` is True when the command may still have been (or later be) committed, so a
    caller that retries needs an idempotent command.
    """

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


# Codes after which the entry never reached a leader's log: the batch can be proposed again safely.
RETRYABLE = frozenset({FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER})

_MESSAGES = {
    FAIL_REASON.QUEUE_FULL: ("Raft queue full", False),
    FAIL_REASON.MISSING_LEADER: (NO_LEADER, False),
    # NOT_LEADER is only sent by a follower that was forwarded a command it cannot take.
    FAIL_REASON.NOT_LEADER: (NO_LEADER, False),
    FAIL_REASON.DISCARDED: (LEADERSHIP_LOST, False),
    FAIL_REASON.LEADER_CHANGED: (LEADERSHIP_LOST, True),
    FAIL_REASON.REQUEST_DENIED: ("Raft request denied", False),
    FAIL_REASON.UNKNOWN_OUTCOME: (LEADERSHIP_LOST, True),
}


def error_for(reason: int) -> RaftError:
    message, maybe_applied = _MESSAGES.get(reason, (f"Raft error {reason}", True))
    return RaftError(message, maybe_applied=maybe_applied)
