"""The KV table: entries in a sorted index for prefix scans, tombstones so deletes advance watched prefixes,
and the lock bookkeeping (holder sessions, lock-delay) that sessions rely on.

Entries are stored in Consul's ``KVPair`` shape with ``Value`` as bytes; the HTTP layer base64-encodes it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, MutableSet
from typing import Any

from sortedcontainers import SortedDict

from buoy.core.errors import Error, Failed, Invalid
from buoy.server.state.undo import UndoLog


class KVTable:
    def __init__(self) -> None:
        self.entries: SortedDict = SortedDict()
        self.tombstones: SortedDict = SortedDict()  # key -> [delete index, unix time]
        self.lock_delay: dict[str, float] = {}  # key -> unix time before which acquire fails
        self.held: dict[str, set[str]] = {}  # session id -> keys it holds
        self.index = 0

    # ---- reads -------------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def scan(self, prefix: str) -> Iterator[dict[str, Any]]:
        for key in self.entries.irange(minimum=prefix):
            if not key.startswith(prefix):
                break
            yield self.entries[key]

    def keys(self, prefix: str, separator: str) -> list[str]:
        out: list[str] = []
        for key in self.entries.irange(minimum=prefix):
            if not key.startswith(prefix):
                break
            if separator:
                cut = key.find(separator, len(prefix))
                if cut >= 0:
                    key = key[: cut + len(separator)]
            if not out or out[-1] != key:
                out.append(key)
        return out

    def prefix_index(self, prefix: str) -> int:
        """Consul's index for a prefix: the newest change under it, deletes included, else the table's."""
        best = 0
        for entry in self.scan(prefix):
            best = max(best, entry["ModifyIndex"])
        for key in self.tombstones.irange(minimum=prefix):
            if not key.startswith(prefix):
                break
            best = max(best, self.tombstones[key][0])
        return best or self.index

    # ---- writes (called only from buoy.server.fsm; each returns the keys it touched) ----------------

    def _put(self, key: str, entry: dict[str, Any] | None, index: int, undo: UndoLog) -> None:
        old = self.entries.get(key)
        old_tomb = self.tombstones.get(key)
        old_session = old.get("Session") if old else None
        old_index = self.index

        def restore() -> None:
            self.index = old_index
            if old is None:
                self.entries.pop(key, None)
            else:
                self.entries[key] = old
            if old_tomb is None:
                self.tombstones.pop(key, None)
            else:
                self.tombstones[key] = old_tomb
            new_session = entry.get("Session") if entry else None
            if new_session and new_session != old_session:
                self.held.get(new_session, set()).discard(key)
            if old_session:
                self.held.setdefault(old_session, set()).add(key)

        undo.append(restore)
        if old_session and (entry is None or entry.get("Session") != old_session):
            holders = self.held.get(old_session)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self.held[old_session]
        if entry is None:
            del self.entries[key]
        else:
            self.entries[key] = entry
            self.tombstones.pop(key, None)
            session = entry.get("Session")
            if session:
                self.held.setdefault(session, set()).add(key)
        self.index = index

    def _tombstone(self, key: str, index: int, now: float) -> None:
        self.tombstones[key] = [index, now]

    def set(
        self,
        key: str,
        value: bytes,
        flags: int,
        index: int,
        undo: UndoLog,
        *,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
        session_exists: Callable[[str], bool] = lambda _s: False,
        now: float = 0.0,
    ) -> bool:
        old = self.entries.get(key)
        if cas is not None:
            if cas == 0 and old is not None:
                return False
            if cas != 0 and (old is None or old["ModifyIndex"] != cas):
                return False
        entry: dict[str, Any] = {
            "LockIndex": old["LockIndex"] if old else 0,
            "Key": key,
            "Flags": flags,
            "Value": value,
            "CreateIndex": old["CreateIndex"] if old else index,
            "ModifyIndex": index,
        }
        holder = old.get("Session") if old else None
        if acquire is not None:
            if not session_exists(acquire):
                raise Failed(f'invalid session "{acquire}"')
            if holder and holder != acquire:
                return False
            if holder != acquire:
                if self.lock_delay.get(key, 0.0) > now:
                    return False
                entry["LockIndex"] += 1
            entry["Session"] = acquire
        elif release is not None:
            if not session_exists(release):
                raise Failed(f'invalid session "{release}"')
            if holder != release:
                return False
        elif holder:
            entry["Session"] = holder
        self._put(key, entry, index, undo)
        return True

    def delete(self, key: str, index: int, undo: UndoLog, *, now: float, cas: int | None = None) -> bool:
        old = self.entries.get(key)
        if cas is not None and (old is None or old["ModifyIndex"] != cas):
            return False
        if old is not None:
            self._put(key, None, index, undo)
            self._tombstone(key, index, now)
        return True

    def delete_tree(self, prefix: str, index: int, undo: UndoLog, *, now: float) -> list[str]:
        doomed = [e["Key"] for e in self.scan(prefix)]
        for key in doomed:
            self._put(key, None, index, undo)
            self._tombstone(key, index, now)
        return doomed

    def unlock_session(self, session: str, behavior: str, delay_until: float, index: int, undo: UndoLog,
                       now: float) -> list[str]:
        """Release or delete every key a dying session holds, and start their lock-delay."""
        keys = sorted(self.held.get(session, ()))
        for key in keys:
            if delay_until > now:
                previous = self.lock_delay.get(key)
                self.lock_delay[key] = delay_until
                undo.append(functools.partial(self._restore_delay, key, previous))
            if behavior == "delete":
                self._put(key, None, index, undo)
                self._tombstone(key, index, now)
            else:
                entry = dict(self.entries[key])
                entry.pop("Session", None)
                entry["ModifyIndex"] = index
                self._put(key, entry, index, undo)
        return keys

    def txn_op(self, op: dict[str, Any], index: int, undo: UndoLog, touched: MutableSet[tuple[str, ...]], *,
               now: float, session_exists: Callable[[str], bool]) -> list[dict[str, Any]]:
        """One KV operation of a transaction (Consul's kvsTxn): its result entries, or Invalid in the API's
        words; the caller rolls the whole transaction back on the first refusal."""
        verb, key = op["Verb"], op.get("Key", "")
        entry = self.get(key)

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
                ok = self.set(key, op.get("Value", b""), op.get("Flags", 0), index, undo,
                              session_exists=session_exists, now=now, **kwargs)
            except Error as e:
                raise Invalid(f'failed to {verb} key "{key}": {e.message}') from None
            if not ok:
                raise Invalid({
                    "cas": f'failed to set key "{key}", index is stale',
                    "lock": f'failed to lock key "{key}", lock is already held',
                    "unlock": f'failed to unlock key "{key}", lock isn\'t held, or is held by another session',
                }.get(verb, f'failed to set key "{key}"'))
            touched.add(("kv", key))
            return bare(self.get(key))
        if verb == "get":
            if entry is None:
                raise Invalid(f'key "{key}" doesn\'t exist')
            return [entry]
        if verb == "get-or-empty":
            return [entry] if entry else []
        if verb == "get-tree":
            return list(self.scan(key))
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
            self.delete(key, index, undo, now=now)
            touched.add(("kv", key))
            return []
        if verb == "delete-tree":
            for k in self.delete_tree(key, index, undo, now=now):
                touched.add(("kv", k))
            return []
        if verb == "delete-cas":
            if not self.delete(key, index, undo, now=now, cas=op.get("Index", 0)):
                raise Invalid(f'failed to delete key "{key}", index is stale')
            touched.add(("kv", key))
            return []
        raise Invalid(f"unknown KV verb {verb!r}")

    def _restore_delay(self, key: str, previous: float | None) -> None:
        if previous is None:
            self.lock_delay.pop(key, None)
        else:
            self.lock_delay[key] = previous

    def reap_tombstones(self, before: float) -> int:
        doomed = [k for k, (_i, t) in self.tombstones.items() if t < before]
        for key in doomed:
            del self.tombstones[key]
        return len(doomed)

    # ---- snapshots ---------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "entries": list(self.entries.values()),
            "tombstones": [[k, v[0], v[1]] for k, v in self.tombstones.items()],
            "lock_delay": self.lock_delay,
            "index": self.index,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        for entry in data.get("entries", []):
            self.entries[entry["Key"]] = entry
            if entry.get("Session"):
                self.held.setdefault(entry["Session"], set()).add(entry["Key"])
        for key, idx, ts in data.get("tombstones", []):
            self.tombstones[key] = [idx, ts]
        self.lock_delay = dict(data.get("lock_delay", {}))
        self.index = data.get("index", 0)
