"""The prepared-queries table: Consul's ``PreparedQuery`` rows (``buoy.core.structs.query``), indexed by name,
by template prefix and by session.

Names match case-insensitively and must be unique, as in Consul's state store; a name may not alias another
query's ID, and at most one template may have the empty name (the catch-all).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from buoy.core.errors import Failed
from buoy.core.structs.query import QueryError, is_template, render
from buoy.server.state.indexed import IndexedTable
from buoy.server.state.undo import UndoLog

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class QueryTable(IndexedTable):
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.by_name: dict[str, str] = {}  # lower-cased name -> ID, for every named query
        self.templates: dict[str, str] = {}  # lower-cased name -> ID, for templates (the empty name too)
        self.by_session: dict[str, set[str]] = {}
        self.index = 0

    # ---- reads -------------------------------------------------------------------------------------

    def get(self, query_id: str) -> dict[str, Any] | None:
        return self.rows.get(query_id)

    def all(self) -> list[dict[str, Any]]:
        return [self.rows[qid] for qid in sorted(self.rows)]

    def bound_to(self, session_id: str) -> list[str]:
        return sorted(self.by_session.get(session_id, ()))

    def resolve(self, id_or_name: str) -> dict[str, Any] | None:
        """The query ``id_or_name`` runs, rendered if it is a template: Consul looks for an ID first, then an
        exact name, then the template whose name is the longest prefix of the one asked for."""
        row = self.rows.get(id_or_name)
        if row is not None:
            if is_template(row):
                raise QueryError("prepared query templates can only be resolved up by name, not by ID")
            return row
        key = id_or_name.lower()
        qid = self.by_name.get(key)
        if qid is None:
            qid = next((self.templates[key[:n]] for n in range(len(key), -1, -1) if key[:n] in self.templates), None)
        if qid is None:
            return None
        row = self.rows[qid]
        return render(row, id_or_name) if is_template(row) else row

    # ---- writes ------------------------------------------------------------------------------------

    def set(self, row: dict[str, Any], index: int, undo: UndoLog, update: bool,
            session_exists: Callable[[str], bool]) -> None:
        """Create or replace a query; refused before anything changes if it would break an invariant."""
        qid, name = row["ID"], row["Name"].lower()
        old = self.rows.get(qid)
        if update and old is None:
            raise Failed(f"Cannot modify non-existent prepared query: '{qid}'")
        if name:
            other = self.by_name.get(name)
            if other is not None and other != qid:
                raise Failed(f"raft apply failed: name '{row['Name']}' aliases an existing query name")
        elif is_template(row) and self.templates.get("") not in (None, qid):
            raise Failed("raft apply failed: a query template with an empty name already exists")
        # Lookups try IDs before names, so a name that is another query's ID could hijack it.
        if _UUID.match(name) and name in self.rows:
            raise Failed(f"raft apply failed: name '{row['Name']}' aliases an existing query ID")
        if row["Session"] and not session_exists(row["Session"]):
            raise Failed(f'raft apply failed: invalid session "{row["Session"]}"')
        new = dict(row, CreateIndex=old["CreateIndex"] if old else index, ModifyIndex=index)
        old_index = self.index
        if old is not None:
            self._unindex(old)
        self._index(new)
        self.index = index

        def restore() -> None:
            self._unindex(new)
            if old is not None:
                self._index(old)
            self.index = old_index

        undo.append(restore)

    def remove(self, query_id: str, index: int, undo: UndoLog) -> dict[str, Any] | None:
        row = self.rows.get(query_id)
        if row is None:
            return None
        old_index = self.index
        self._unindex(row)
        self.index = index

        def restore() -> None:
            self._index(row)
            self.index = old_index

        undo.append(restore)
        return row

    def _index(self, row: dict[str, Any]) -> None:
        qid = row["ID"]
        self.rows[qid] = row
        if row["Name"]:
            self.by_name[row["Name"].lower()] = qid
        if is_template(row):
            self.templates[row["Name"].lower()] = qid
        if row["Session"]:
            self.by_session.setdefault(row["Session"], set()).add(qid)

    def _unindex(self, row: dict[str, Any]) -> None:
        del self.rows[row["ID"]]
        self.by_name.pop(row["Name"].lower(), None)
        if is_template(row):
            self.templates.pop(row["Name"].lower(), None)
        bound = self.by_session.get(row["Session"])
        if bound is not None:
            bound.discard(row["ID"])
            if not bound:
                del self.by_session[row["Session"]]
