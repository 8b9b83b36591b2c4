"""The state machine every server replicates: the only reader of commands.

``apply_batch`` runs on the Raft thread, in log order, and is the only code that writes the tables. Each
entry is a command's wire form (``buoy.core.commands``), decoded here, and gets the next index from a
counter that lives in the replicated state, so every server assigns the same ``CreateIndex``/
``ModifyIndex``. Time comes from the command (``ts``, set by the proposer), never from the applying
server's clock, so lock-delays and tombstones are the same everywhere.

Readers on the asyncio loop take ``store.lock`` for the few microseconds a read needs; ``apply_batch``
holds it for one batch. After a batch the touched watch topics go to ``store.notify`` (which hops to the
loop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from buoy.core.commands import (
    CAConfigure,
    CAInit,
    CAPrune,
    CatalogDeregister,
    CatalogRegister,
    Command,
    IntentionDelete,
    IntentionSet,
    KVDelete,
    KVDeleteTree,
    KVReap,
    KVSet,
    MemberAlive,
    MemberFailed,
    MemberLeft,
    MemberReap,
    Noop,
    QueryDelete,
    QuerySet,
    ServerRegister,
    SessionCreate,
    SessionDestroy,
    SessionRenew,
    Txn,
    from_wire,
)
from buoy.core.errors import Error, Failed
from buoy.core.structs.member import ALIVE, FAILED, LEFT, serf_check
from buoy.server.state.store import StateStore, Topic
from buoy.server.state.undo import UndoLog

_NO_UNDO = UndoLog(enabled=False)


class TxnFailed(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("transaction rolled back")
        self.errors = errors


class FSM:
    """What the Raft node drives (``buoy.server.raft.fsm.StateMachine``): commands in, tables changed."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._touched: set[Topic] = set()

    def apply_batch(self, cmds: list[dict[str, Any]]) -> list[Any]:
        results: list[Any] = []
        touched: set[Topic] = set()
        with self.store.lock:
            for wire in cmds:
                self._touched = set()
                results.append(self._apply_one(wire))
                touched |= self._touched  # a refused command leaves an empty set behind
        if touched:
            self.store.notify(touched)
        return results

    def dump(self) -> dict[str, Any]:
        return self.store.dump()

    def load(self, data: dict[str, Any]) -> None:
        self.store.load(data)

    def _apply_one(self, wire: Mapping[str, Any]) -> Any:
        try:
            command = from_wire(wire)
        except Failed as e:  # an op or format of a newer release: refused, and it takes no index
            return e.with_traceback(None)
        kind = type(command)
        if kind is Noop:
            return None
        store = self.store
        store.index += 1
        # Only a transaction can fail after it has written; every other command validates first, so it
        # shares one log that records nothing.
        undo = UndoLog(enabled=True) if kind is Txn else _NO_UNDO
        try:
            return _HANDLERS[kind](self, command, store.index, undo)
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

    def _kv_set(self, c: KVSet, index: int, undo: UndoLog) -> bool:
        store = self.store
        ok = store.kv.set(
            c.key, c.value, c.flags, index, undo, cas=c.cas, acquire=c.acquire, release=c.release,
            session_exists=store.sessions.rows.__contains__, now=c.ts,
        )
        if ok:
            self._touched.add(("kv", c.key))
        return ok

    def _kv_delete(self, c: KVDelete, index: int, undo: UndoLog) -> bool:
        ok = self.store.kv.delete(c.key, index, undo, now=c.ts, cas=c.cas)
        if ok:
            self._touched.add(("kv", c.key))
        return ok

    def _kv_delete_tree(self, c: KVDeleteTree, index: int, undo: UndoLog) -> bool:
        for key in self.store.kv.delete_tree(c.prefix, index, undo, now=c.ts):
            self._touched.add(("kv", key))
        return True

    def _kv_reap(self, c: KVReap, index: int, undo: UndoLog) -> int:
        return self.store.kv.reap_tombstones(c.before)

    def _txn(self, c: Txn, index: int, undo: UndoLog) -> dict[str, Any]:
        kv, exists = self.store.kv, self.store.sessions.rows.__contains__
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for i, op in enumerate(c.ops):
            try:
                entries = kv.txn_op(op, index, undo, self._touched, now=c.ts, session_exists=exists)
                results.extend({"KV": r} for r in entries)
            except Error as e:
                errors.append({"OpIndex": i, "What": e.message})
        if errors:
            raise TxnFailed(errors)
        return {"results": results}

    # ---- catalog -----------------------------------------------------------------------------------

    def _catalog_register(self, c: CatalogRegister, index: int, undo: UndoLog) -> bool:
        self._register(c.reg, index, undo, c.ts)
        return True

    def _register(self, reg: dict[str, Any], index: int, undo: UndoLog, now: float) -> None:
        catalog, node = self.store.catalog, reg["Node"]
        # Refuse before writing anything: a check may only name a service the node has or gets now.
        services = set(catalog.services.get(node, {}))
        if reg.get("Service"):
            services.add(reg["Service"]["ID"])
        for check in reg.get("Checks") or ():
            if check.get("ServiceID") and check["ServiceID"] not in services:
                raise Failed(f"Unknown service ID {check['ServiceID']!r} for check {check['CheckID']!r}")
        catalog.ensure_node(reg, index, self._touched, skip_update=reg.get("SkipNodeUpdate", False))
        if reg.get("Service"):
            catalog.ensure_service(node, reg["Service"], index, self._touched)
        for check in reg.get("Checks") or ():
            old, row = catalog.ensure_check(dict(check, Node=node), index, self._touched)
            if row["Status"] == "critical" and (old is None or old["Status"] != "critical"):
                for sid in self.store.sessions.bound_to_check(node, row["CheckID"], row["ServiceID"]):
                    self._destroy_session(sid, index, undo, now)

    def _catalog_deregister(self, c: CatalogDeregister, index: int, undo: UndoLog) -> bool:
        catalog, sessions, node = self.store.catalog, self.store.sessions, c.node
        if c.service_id:
            for check_id in catalog.delete_service(node, c.service_id, index, self._touched):
                for sid in sessions.bound_to_check(node, check_id, c.service_id):
                    self._destroy_session(sid, index, undo, c.ts)
        elif c.check_id:
            catalog.delete_check(node, c.check_id, index, self._touched)
            for sid in sessions.bound_to_check(node, c.check_id, ""):
                self._destroy_session(sid, index, undo, c.ts)
        else:
            self._deregister_node(node, index, undo, c.ts)
        return True

    def _deregister_node(self, node: str, index: int, undo: UndoLog, now: float) -> None:
        self.store.catalog.delete_node(node, index, self._touched)
        for row in self.store.sessions.on_node(node):
            self._destroy_session(row["ID"], index, undo, now)

    # ---- sessions ----------------------------------------------------------------------------------

    def _session_create(self, c: SessionCreate, index: int, undo: UndoLog) -> dict[str, str]:
        store, row = self.store, c.session
        node = row["Node"]
        if node not in store.catalog.nodes:
            raise Failed(f"Failed session create: Missing node registration: {node}")
        checks = store.catalog.checks.get(node, {})
        wanted = list(row["NodeChecks"]) + [sc["ID"] for sc in row["ServiceChecks"] or ()]
        for check_id in wanted:
            check = checks.get(check_id)
            if check is None:
                raise Failed(f"Failed session create: Missing check '{check_id}' registration")
            if check["Status"] == "critical":
                raise Failed(f"Failed session create: Check '{check_id}' is in critical state")
        store.sessions.insert(row, index, undo)
        self._touched.update({("sessions",), ("session", row["ID"])})
        return {"ID": row["ID"]}

    def _session_destroy(self, c: SessionDestroy, index: int, undo: UndoLog) -> bool:
        self._destroy_session(c.id, index, undo, c.ts)
        return True

    def _session_renew(self, c: SessionRenew, index: int, undo: UndoLog) -> dict[str, Any] | None:
        row = self.store.sessions.get(c.id)
        if row is not None:
            # Not a data change: only the leader's in-memory TTL timer cares, so no index moves.
            self._touched.add(("renew", c.id))
        return row

    def _destroy_session(self, session_id: str, index: int, undo: UndoLog, now: float) -> None:
        store = self.store
        row = store.sessions.remove(session_id, index, undo)
        if row is None:
            return
        delay_until = now + row["LockDelay"] / 1e9
        for key in store.kv.unlock_session(session_id, row["Behavior"], delay_until, index, undo, now):
            self._touched.add(("kv", key))
        self._touched.update({("sessions",), ("session", session_id)})
        # A prepared query bound to a session lives only as long as the session, as in Consul.
        for query_id in store.queries.bound_to(session_id):
            store.queries.remove(query_id, index, undo)
            self._touched.add(("queries",))

    # ---- prepared queries --------------------------------------------------------------------------

    def _query_set(self, c: QuerySet, index: int, undo: UndoLog) -> bool:
        store = self.store
        store.queries.set(c.query, index, undo, update=c.update, session_exists=store.sessions.rows.__contains__)
        self._touched.add(("queries",))
        return True

    def _query_delete(self, c: QueryDelete, index: int, undo: UndoLog) -> bool:
        if self.store.queries.remove(c.id, index, undo) is None:
            raise Failed(f"Cannot modify non-existent prepared query: '{c.id}'")
        self._touched.add(("queries",))
        return True

    # ---- intentions --------------------------------------------------------------------------------

    def _intention_set(self, c: IntentionSet, index: int, undo: UndoLog) -> bool:
        table = self.store.intentions
        if c.mode == "create":
            table.create(c.intention, index, c.ts)
        elif c.mode == "update":
            table.update(c.intention, index, c.ts)
        else:
            table.upsert(c.intention, index)
        self._touched.add(("intentions",))
        return True

    def _intention_delete(self, c: IntentionDelete, index: int, undo: UndoLog) -> bool:
        table = self.store.intentions
        if c.id:
            table.delete(c.id, index)
        elif not table.delete_exact(c.source, c.destination, index):
            return True  # nothing to delete: Consul's by-name delete still answers true
        self._touched.add(("intentions",))
        return True

    # ---- servers and members -----------------------------------------------------------------------

    def _server_register(self, c: ServerRegister, index: int, undo: UndoLog) -> bool:
        self.store.servers[c.raft] = {"Node": c.node, "ID": c.id, "HTTP": c.http}
        self._touched.add(("servers",))
        return True

    def _member_alive(self, c: MemberAlive, index: int, undo: UndoLog) -> bool:
        """A node joined or came back: its member row, its catalog node and a passing serfHealth."""
        self.store.members.set(c.member, ALIVE, c.ts)
        self._register(dict(c.reg, Service=None, Checks=[serf_check(c.reg["Node"], ALIVE)]), index, undo, c.ts)
        self._touched.add(("members",))
        return True

    def _member_failed(self, c: MemberFailed, index: int, undo: UndoLog) -> bool:
        """A node stopped heartbeating: serfHealth goes critical (its services drop out of healthy answers
        and sessions bound to it are invalidated); it stays in the catalog until reaped."""
        store = self.store
        row = store.members.get(c.node)
        if row is None or row["Status"] != ALIVE:
            return False
        store.members.set(row, FAILED, c.ts)
        if c.node in store.catalog.nodes:
            self._register({**store.catalog.nodes[c.node], "SkipNodeUpdate": True,
                            "Checks": [serf_check(c.node, FAILED)]}, index, undo, c.ts)
        self._touched.add(("members",))
        return True

    def _member_left(self, c: MemberLeft, index: int, undo: UndoLog) -> bool:
        """A graceful leave or a force-leave: the node leaves the catalog at once; ``prune`` forgets it."""
        members = self.store.members
        row = members.get(c.node)
        if row is None:
            raise Failed(f"agent: No node found with name '{c.node}'")
        if c.prune:
            members.remove(c.node)
        else:
            members.set(row, LEFT, c.ts)
        self._deregister_node(c.node, index, undo, c.ts)
        self._touched.add(("members",))
        return True

    def _member_reap(self, c: MemberReap, index: int, undo: UndoLog) -> bool:
        """A node failed or left for longer than reconnect_timeout: forget it entirely."""
        members = self.store.members
        row = members.get(c.node)
        if row is None or row["Status"] == ALIVE:
            return False
        members.remove(c.node)
        self._deregister_node(c.node, index, undo, c.ts)
        self._touched.add(("members",))
        return True

    # ---- the mesh CA -------------------------------------------------------------------------------

    def _ca_init(self, c: CAInit, index: int, undo: UndoLog) -> bool:
        self._touched.add(("ca",))
        return self.store.ca.initialize(c.cluster_id, c.config, c.root, c.key, index)

    def _ca_configure(self, c: CAConfigure, index: int, undo: UndoLog) -> bool:
        self._touched.add(("ca",))
        return self.store.ca.configure(c.expect, c.config, c.root, c.key, index, c.ts)

    def _ca_prune(self, c: CAPrune, index: int, undo: UndoLog) -> bool:
        self._touched.add(("ca",))
        return self.store.ca.prune(c.ids, index)


# Keyed by the command's type, so each handler gets the record it declares (hence Any for the mapping).
_HANDLERS: dict[type[Command], Callable[[FSM, Any, int, UndoLog], Any]] = {
    KVSet: FSM._kv_set,
    KVDelete: FSM._kv_delete,
    KVDeleteTree: FSM._kv_delete_tree,
    KVReap: FSM._kv_reap,
    Txn: FSM._txn,
    CatalogRegister: FSM._catalog_register,
    CatalogDeregister: FSM._catalog_deregister,
    SessionCreate: FSM._session_create,
    SessionDestroy: FSM._session_destroy,
    SessionRenew: FSM._session_renew,
    QuerySet: FSM._query_set,
    QueryDelete: FSM._query_delete,
    IntentionSet: FSM._intention_set,
    IntentionDelete: FSM._intention_delete,
    ServerRegister: FSM._server_register,
    MemberAlive: FSM._member_alive,
    MemberFailed: FSM._member_failed,
    MemberLeft: FSM._member_left,
    MemberReap: FSM._member_reap,
    CAInit: FSM._ca_init,
    CAConfigure: FSM._ca_configure,
    CAPrune: FSM._ca_prune,
}
