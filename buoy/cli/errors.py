"""How a command fails: one line on stderr and an exit status (1 for an error, 2 for bad usage)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from buoy.api.client import AgentTimeout, AgentUnreachable, APIError, ClientError

EXIT_ERROR = 1
EXIT_USAGE = 2


class Fail(Exception):
    """Stop the command, print `message` verbatim on stderr and exit with `code`.

    Commands raise it with Consul's own wording ("Error! No key exists at: x") so scripts written
    against `consul` keep matching; `main` prints it without adding anything.
    """

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Usage(Fail):
    """The command line itself is wrong: exit 2, like click's own usage errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


@contextmanager
def failing_with(prefix: str) -> Iterator[None]:
    """Turn an agent's error answer into Consul's `<prefix>: <reason>` line.

    Only APIError is caught: an agent that cannot be reached is reported the same way by every
    command, by `main`.
    """
    try:
        yield
    except APIError as exc:
        raise Fail(f"{prefix}: {exc}") from None


def describe(exc: ClientError) -> str:
    """The one line `main` prints for a client error no command handled itself."""
    if isinstance(exc, AgentUnreachable):
        return f"Error: cannot reach the agent at {exc.addr} — is `buoy agent` running?"
    if isinstance(exc, AgentTimeout):
        return f"Error: {exc}; check the agent's health or raise the timeout"
    return f"Error: {exc}"
