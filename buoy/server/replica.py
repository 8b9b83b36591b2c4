"""What a server's parts use of their server: consistent reads of the replicated state, replicated writes and
a barrier. The leader's duties (sessions, heartbeats, the CA) get this and their own settings, not the
Server itself, so none of them can reach past it into Raft, membership or the HTTP-facing calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from buoy.core.commands import Command
from buoy.server.state.store import StateStore

T = TypeVar("T")
Propose = Callable[[Command], Awaitable[None]]  # a write whose failure is logged, not raised (see LeaderDuties)


class Replica(Protocol):
    def read(self, fn: Callable[[StateStore], T]) -> T: ...

    async def apply(self, cmd: Command) -> Any: ...

    async def barrier(self) -> None: ...
