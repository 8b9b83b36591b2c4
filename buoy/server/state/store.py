"""The replicated state: every table, the index counter, and their snapshot form.

Only ``buoy.server.fsm`` writes the tables, on the Raft thread, holding ``lock`` for one batch; readers on
the asyncio loop take ``lock`` for the few microseconds a read needs. After a batch the touched watch
topics go to ``notify`` (which hops to the loop).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from buoy.server.state.ca import CATable
from buoy.server.state.catalog import CatalogTable
from buoy.server.state.intentions import IntentionTable
from buoy.server.state.kv import KVTable
from buoy.server.state.members import MemberTable
from buoy.server.state.queries import QueryTable
from buoy.server.state.sessions import SessionTable

FORMAT_VERSION = 1
Topic = tuple[str, ...]


class StateStore:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.kv = KVTable()
        self.catalog = CatalogTable()
        self.sessions = SessionTable()
        self.members = MemberTable()
        self.queries = QueryTable()
        self.intentions = IntentionTable()
        self.ca = CATable()
        self.servers: dict[str, dict[str, Any]] = {}  # raft address -> {Node, ID, HTTP}
        self.index = 0
        self.notify: Callable[[set[Topic]], None] = lambda _topics: None

    # ---- snapshots ---------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        with self.lock:
            return {
                "format": FORMAT_VERSION,
                "index": self.index,
                "kv": self.kv.dump(),
                "catalog": self.catalog.dump(),
                "sessions": self.sessions.dump(),
                "servers": self.servers,
                "members": self.members.dump(),
                "queries": self.queries.dump(),
                "intentions": self.intentions.dump(),
                "ca": self.ca.dump(),
            }

    def load(self, data: dict[str, Any]) -> None:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported state format {data.get('format')!r}")
        with self.lock:
            self.index = data["index"]
            self.kv.load(data["kv"])
            self.catalog.load(data["catalog"])
            self.sessions.load(data["sessions"])
            self.servers = dict(data.get("servers", {}))
            self.members.load(data.get("members", []))
            self.queries.load(data.get("queries", {}))
            self.intentions.load(data.get("intentions", {}))
            self.ca.load(data.get("ca", {}))
        self.notify({("reset",)})
