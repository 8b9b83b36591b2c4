"""The services and checks this agent owns: the agent's truth, which anti-entropy pushes to the catalog.

Registered through the API they persist in ``<data-dir>/agent/local.json`` (written atomically) and come
back after a restart, check status included; in ``-dev`` they live in memory only. A definition change is
written before the call returns; a status change only within ``STATUS_FLUSH`` seconds, batched: with a
thousand probes, writing the whole file on every status change kept the event loop busy full time.
Those defined in config files are not persisted: the files are their truth, read again at every start
and reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from buoy.core.errors import Invalid
from buoy.core.structs import local as structs
from buoy.core.structs.catalog import check_id, check_service_id, service_id
from buoy.files import replace_file

STATUS_FLUSH = 2.0


class LocalState:
    def __init__(self, data_dir: str | None, on_change: Callable[[], None]) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        # IDs of the services and checks the config files define (NodeAgent.apply_config marks them).
        self.config_services: set[str] = set()
        self.config_checks: set[str] = set()
        self._path = Path(data_dir, "agent", "local.json") if data_dir else None
        self._on_change = on_change
        self._flush: asyncio.TimerHandle | None = None

    def load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        self.services, self.checks = structs.restore(orjson.loads(self._path.read_bytes()), str(self._path))

    def _changed(self) -> None:
        # Whatever removed a service or check (API, reload, its service going) ends its config ownership.
        self.config_services.intersection_update(self.services)
        self.config_checks.intersection_update(self.checks)
        self.flush()
        self._on_change()

    def flush(self) -> None:
        """Write the file now (and drop any pending status write it covers)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._path is None:
            return
        replace_file(self._path, orjson.dumps(structs.persisted(
            (s for sid, s in self.services.items() if sid not in self.config_services),
            (c for cid, c in self.checks.items() if cid not in self.config_checks))))

    def add_service(self, svc: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        """Register or replace a service; a re-registration keeps the status of checks it still has."""
        for check in checks:
            old = self.checks.get(check_id(check))
            if old is not None and check_service_id(old) != service_id(svc):
                raise Invalid(f"Check ID {check_id(check)!r} belongs to another service")
        self.services[service_id(svc)] = svc
        for check in checks:
            self._put_check(check)
        self._changed()

    def remove_service(self, sid: str) -> bool:
        if self.services.pop(sid, None) is None:
            return False
        for cid in [cid for cid, c in self.checks.items() if check_service_id(c) == sid]:
            del self.checks[cid]
        self._changed()
        return True

    def add_check(self, check: dict[str, Any]) -> None:
        sid = check_service_id(check)
        if sid and sid not in self.services:
            raise Invalid(f"ServiceID {sid!r} does not exist")
        self._put_check(check)
        self._changed()

    def _put_check(self, check: dict[str, Any]) -> None:
        cid = check_id(check)
        self.checks[cid] = structs.keep_status(check, self.checks.get(cid))

    def remove_check(self, cid: str) -> bool:
        if self.checks.pop(cid, None) is None:
            return False
        self._changed()
        return True

    def set_status(self, cid: str, status: str, output: str) -> None:
        new = structs.reported(self.checks[cid], status, output)
        if new is None:
            return
        self.checks[cid] = new
        if self._path is not None and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(STATUS_FLUSH, self.flush)
        self._on_change()
