"""The prepared-queries table: Consul's ``PreparedQuery`` rows, indexed by name, by template prefix and by
session, and the ``name_prefix_match`` templates that turn one stored query into the query a name asks for.

Names match case-insensitively and must be unique, as in Consul's state store; a name may not alias another
query's ID, and at most one template may have the empty name (the catch-all).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from buoy.core.errors import Failed
from buoy.server.state.indexed import IndexedTable
from buoy.server.state.undo import UndoLog

TEMPLATE_TYPE = "name_prefix_match"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_EXPRESSION = re.compile(r"\s*(?:(name\.full|name\.prefix|name\.suffix|agent\.segment)|match\(\s*(\d+)\s*\))\s*$")
_MAPS = (".NodeMeta", ".ServiceMeta")  # walked as maps: values are interpolated, keys are not


class QueryError(Exception):
    """A template that does not compile or render, or a template asked for by ID; the text is Consul's."""


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


# ---- templates -------------------------------------------------------------------------------------


def is_template(query: dict[str, Any]) -> bool:
    return bool(query["Template"]["Type"])


def compile_template(query: dict[str, Any]) -> None:
    """Refuse a template that could not render, as Consul's compile step does: an unknown type, a bad
    regular expression, or a ``${...}`` it cannot evaluate (checked by rendering the template's own name)."""
    if query["Template"]["Type"] != TEMPLATE_TYPE:
        raise QueryError(f"Bad Template.Type '{query['Template']['Type']}'")
    render(query, query["Name"])


def render(query: dict[str, Any], name: str) -> dict[str, Any]:
    """The template ``query`` filled in for ``name``: every string in its Service interpolated."""
    template = query["Template"]
    groups: list[str] = []
    if template["Regexp"]:
        try:
            found = re.search(template["Regexp"], name)
        except re.error as e:
            raise QueryError(f"Bad Regexp: {e}") from None
        if found:
            groups = [g or "" for g in (found.group(0), *found.groups())]
    prefix = query["Name"]
    variables = {
        "name.full": name,
        "name.prefix": prefix,
        # Consul trims the prefix case-sensitively even though the lookup that chose the template is not.
        "name.suffix": name[len(prefix):] if name.startswith(prefix) else name,
        "agent.segment": "",  # network segments are an Enterprise feature
    }

    def interpolate(path: str, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            expr = _EXPRESSION.match(m.group(1))
            if expr is None:
                raise QueryError(f"Bad evaluation for '{text}' in Service{path}: "
                                 f"unknown variable accessed: {m.group(1).strip()}")
            if expr.group(1):
                return variables[expr.group(1)]
            n = int(expr.group(2))
            return groups[n] if n < len(groups) else ""  # Consul's match() never fails: "" when out of range

        if "${" in _INTERPOLATION.sub("", text):
            raise QueryError(f"Bad format '{text}' in Service{path}: unterminated interpolation")
        return _INTERPOLATION.sub(one, text)

    service = _walk(query["Service"], "", interpolate)
    if template["RemoveEmptyTags"]:
        service["Tags"] = [t for t in service["Tags"] or () if t]
    return dict(query, Service=service)


def _walk(value: Any, path: str, fn: Callable[[str, str], str]) -> Any:
    """A copy of ``value`` with ``fn`` applied to every string in it, each named by its path."""
    if isinstance(value, str):
        return fn(path, value)
    if isinstance(value, list):
        return [_walk(v, f"{path}[{i}]", fn) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _walk(v, f"{path}[{k}]" if path in _MAPS else f"{path}.{k}", fn) for k, v in value.items()}
    return value
