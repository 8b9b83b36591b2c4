"""The services and checks this agent owns: the agent's truth, which anti-entropy pushes to the catalog.

Registered through the API they persist in ``<data-dir>/agent/local.json`` (written atomically) and come
back after a restart, check status included; in ``-dev`` they live in memory only. Those defined in config
files are not persisted: the files are their truth, read again at every start and reload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buoy.http.errors import HTTPError

FORMAT_VERSION = 1


class LocalState:
    def __init__(self, data_dir: str | None, on_change: Callable[[], None]) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        # IDs of the services and checks the config files define (NodeAgent.apply_config marks them).
        self.config_services: set[str] = set()
        self.config_checks: set[str] = set()
        self._path = Path(data_dir, "agent", "local.json") if data_dir else None
        self._on_change = on_change

    def load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        data = json.loads(self._path.read_text())
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self._path}: unsupported format {data.get('version')!r}")
        self.services = {s["ID"]: s for s in data["services"]}
        self.checks = {c["CheckID"]: c for c in data["checks"]}

    def _changed(self) -> None:
        # Whatever removed a service or check (API, reload, its service going) ends its config ownership.
        self.config_services.intersection_update(self.services)
        self.config_checks.intersection_update(self.checks)
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                json.dump({"version": FORMAT_VERSION,
                           "services": [s for sid, s in self.services.items() if sid not in self.config_services],
                           "checks": [c for cid, c in self.checks.items() if cid not in self.config_checks]}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        self._on_change()

    def add_service(self, svc: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        """Register or replace a service; a re-registration keeps the status of checks it still has."""
        for check in checks:
            old = self.checks.get(check["CheckID"])
            if old is not None and old["ServiceID"] != svc["ID"]:
                raise HTTPError(400, f"Check ID {check['CheckID']!r} belongs to another service")
        self.services[svc["ID"]] = svc
        for check in checks:
            self._put_check(check)
        self._changed()

    def remove_service(self, service_id: str) -> bool:
        if self.services.pop(service_id, None) is None:
            return False
        for cid in [cid for cid, c in self.checks.items() if c["ServiceID"] == service_id]:
            del self.checks[cid]
        self._changed()
        return True

    def add_check(self, check: dict[str, Any]) -> None:
        if check["ServiceID"] and check["ServiceID"] not in self.services:
            raise HTTPError(400, f"ServiceID {check['ServiceID']!r} does not exist")
        self._put_check(check)
        self._changed()

    def _put_check(self, check: dict[str, Any]) -> None:
        old = self.checks.get(check["CheckID"])
        if old is not None and old["Definition"] == check["Definition"]:
            # Same check registered again: keep what it has reported so far.
            check = dict(check, Status=old["Status"], Output=old["Output"])
        self.checks[check["CheckID"]] = check

    def remove_check(self, check_id: str) -> bool:
        if self.checks.pop(check_id, None) is None:
            return False
        self._changed()
        return True

    def set_status(self, check_id: str, status: str, output: str) -> None:
        check = self.checks[check_id]
        if check["Status"] == status and check["Output"] == output:
            return
        self.checks[check_id] = dict(check, Status=status, Output=output)
        self._changed()
