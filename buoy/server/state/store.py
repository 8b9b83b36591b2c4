"""The state machine every server replicates.

``apply_batch`` runs on the Raft thread, in log order, and is the only code that writes the tables. Each
command is plain data (``{"op": "kv.set", "ts": ..., ...}``) and gets the next index from a counter that
lives in the replicated state, so every server assigns the same ``CreateIndex``/``ModifyIndex``. Time comes
from the command (``ts``, set by the proposer), never from the applying server's clock, so lock-delays and
tombstones are the same everywhere.

Readers on the asyncio loop take ``lock`` for the few microseconds a read needs; ``apply_batch`` holds it
for one batch. After a batch the touched watch topics go to ``notify`` (which hops to the loop).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from buoy.core.errors import Error, Failed, Invalid
from buoy.core.structs.member import ALIVE, FAILED, LEFT, serf_check
from buoy.server.state.ca import CATable
from buoy.server.state.catalog import CatalogTable
from buoy.server.state.intentions import IntentionTable
from buoy.server.state.kv import KVTable
from buoy.server.state.members import MemberTable
from buoy.server.state.queries import QueryTable
from buoy.server.state.sessions import SessionTable
from buoy.server.state.undo import UndoLog

FORMAT_VERSION = 1
Topic = tuple[str, ...]


class TxnFailed(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("transaction rolled back")
        self.errors = errors


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
        self._touched: set[Topic] = set()

    # ---- the replicated entry point ----------------------------------------------------------------

    def apply_batch(self, cmds: list[dict[str, Any]]) -> list[Any]:
        results: list[Any] = []
        touched: set[Topic] = set()
        with self.lock:
            for cmd in cmds:
                self._touched = set()
                results.append(self._apply_one(cmd))
                touched |= self._touched  # a refused command leaves an empty set behind
        if touched:
            self.notify(touched)
        return results

    def _apply_one(self, cmd: dict[str, Any]) -> Any:
        op = cmd.get("op")
        if op == "noop":
            return None
        handler = self._ops.get(op)  # type: ignore[arg-type]
        if handler is None:
            return Failed(f"unknown command {op!r}")
        self.index += 1
        # Only a transaction can fail after it has written; every other command validates first.
        undo = UndoLog(enabled=op == "txn")
        try:
            return handler(self, cmd, self.index, undo)
        except Error as e:
            # Handed back as a value: the proposer raises it, and only it (a follower applies and moves on).
            undo.rollback()
            self._touched = set()
            return e.with_traceback(None)
        except TxnFailed as e:
            undo.rollback()
            self._touched = set()
            return {"errors": e.errors}

    # ---- KV ----------------------------------------------------------------------------------------

    def _kv_set(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        key = cmd["key"]
        ok = self.kv.set(
            key, cmd["value"], cmd.get("flags", 0), index, undo,
            cas=cmd.get("cas"), acquire=cmd.get("acquire"), release=cmd.get("release"),
            session_exists=self.sessions.rows.__contains__, now=cmd["ts"],
        )
        if ok:
            self._touched.add(("kv", key))
        return ok

    def _kv_delete(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        ok = self.kv.delete(cmd["key"], index, undo, now=cmd["ts"], cas=cmd.get("cas"))
        if ok:
            self._touched.add(("kv", cmd["key"]))
        return ok

    def _kv_delete_tree(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        for key in self.kv.delete_tree(cmd["prefix"], index, undo, now=cmd["ts"]):
            self._touched.add(("kv", key))
        return True

    def _kv_reap(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> int:
        return self.kv.reap_tombstones(cmd["before"])

    # ---- transactions ------------------------------------------------------------------------------

    def _txn(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for i, op in enumerate(cmd["ops"]):
            try:
                results.extend({"KV": r} for r in self._txn_kv(op, index, undo, cmd["ts"]))
            except Error as e:
                errors.append({"OpIndex": i, "What": e.message})
        if errors:
            raise TxnFailed(errors)
        return {"results": results}

    def _txn_kv(self, op: dict[str, Any], index: int, undo: UndoLog, now: float) -> list[dict[str, Any]]:
        verb, key = op["Verb"], op.get("Key", "")
        entry = self.kv.get(key)

        def bare(e: dict[str, Any] | None) -> list[dict[str, Any]]:
            return [dict(e, Value=None)] if e else []

        if verb in ("set", "cas", "lock", "unlock"):
            kwargs: dict[str, Any] = {}
            if verb == "cas":
                kwargs["cas"] = op.get("Index", 0)
            elif verb == "lock":
                kwargs["acquire"] = op.get("Session", "")
            elif verb == "unlock":
                kwargs["release"] = op.get("Session", "")
            try:
                ok = self.kv.set(key, op.get("Value", b""), op.get("Flags", 0), index, undo,
                                 session_exists=self.sessions.rows.__contains__, now=now, **kwargs)
            except Error as e:
                raise Invalid(f'failed to {verb} key "{key}": {e.message}') from None
            if not ok:
                raise Invalid({
                    "cas": f'failed to set key "{key}", index is stale',
                    "lock": f'failed to lock key "{key}", lock is already held',
                    "unlock": f'failed to unlock key "{key}", lock isn\'t held, or is held by another session',
                }.get(verb, f'failed to set key "{key}"'))
            self._touched.add(("kv", key))
            return bare(self.kv.get(key))
        if verb == "get":
            if entry is None:
                raise Invalid(f'key "{key}" doesn\'t exist')
            return [entry]
        if verb == "get-or-empty":
            return [entry] if entry else []
        if verb == "get-tree":
            return list(self.kv.scan(key))
        if verb == "check-index":
            if entry is None or entry["ModifyIndex"] != op.get("Index", 0):
                have = entry["ModifyIndex"] if entry else 0
                raise Invalid(f'current modify index {have} != {op.get("Index", 0)}')
            return bare(entry)
        if verb == "check-session":
            held = entry.get("Session", "") if entry else ""
            if entry is None or held != op.get("Session", ""):
                raise Invalid(f'current session "{held}" != "{op.get("Session", "")}"')
            return bare(entry)
        if verb == "check-not-exists":
            if entry is not None:
                raise Invalid(f'key "{key}" exists')
            return []
        if verb == "delete":
            self.kv.delete(key, index, undo, now=now)
            self._touched.add(("kv", key))
            return []
        if verb == "delete-tree":
            for k in self.kv.delete_tree(key, index, undo, now=now):
                self._touched.add(("kv", k))
            return []
        if verb == "delete-cas":
            if not self.kv.delete(key, index, undo, now=now, cas=op.get("Index", 0)):
                raise Invalid(f'failed to delete key "{key}", index is stale')
            self._touched.add(("kv", key))
            return []
        raise Invalid(f"unknown KV verb {verb!r}")

    # ---- catalog -----------------------------------------------------------------------------------

    def _catalog_register(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        reg = cmd["reg"]
        node = reg["Node"]
        # Refuse before writing anything: a check may only name a service the node has or gets now.
        services = set(self.catalog.services.get(node, {}))
        if reg.get("Service"):
            services.add(reg["Service"]["ID"])
        for check in reg.get("Checks") or ():
            if check.get("ServiceID") and check["ServiceID"] not in services:
                raise Failed(f"Unknown service ID {check['ServiceID']!r} for check {check['CheckID']!r}")
        self.catalog.ensure_node(reg, index, undo, self._touched, skip_update=reg.get("SkipNodeUpdate", False))
        if reg.get("Service"):
            self.catalog.ensure_service(node, reg["Service"], index, undo, self._touched)
        for check in reg.get("Checks") or ():
            old, row = self.catalog.ensure_check(dict(check, Node=node), index, undo, self._touched)
            if row["Status"] == "critical" and (old is None or old["Status"] != "critical"):
                for sid in self.sessions.bound_to_check(node, row["CheckID"], row["ServiceID"]):
                    self._destroy_session(sid, index, undo, cmd["ts"])
        return True

    def _catalog_deregister(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        node = cmd["node"]
        if cmd.get("service_id"):
            for check_id in self.catalog.delete_service(node, cmd["service_id"], index, undo, self._touched):
                for sid in self.sessions.bound_to_check(node, check_id, cmd["service_id"]):
                    self._destroy_session(sid, index, undo, cmd["ts"])
        elif cmd.get("check_id"):
            self.catalog.delete_check(node, cmd["check_id"], index, undo, self._touched)
            for sid in self.sessions.bound_to_check(node, cmd["check_id"], ""):
                self._destroy_session(sid, index, undo, cmd["ts"])
        else:
            self.catalog.delete_node(node, index, undo, self._touched)
            for row in self.sessions.on_node(node):
                self._destroy_session(row["ID"], index, undo, cmd["ts"])
        return True

    # ---- sessions ----------------------------------------------------------------------------------

    def _session_create(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> dict[str, str]:
        row = cmd["session"]
        node = row["Node"]
        if node not in self.catalog.nodes:
            raise Failed(f"Failed session create: Missing node registration: {node}")
        checks = self.catalog.checks.get(node, {})
        wanted = list(row["NodeChecks"]) + [c["ID"] for c in row["ServiceChecks"] or ()]
        for check_id in wanted:
            check = checks.get(check_id)
            if check is None:
                raise Failed(f"Failed session create: Missing check '{check_id}' registration")
            if check["Status"] == "critical":
                raise Failed(f"Failed session create: Check '{check_id}' is in critical state")
        self.sessions.insert(row, index, undo)
        self._touched.update({("sessions",), ("session", row["ID"])})
        return {"ID": row["ID"]}

    def _session_destroy(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        self._destroy_session(cmd["id"], index, undo, cmd["ts"])
        return True

    def _session_renew(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> dict[str, Any] | None:
        row = self.sessions.get(cmd["id"])
        if row is not None:
            # Not a data change: only the leader's in-memory TTL timer cares, so no index moves.
            self._touched.add(("renew", cmd["id"]))
        return row

    def _destroy_session(self, session_id: str, index: int, undo: UndoLog, now: float) -> None:
        row = self.sessions.remove(session_id, index, undo)
        if row is None:
            return
        delay_until = now + row["LockDelay"] / 1e9
        for key in self.kv.unlock_session(session_id, row["Behavior"], delay_until, index, undo, now):
            self._touched.add(("kv", key))
        self._touched.update({("sessions",), ("session", session_id)})
        # A prepared query bound to a session lives only as long as the session, as in Consul.
        for query_id in self.queries.bound_to(session_id):
            self.queries.remove(query_id, index, undo)
            self._touched.add(("queries",))

    # ---- prepared queries --------------------------------------------------------------------------

    def _query_set(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        self.queries.set(cmd["query"], index, undo, update=cmd["update"],
                         session_exists=self.sessions.rows.__contains__)
        self._touched.add(("queries",))
        return True

    def _query_delete(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        if self.queries.remove(cmd["id"], index, undo) is None:
            raise Failed(f"Cannot modify non-existent prepared query: '{cmd['id']}'")
        self._touched.add(("queries",))
        return True

    # ---- intentions --------------------------------------------------------------------------------

    def _intention_set(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        """A legacy create or update by ID, or an upsert by name; the proposer made the ID and ``ts``."""
        row, mode = cmd["intention"], cmd["mode"]
        if mode == "create":
            self.intentions.create(row, index, cmd["ts"])
        elif mode == "update":
            self.intentions.update(row, index, cmd["ts"])
        else:
            self.intentions.upsert(row, index)
        self._touched.add(("intentions",))
        return True

    def _intention_delete(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        if cmd.get("id"):
            self.intentions.delete(cmd["id"], index)
        elif not self.intentions.delete_exact(cmd["source"], cmd["destination"], index):
            return True  # nothing to delete: Consul's by-name delete still answers true
        self._touched.add(("intentions",))
        return True

    # ---- servers -----------------------------------------------------------------------------------

    def _server_register(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        self.servers[cmd["raft"]] = {"Node": cmd["node"], "ID": cmd["id"], "HTTP": cmd["http"]}
        self._touched.add(("servers",))
        return True

    # ---- members -----------------------------------------------------------------------------------

    def _member_alive(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        """A node joined or came back: its member row, its catalog node and a passing serfHealth."""
        member, reg = cmd["member"], cmd["reg"]
        self.members.set(member, ALIVE, cmd["ts"])
        self._catalog_register({"reg": dict(reg, Service=None, Checks=[serf_check(reg["Node"], ALIVE)]),
                                "ts": cmd["ts"]}, index, undo)
        self._touched.add(("members",))
        return True

    def _member_failed(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        """A node stopped heartbeating: serfHealth goes critical (its services drop out of healthy answers
        and sessions bound to it are invalidated); it stays in the catalog until reaped."""
        row = self.members.get(cmd["node"])
        if row is None or row["Status"] != ALIVE:
            return False
        self.members.set(row, FAILED, cmd["ts"])
        if cmd["node"] in self.catalog.nodes:
            self._catalog_register({"reg": {**self.catalog.nodes[cmd["node"]], "SkipNodeUpdate": True,
                                            "Checks": [serf_check(cmd["node"], FAILED)]}, "ts": cmd["ts"]},
                                   index, undo)
        self._touched.add(("members",))
        return True

    def _member_left(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        """A graceful leave or a force-leave: the node leaves the catalog at once; ``prune`` forgets it."""
        row = self.members.get(cmd["node"])
        if row is None:
            raise Failed(f"agent: No node found with name '{cmd['node']}'")
        if cmd.get("prune"):
            self.members.remove(cmd["node"])
        else:
            self.members.set(row, LEFT, cmd["ts"])
        self._catalog_deregister({"node": cmd["node"], "ts": cmd["ts"]}, index, undo)
        self._touched.add(("members",))
        return True

    def _member_reap(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        """A node failed or left for longer than reconnect_timeout: forget it entirely."""
        row = self.members.get(cmd["node"])
        if row is None or row["Status"] == ALIVE:
            return False
        self.members.remove(cmd["node"])
        self._catalog_deregister({"node": cmd["node"], "ts": cmd["ts"]}, index, undo)
        self._touched.add(("members",))
        return True

    # ---- the mesh CA -------------------------------------------------------------------------------

    def _ca_init(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        self._touched.add(("ca",))
        return self.ca.initialize(cmd, index)

    def _ca_configure(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        self._touched.add(("ca",))
        return self.ca.configure(cmd, index)

    def _ca_prune(self, cmd: dict[str, Any], index: int, undo: UndoLog) -> bool:
        self._touched.add(("ca",))
        return self.ca.prune(cmd["ids"], index)

    _ops: dict[str, Callable[[StateStore, dict[str, Any], int, UndoLog], Any]] = {
        "kv.set": _kv_set,
        "kv.delete": _kv_delete,
        "kv.delete_tree": _kv_delete_tree,
        "kv.reap": _kv_reap,
        "txn": _txn,
        "catalog.register": _catalog_register,
        "catalog.deregister": _catalog_deregister,
        "session.create": _session_create,
        "session.destroy": _session_destroy,
        "session.renew": _session_renew,
        "query.set": _query_set,
        "query.delete": _query_delete,
        "intention.set": _intention_set,
        "intention.delete": _intention_delete,
        "server.register": _server_register,
        "member.alive": _member_alive,
        "member.failed": _member_failed,
        "member.left": _member_left,
        "member.reap": _member_reap,
        "ca.init": _ca_init,
        "ca.configure": _ca_configure,
        "ca.prune": _ca_prune,
    }

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
