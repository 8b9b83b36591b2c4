"""The members table: every agent the servers know (servers and clients), its address, role and status.

Liveness itself is not replicated: the leader keeps heartbeat deadlines in memory and writes only the
transitions (alive, failed, left, reaped), so a heartbeat never costs a Raft write.
"""

from __future__ import annotations

from typing import Any

ALIVE, FAILED, LEFT = "alive", "failed", "left"
# The integers /v1/agent/members uses (Serf's member status).
STATUS_CODES = {ALIVE: 1, LEFT: 3, FAILED: 4}
SERF_CHECK = "serfHealth"
SERF_OUTPUT = {ALIVE: "Agent alive and reachable", FAILED: "Agent not live or unreachable"}
_IDENTITY = ("ID", "Addr", "Port", "Role", "Build")


class MemberTable:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}  # node name -> {Name, ID, Addr, Port, Role, Build, Status, Since}

    def get(self, node: str) -> dict[str, Any] | None:
        return self.rows.get(node)

    def is_current(self, member: dict[str, Any]) -> bool:
        """Whether an alive member already has exactly this identity (so a heartbeat changes nothing)."""
        row = self.rows.get(member["Name"])
        return row is not None and row["Status"] == ALIVE and all(row.get(k) == member.get(k) for k in _IDENTITY)

    def set(self, member: dict[str, Any], status: str, since: float) -> None:
        self.rows[member["Name"]] = dict(member, Status=status, Since=since)

    def remove(self, node: str) -> dict[str, Any] | None:
        return self.rows.pop(node, None)

    def dump(self) -> list[dict[str, Any]]:
        return list(self.rows.values())

    def load(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {r["Name"]: r for r in rows}


def serf_check(node: str, status: str) -> dict[str, Any]:
    """The node-level check that mirrors membership, as Consul's serfHealth does."""
    return {"Node": node, "CheckID": SERF_CHECK, "Name": "Serf Health Status",
            "Status": "passing" if status == ALIVE else "critical", "Notes": "", "Output": SERF_OUTPUT[status],
            "ServiceID": "", "Type": "", "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {}}
