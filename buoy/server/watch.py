"""Wake-ups for blocking queries.

A blocking query registers a future on the topics it reads (``("kv", key)``, a KV prefix, ``("service",
name)``, a table) and sleeps; the state store reports the topics each applied batch touched and only the
matching futures wake. An idle watcher costs one dict entry; a write costs a lookup per topic it touched
(plus one per prefix of a KV key while anyone watches a prefix), never a walk over all watchers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from buoy.server.state.store import Topic


class WatchHub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._exact: dict[Topic, set[asyncio.Future[None]]] = {}
        self._prefix: dict[str, set[asyncio.Future[None]]] = {}
        self.listeners: list[Callable[[set[Topic]], None]] = []
        self.waiting = 0  # blocking queries asleep right now (shown in /v1/agent/self)
        self.closed = False

    def notify_threadsafe(self, topics: set[Topic]) -> None:
        """Called on the Raft thread after a batch: hop to the loop."""
        self._loop.call_soon_threadsafe(self.fire, topics)

    def fire(self, topics: set[Topic]) -> None:
        if ("reset",) in topics:
            self._wake_all()
        for topic in topics:
            self._wake(self._exact.pop(topic, None))
            if topic[0] == "kv" and self._prefix:
                key = topic[1]
                for i in range(len(key) + 1):
                    self._wake(self._prefix.pop(key[:i], None))
        for listener in self.listeners:
            listener(topics)

    def close(self) -> None:
        """The agent is shutting down: wake every blocking query and let none sleep again, so open
        queries answer with what they have instead of holding the shutdown."""
        self.closed = True
        self._wake_all()

    def _wake_all(self) -> None:
        for group in (self._exact, self._prefix):
            for futs in group.values():
                self._wake(futs)
            group.clear()

    @staticmethod
    def _wake(futs: set[asyncio.Future[None]] | None) -> None:
        for fut in futs or ():
            if not fut.done():
                fut.set_result(None)

    async def wait(self, topics: Iterable[Topic], prefixes: Iterable[str], timeout: float) -> bool:
        """Sleep until one of the topics fires or the timeout passes; True if woken by a change."""
        if self.closed:
            return False
        fut: asyncio.Future[None] = self._loop.create_future()
        topics, prefixes = list(topics), list(prefixes)
        for t in topics:
            self._exact.setdefault(t, set()).add(fut)
        for p in prefixes:
            self._prefix.setdefault(p, set()).add(fut)
        self.waiting += 1
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
            for t in topics:
                self._discard(self._exact, t, fut)
            for p in prefixes:
                self._discard(self._prefix, p, fut)

    @staticmethod
    def _discard(group: dict, key: object, fut: asyncio.Future[None]) -> None:
        futs = group.get(key)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del group[key]
