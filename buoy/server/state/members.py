"""The members table: every agent the servers know (servers and clients), its address, role and status.

Liveness itself is not replicated: the leader keeps heartbeat deadlines in memory and writes only the
transitions (alive, failed, left, reaped), so a heartbeat never costs a Raft write.
"""

from __future__ import annotations

from typing import Any

from buoy.core.structs.member import ALIVE, IDENTITY


class MemberTable:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}  # node name -> {Name, ID, Addr, Port, Role, Build, Status, Since}

    def get(self, node: str) -> dict[str, Any] | None:
        return self.rows.get(node)

    def all_by_name(self) -> dict[str, dict[str, Any]]:
        return dict(self.rows)

    def is_current(self, member: dict[str, Any]) -> bool:
        """Whether an alive member already has exactly this identity (so a heartbeat changes nothing)."""
        row = self.rows.get(member["Name"])
        return row is not None and row["Status"] == ALIVE and all(row.get(k) == member.get(k) for k in IDENTITY)

    def set(self, member: dict[str, Any], status: str, since: float) -> None:
        self.rows[member["Name"]] = dict(member, Status=status, Since=since)

    def remove(self, node: str) -> dict[str, Any] | None:
        return self.rows.pop(node, None)

    def dump(self) -> list[dict[str, Any]]:
        return list(self.rows.values())

    def load(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {r["Name"]: r for r in rows}
