"""A value with an index that only moves forward, and the blocking reads waiting for it to pass theirs:
what the agent's own blocking endpoints (leaf certificates, roots, a local service) wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Versioned:
    """A value with an index, and the blocking reads waiting for the index to pass theirs."""

    def __init__(self) -> None:
        self.value: Any = None
        self.index = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def set(self, value: Any, index: int) -> None:
        """Publish a new value; its index always moves forward so a blocking read sees it."""
        self.value, self.index = value, max(index, self.index + 1)
        self.wake()

    def wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def wait_past(self, index: int, timeout: float, closed: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.index <= index and not closed():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            fut = loop.create_future()
            self._waiters.add(fut)
            await asyncio.wait([fut], timeout=remaining)
            self._waiters.discard(fut)

    def bump(self) -> None:
        """The value changed in place: move the index so that blocking reads look again."""
        self.set(self.value, 0)
