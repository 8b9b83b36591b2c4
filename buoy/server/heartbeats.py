"""Failure detection by heartbeats, the model Nomad uses instead of gossip.

Every agent (servers too) heartbeats the leader. The leader keeps one deadline per node in memory; a
heartbeat that changes nothing only moves the deadline, so it is not a Raft write. A node whose deadline
passes is marked failed (its serfHealth check goes critical) and, after ``reconnect_timeout``, reaped. A
new leader gives every alive node a fresh grace period, so a leader change never fails a healthy node.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from buoy.core.commands import MemberAlive, MemberFailed, MemberReap
from buoy.core.structs.member import ALIVE, BEATS_PER_TTL, SERF_CHECK

if TYPE_CHECKING:
    from buoy.server.replica import Propose, Replica
    from buoy.server.state.store import StateStore

log = structlog.get_logger("buoy.heartbeats")
MAX_BEATS_PER_SECOND = 50.0  # the TTL grows with the cluster so the leader handles at most this many
FAILOVER_GRACE = 2.0  # multiples of the TTL a new leader waits before failing a node it has not heard


class Heartbeats:
    def __init__(self, replica: Replica, propose: Propose, heartbeat_ttl: float, reconnect_timeout: float) -> None:
        self.replica = replica
        self.propose = propose  # the leader's own writes (failed, reaped): a failure is logged, the next tick retries
        self.heartbeat_ttl = heartbeat_ttl
        self.reconnect_timeout = reconnect_timeout
        self.deadlines: dict[str, float] = {}

    def alive(self) -> int:
        return self.replica.read(lambda s: sum(1 for r in s.members.rows.values() if r["Status"] == ALIVE))

    def ttl(self, alive: int | None = None) -> float:
        count = self.alive() if alive is None else alive
        return max(self.heartbeat_ttl, count / MAX_BEATS_PER_SECOND * BEATS_PER_TTL)

    def start(self) -> None:
        self.deadlines.clear()

    def _adopt(self, now: float) -> None:
        """Alive nodes the leader has no deadline for (it just took over, or the row just arrived through
        the log) get a grace period to reach it."""
        new = self.replica.read(lambda s: [n for n, r in s.members.rows.items() if r["Status"] == ALIVE
                                           and n not in self.deadlines])
        if new:
            deadline = now + self.ttl() * FAILOVER_GRACE
            for node in new:
                self.deadlines[node] = deadline

    def stop(self) -> None:
        self.deadlines.clear()

    async def beat(self, member: dict[str, Any], reg: dict[str, Any]) -> dict[str, Any]:
        """One heartbeat. Writes only when the node is new, back, changed or missing from the catalog;
        ``resync`` then tells the agent to push its services and checks again."""
        def known(s: StateStore) -> bool:
            serf = s.catalog.checks.get(member["Name"], {}).get(SERF_CHECK)
            return s.members.is_current(member) and serf is not None and serf["Status"] == "passing"

        current = self.replica.read(known)
        if not current:
            log.info("node alive", node=member["Name"], addr=member["Addr"], role=member["Role"])
            await self.replica.apply(MemberAlive(member=member, reg=reg))
        alive = self.alive()
        ttl = self.ttl(alive)
        self.deadlines[member["Name"]] = time.monotonic() + ttl
        return {"ttl": ttl, "resync": not current, "nodes": alive}

    def forget(self, node: str) -> None:
        self.deadlines.pop(node, None)

    async def tick(self) -> None:
        now = time.monotonic()
        self._adopt(now)
        for node in [n for n, t in self.deadlines.items() if t <= now]:
            del self.deadlines[node]
            log.warning("node failed: no heartbeat", node=node)
            await self.propose(MemberFailed(node=node))
        before = time.time() - self.reconnect_timeout
        gone = self.replica.read(lambda s: [n for n, r in s.members.rows.items()
                                            if r["Status"] != ALIVE and r["Since"] < before])
        for node in gone:
            log.info("reaping node", node=node)
            await self.propose(MemberReap(node=node))
