"""The intentions table: Consul's ``Intention`` rows, one per (source, destination) pair, with indexes by
source and by destination so a match reads only the rows that can apply.

Rows written through the legacy API carry an ``ID``, ``CreatedAt`` and ``UpdatedAt``; rows written by name
(``/v1/connect/intentions/exact``) carry none, as in Consul, where they live in the destination's
``service-intentions`` config entry. Consul refuses legacy writes to a destination once it holds rows
written by name; so does this table. Namespaces are always ``default`` (Consul's CE).

Intention writes are never part of a ``/v1/txn``, so the table keeps no undo steps.
"""

from __future__ import annotations

from buoy.core.errors import Failed
from buoy.core.spiffe import DEFAULT_NS, WILDCARD
from buoy.core.structs.intention import Intention, evaluation_order, precedence
from buoy.server.state.indexed import IndexedTable

Pair = tuple[str, str]  # (SourceName, DestinationName)


class IntentionTable(IndexedTable):
    def __init__(self) -> None:
        self.rows: dict[Pair, Intention] = {}
        self.by_id: dict[str, Pair] = {}
        self.by_source: dict[str, set[Pair]] = {}
        self.by_destination: dict[str, set[Pair]] = {}
        self.index = 0

    # ---- reads -------------------------------------------------------------------------------------

    def all(self) -> list[Intention]:
        return sorted(self.rows.values(), key=evaluation_order)

    def get(self, intention_id: str) -> Intention | None:
        pair = self.by_id.get(intention_id)
        return self.rows[pair] if pair else None

    def exact(self, source: str, destination: str) -> Intention | None:
        return self.rows.get((source, destination))

    def match(self, by: str, name: str) -> list[Intention]:
        """The rows that apply to ``name`` as a source or a destination, in evaluation order: its own and the
        wildcard's. Asking for ``*`` gives the wildcard rows only, as in Consul."""
        index = self.by_source if by == "source" else self.by_destination
        pairs = set(index.get(WILDCARD, ()))
        if name != WILDCARD:
            pairs |= index.get(name, set())
        return sorted((self.rows[p] for p in pairs), key=evaluation_order)

    def has_destination(self, destination: str) -> bool:
        return bool(self.by_destination.get(destination))

    def position(self, source: str, destination: str) -> int:
        """Where a row for this pair sits among its destination's rows in Consul's service-intentions entry
        (``Sources[i]`` in its error messages): by precedence, then in the order the rows were written."""
        mine = precedence(source, destination)
        old = self.rows.get((source, destination))
        here = old["CreateIndex"] if old else float("inf")
        return sum(1 for p in self.by_destination.get(destination, ()) if p != (source, destination)
                   and (self.rows[p]["Precedence"], -self.rows[p]["CreateIndex"]) > (mine, -here))

    def require(self, intention_id: str, verb: str) -> Intention:
        """The row with this ID, or Consul's refusal to ``verb`` ("modify", "delete") a missing one."""
        row = self.get(intention_id)
        if row is None:
            raise Failed(f"Cannot {verb} non-existent intention: '{intention_id}'")
        return row

    def updatable(self, intention_id: str, destination: str) -> Intention:
        """The row a legacy update by ID replaces; Consul refuses a missing one and a new destination before it
        looks at the rest of the update."""
        old = self.require(intention_id, "modify")
        if old["DestinationName"] != destination:
            raise Failed("Cannot modify Destination partition/namespace/name for an intention once it exists.")
        return old

    # ---- writes ------------------------------------------------------------------------------------

    def create(self, row: Intention, index: int, now: float) -> None:
        """A legacy create: a new ID, and a pair no row holds yet."""
        source, destination = row["SourceName"], row["DestinationName"]
        self._legacy_allowed(destination)
        if row["ID"] in self.by_id:
            raise Failed(f"Intention ID {row['ID']!r} is already in use")
        self._refuse_duplicate(source, destination)
        self._put(dict(row, CreatedAt=now, UpdatedAt=now, CreateIndex=index), index)

    def update(self, row: Intention, index: int, now: float) -> None:
        """A legacy update by ID: the destination stays, the source may change to a pair nobody holds."""
        old = self.updatable(row["ID"], row["DestinationName"])
        self._legacy_allowed(old["DestinationName"])
        if old["SourceName"] != row["SourceName"]:
            self._refuse_duplicate(row["SourceName"], row["DestinationName"])
        self._drop(old)
        self._put(dict(row, CreatedAt=old["CreatedAt"], UpdatedAt=now, CreateIndex=old["CreateIndex"]), index)

    def upsert(self, row: Intention, index: int) -> None:
        """A write by name: replaces the pair's row whatever wrote it (a legacy row loses its ID and times)."""
        old = self.rows.get((row["SourceName"], row["DestinationName"]))
        if old is not None:
            self._drop(old)
        self._put(dict(row, ID="", CreatedAt=None, UpdatedAt=None,
                       CreateIndex=old["CreateIndex"] if old else index), index)

    def delete(self, intention_id: str, index: int) -> None:
        row = self.require(intention_id, "delete")
        self._legacy_allowed(row["DestinationName"])
        self._drop(row)
        self.index = index

    def delete_exact(self, source: str, destination: str, index: int) -> bool:
        """Remove the pair's row; deleting a pair nobody holds is not an error (Consul's by-name delete)."""
        row = self.rows.get((source, destination))
        if row is None:
            return False
        self._drop(row)
        self.index = index
        return True

    def _legacy_allowed(self, destination: str) -> None:
        if any(not self.rows[p]["ID"] for p in self.by_destination.get(destination, ())):
            raise Failed(f'cannot use legacy intention API to edit intentions with a destination of "{destination}" '
                         "after editing them via a service-intentions config entry")

    def _refuse_duplicate(self, source: str, destination: str) -> None:
        if (source, destination) in self.rows:
            # Consul finds the duplicate when it appends the new source to the destination's entry: the new
            # one sorts after every row of the same precedence.
            mine = precedence(source, destination)
            i = sum(1 for p in self.by_destination[destination] if self.rows[p]["Precedence"] >= mine)
            raise Failed(f'Sources[{i}] defines "{source}" more than once')

    def _put(self, row: Intention, index: int) -> None:
        row = dict(row, SourceNS=DEFAULT_NS, DestinationNS=DEFAULT_NS, SourceType=row["SourceType"] or "consul",
                   Precedence=precedence(row["SourceName"], row["DestinationName"]), ModifyIndex=index)
        self._index(row)
        self.index = index

    def _index(self, row: Intention) -> None:
        pair = (row["SourceName"], row["DestinationName"])
        self.rows[pair] = row
        if row["ID"]:
            self.by_id[row["ID"]] = pair
        self.by_source.setdefault(pair[0], set()).add(pair)
        self.by_destination.setdefault(pair[1], set()).add(pair)

    def _drop(self, row: Intention) -> None:
        pair = (row["SourceName"], row["DestinationName"])
        del self.rows[pair]
        self.by_id.pop(row["ID"], None)
        for index, name in ((self.by_source, pair[0]), (self.by_destination, pair[1])):
            index[name].discard(pair)
            if not index[name]:
                del index[name]
