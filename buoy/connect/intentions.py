"""Intention decisions: may a service connect to another one?

``decide`` is Consul's rule over the intentions that apply to a destination, in evaluation order (the
``/v1/connect/intentions/match?by=destination`` answer): the first one whose source matches decides; an
intention with L7 ``Permissions`` denies (a connection is authorized before any request is seen); with no
match the agent's default applies. ``IntentionCache`` keeps each destination's intentions current with a
blocking query on an agent's HTTP API, so a decision costs no call once the destination is known: the
agent's ``/v1/agent/connect/authorize`` uses it against its own API (which a client agent passes to the
servers), the sidecar proxy against its agent's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from buoy.api.client import Client, ClientError
from buoy.api.watch import Watch
from buoy.core.spiffe import DEFAULT_NS, WILDCARD
from buoy.core.structs.intention import describe

IDLE = 3600.0  # a destination nobody asked about for this long stops being watched


@dataclass(frozen=True)
class Default:
    """What applies when no intention matches, and the reason Consul gives for it."""

    allow: bool
    reason: str


def default_for(intentions_default: str, dev: bool) -> Default:
    """``intentions_default`` when set (Consul's "Default intention policy"); else allow in -dev and deny
    otherwise, which Consul would take from its ACL default policy. A proxy reads both from its agent's
    /v1/agent/self (DebugConfig.IntentionsDefault and DevMode)."""
    if intentions_default:
        return Default(intentions_default == "allow", "Default intention policy")
    return Default(dev, "Default behavior configured by ACLs")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    intention: dict[str, Any] | None = None  # the one that decided, if any


def decide(intentions: list[dict[str, Any]], source: str, default: Default, namespace: str = DEFAULT_NS) -> Decision:
    """Consul's decision for ``source`` connecting to the destination these intentions (in evaluation order)
    were matched for."""
    for ixn in intentions:
        if ixn["SourceNS"] in (namespace, WILDCARD) and ixn["SourceName"] in (source, WILDCARD):
            if ixn.get("Permissions"):
                return Decision(False, f"Matched L7 intention: {describe(ixn)}", ixn)
            return Decision(ixn.get("Action") == "allow", f"Matched L4 intention: {describe(ixn)}", ixn)
    return Decision(default.allow, default.reason)


@dataclass
class _Watched:
    """One destination's intentions and the task that keeps them current."""

    ready: asyncio.Future[None]
    intentions: list[dict[str, Any]] = field(default_factory=list)
    used: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None


class IntentionCache:
    """Each destination's intentions, fetched from an agent's HTTP API at the first question about it and
    followed with a blocking query from then on. While the agent cannot be reached the last answer stands."""

    def __init__(self, http_addr: str, default: Default, token: str = "") -> None:
        self.http_addr = http_addr
        self.default = default
        self.token = token
        self._watched: dict[str, _Watched] = {}

    async def authorize(self, target: str, source: str, namespace: str = DEFAULT_NS) -> Decision:
        return decide(await self.intentions(target), source, self.default, namespace)

    async def intentions(self, target: str) -> list[dict[str, Any]]:
        """The intentions that apply to ``target`` as a destination, in evaluation order; raises ClientError
        when they cannot be fetched the first time."""
        watched = self._watched.get(target)
        if watched is None:
            watched = self._watched[target] = _Watched(asyncio.get_running_loop().create_future())
            watched.task = asyncio.create_task(self._follow(target, watched))
        watched.used = time.monotonic()
        await asyncio.shield(watched.ready)
        return watched.intentions

    async def close(self) -> None:
        tasks = [w.task for w in self._watched.values() if w.task is not None]
        self._watched.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, target: str, watched: _Watched) -> None:
        async with Client(self.http_addr, token=self.token) as client:
            watch = Watch(client, "/v1/connect/intentions/match",
                          lambda answer: self._store(watched, target, answer),
                          params=[("by", "destination"), ("name", target)])
            try:
                self._store(watched, target, await watch.first())
            except ClientError as e:
                # Nothing to serve yet: the askers get the error, and the next question starts afresh.
                self._forget(target, watched)
                watched.ready.set_exception(e)
                watched.ready.exception()  # retrieved here, so an unasked future logs nothing
                return
            watched.ready.set_result(None)
            following = asyncio.create_task(watch.run())
            try:
                while (idle := time.monotonic() - watched.used) <= IDLE:
                    await asyncio.sleep(IDLE - idle + 1)
            finally:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            self._forget(target, watched)

    @staticmethod
    def _store(watched: _Watched, target: str, answer: Any) -> None:
        watched.intentions = (answer or {}).get(target) or []

    def _forget(self, target: str, watched: _Watched) -> None:
        if self._watched.get(target) is watched:
            del self._watched[target]
