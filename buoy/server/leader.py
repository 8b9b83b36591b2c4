"""Duties only the leader runs: session TTL timers (expiry destroys the session and so releases or deletes
its locks), node heartbeats (:mod:`buoy.server.heartbeats`), reaping old KV tombstones, and creating and
pruning the mesh CA's roots (:mod:`buoy.server.ca`). Timers live in memory; a new leader restarts every
TTL from zero, as Consul does, so a leader change never expires a session early."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from buoy.config import Config
from buoy.core.commands import Command, KVReap, SessionDestroy
from buoy.durations import parse_duration
from buoy.server.ca import CAManager
from buoy.server.heartbeats import Heartbeats
from buoy.server.state.store import StateStore, Topic

if TYPE_CHECKING:
    from buoy.server.replica import Replica
    from buoy.server.watch import WatchHub

log = structlog.get_logger("buoy.leader")
TTL_MULTIPLIER = 2  # Consul invalidates a session after twice its TTL without a renew
TICK = 0.25
TOMBSTONE_TTL = 900.0
REAP_EVERY = 60.0


@dataclass(frozen=True)
class LeaderSettings:
    datacenter: str
    heartbeat_ttl: float
    reconnect_timeout: float
    ca_config: dict[str, Any]  # the CA's first configuration (connect.ca_config)

    @classmethod
    def from_config(cls, cfg: Config) -> LeaderSettings:
        return cls(cfg.datacenter, cfg.heartbeat_ttl, cfg.reconnect_timeout, cfg.connect_ca_config)


class LeaderDuties:
    def __init__(self, replica: Replica, hub: WatchHub, settings: LeaderSettings) -> None:
        self.replica = replica
        self.deadlines: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._dirty = True
        self.heartbeats = Heartbeats(replica, self.apply, settings.heartbeat_ttl, settings.reconnect_timeout)
        self.ca = CAManager(replica, self.apply, settings.datacenter, settings.ca_config)
        hub.listeners.append(self._on_change)

    def set_leader(self, is_leader: bool) -> None:
        if is_leader and self._task is None:
            self.deadlines.clear()
            self._dirty = True
            self.heartbeats.start()
            self.ca.start()
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif not is_leader and self._task is not None:
            self._task.cancel()
            self._task = None
            self.heartbeats.stop()
            self.ca.stop()

    def _on_change(self, topics: set[Topic]) -> None:
        if self._task is None:
            return
        for topic in topics:
            if topic[0] in ("sessions", "reset"):
                self._dirty = True
            elif topic[0] == "renew" and topic[1] in self.deadlines:
                self.deadlines[topic[1]] = self._deadline(topic[1])

    def _deadline(self, session_id: str) -> float:
        row = self.replica.read(lambda s: s.sessions.get(session_id))
        ttl = parse_duration(row["TTL"]) if row and row["TTL"] else 0.0
        return time.monotonic() + ttl * TTL_MULTIPLIER

    def _resync(self) -> None:
        rows = self.replica.read(lambda s: {sid: row["TTL"] for sid, row in s.sessions.rows.items() if row["TTL"]})
        for sid in list(self.deadlines):
            if sid not in rows:
                del self.deadlines[sid]
        for sid in rows:
            if sid not in self.deadlines:
                self.deadlines[sid] = self._deadline(sid)

    async def _run(self) -> None:
        next_reap = time.monotonic() + REAP_EVERY
        while True:
            if self._dirty:
                self._dirty = False
                self._resync()
            now = time.monotonic()
            for sid in [s for s, t in self.deadlines.items() if t <= now]:
                self.deadlines.pop(sid, None)
                log.info("session expired", session=sid)
                await self.apply(SessionDestroy(id=sid))
            if now >= next_reap:
                next_reap = now + REAP_EVERY
                before = time.time() - TOMBSTONE_TTL
                stale = self.replica.read(functools.partial(_has_tombstones_before, before))
                if stale:
                    await self.apply(KVReap(before=before))
            await self.heartbeats.tick()
            await asyncio.sleep(TICK)

    async def apply(self, cmd: Command) -> None:
        try:
            await self.replica.apply(cmd)
        except Exception as e:  # leadership may move mid-way; the next leader redoes the work
            log.warning("leader duty failed", op=cmd.op, error=str(e))


def _has_tombstones_before(before: float, s: StateStore) -> bool:
    return any(t < before for _i, t in s.kv.tombstones.values())
