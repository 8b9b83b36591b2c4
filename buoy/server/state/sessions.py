"""The sessions table: Consul's ``Session`` rows plus an index by node, so node and check failures find
the sessions bound to them without a scan."""

from __future__ import annotations

from typing import Any

from buoy.core.structs import session
from buoy.server.state.indexed import IndexedTable
from buoy.server.state.undo import UndoLog


class SessionTable(IndexedTable):
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.by_node: dict[str, set[str]] = {}
        self.index = 0

    def get(self, session_id: str) -> dict[str, Any] | None:
        return self.rows.get(session_id)

    def on_node(self, node: str) -> list[dict[str, Any]]:
        return [self.rows[s] for s in sorted(self.by_node.get(node, ()))]

    def all(self) -> list[dict[str, Any]]:
        return sorted(self.rows.values(), key=lambda r: r["CreateIndex"])

    def bound_to_check(self, node: str, check_id: str, service_id: str) -> list[str]:
        """Sessions that a critical check on ``node`` invalidates."""
        del service_id  # service checks are matched by check ID, as Consul does
        return sorted(sid for sid in self.by_node.get(node, ()) if session.bound_to(self.rows[sid], check_id))

    def insert(self, row: dict[str, Any], index: int, undo: UndoLog) -> None:
        old_index = self.index
        row = dict(row, CreateIndex=index, ModifyIndex=index)
        self.rows[row["ID"]] = row
        self.by_node.setdefault(row["Node"], set()).add(row["ID"])
        self.index = index

        def restore() -> None:
            self.rows.pop(row["ID"], None)
            self.by_node.get(row["Node"], set()).discard(row["ID"])
            self.index = old_index

        undo.append(restore)

    def remove(self, session_id: str, index: int, undo: UndoLog) -> dict[str, Any] | None:
        row = self.rows.pop(session_id, None)
        if row is None:
            return None
        old_index = self.index
        nodes = self.by_node.get(row["Node"])
        if nodes is not None:
            nodes.discard(session_id)
            if not nodes:
                del self.by_node[row["Node"]]
        self.index = index

        def restore() -> None:
            self.rows[session_id] = row
            self.by_node.setdefault(row["Node"], set()).add(session_id)
            self.index = old_index

        undo.append(restore)
        return row

    def _index(self, row: dict[str, Any]) -> None:
        self.rows[row["ID"]] = row
        self.by_node.setdefault(row["Node"], set()).add(row["ID"])
