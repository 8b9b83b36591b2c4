"""Errors as kinds, each carrying Consul's one-line message.

Code below ``http/`` says what went wrong (an invalid request, a missing object, a refused permission); only
``buoy.http.errors`` knows which HTTP status each kind gets. The state machine hands these back as values
(see ``buoy.server.fsm``), so a refusal crosses the Raft thread without a status code or parsed text.
"""

from __future__ import annotations

NO_LEADER = "No cluster leader"  # Consul's words for "no server leads now"; clients match on them


class Error(Exception):
    """A request Buoy refuses or cannot carry out; ``message`` is the one-line text a client sees."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[Error], tuple[str]]:
        return type(self), (self.message,)


class Invalid(Error):
    """The request itself is malformed: bad JSON, a wrong type, a missing or ill-formed field."""


class Forbidden(Error):
    """The caller may not do this: a missing or insufficient token, an unsigned internal call."""


class NotFound(Error):
    """The object named does not exist."""


class Conflict(Error):
    """The object's current state forbids the change."""


class TooLarge(Error):
    """A body or value over its limit."""


class RateLimited(Error):
    """Too many requests of this kind right now; the caller should retry later."""


class Unavailable(Error):
    """The cluster cannot answer now: no leader, no reachable server, Raft shutting down."""


class Failed(Error):
    """The request was understood and refused by the server's rules (Consul answers these with a 500):
    a session for an unregistered node, a check in critical state, an unknown CA provider."""
