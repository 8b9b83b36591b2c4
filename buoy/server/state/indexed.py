"""What tables with secondary indexes share: rows plus a table index, and snapshots that rebuild the
indexes from the rows (so a snapshot holds each row once)."""

from __future__ import annotations

from typing import Any


class IndexedTable:
    rows: dict[Any, dict[str, Any]]
    index: int

    def _index(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def dump(self) -> dict[str, Any]:
        return {"rows": list(self.rows.values()), "index": self.index}

    def load(self, data: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        for row in data.get("rows", []):
            self._index(row)
        self.index = data.get("index", 0)
