"""What the agent does for its own node: keeps its services and checks (LocalState), runs their checks,
and keeps the catalog in step (AntiEntropy). The HTTP endpoints under /v1/agent call these methods."""

from __future__ import annotations

import asyncio
from typing import Any

from buoy.agent.checks import http, tcp
from buoy.agent.checks.probe import ProbeCheck
from buoy.agent.checks.ttl import TTLChecks
from buoy.agent.local import LocalState
from buoy.agent.sync import AntiEntropy, Catalog
from buoy.config import Config
from buoy.http.errors import HTTPError


class NodeAgent:
    def __init__(self, cfg: Config, node_id: str, catalog: Catalog) -> None:
        self.local = LocalState(None if cfg.dev else cfg.data_dir, on_change=self._changed)
        self.ttl = TTLChecks(self._checked)
        self.sync = AntiEntropy(cfg, node_id, self.local, catalog)
        self._task: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}

    def _changed(self) -> None:
        self.sync.trigger()

    async def start(self) -> None:
        self.local.load()
        for check in self.local.checks.values():
            self._run(check)
        self._task = asyncio.get_running_loop().create_task(self.sync.run())
        self.sync.trigger()

    async def stop(self) -> None:
        self.ttl.stop()
        for cid in list(self._probes):
            self._halt(cid)
        await http.close()
        if self._task is not None:
            self._task.cancel()

    def _run(self, check: dict[str, Any]) -> None:
        """Start (or restart) whatever keeps this check's status current."""
        cid = check["CheckID"]
        self._halt(cid)
        if check["Type"] == "ttl":
            self.ttl.arm(cid, check["Definition"]["TTL"])
        elif check["Type"] in ("http", "tcp"):
            probe = http.probe if check["Type"] == "http" else tcp.probe
            runner = ProbeCheck(check, probe, self._checked)
            self._probes[cid] = asyncio.get_running_loop().create_task(runner.run())

    def _halt(self, check_id: str) -> None:
        self.ttl.disarm(check_id)
        task = self._probes.pop(check_id, None)
        if task is not None:
            task.cancel()

    # ---- services and checks -----------------------------------------------------------------------

    def register_service(self, svc: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        gone = [cid for cid, c in self.local.checks.items()
                if c["ServiceID"] == svc["ID"] and cid not in {ch["CheckID"] for ch in checks}]
        self.local.add_service(svc, checks)
        for cid in gone:  # a re-registration replaces the service's checks, as Consul does
            self.deregister_check(cid)
        for check in checks:
            self._run(self.local.checks[check["CheckID"]])

    def deregister_service(self, service_id: str) -> None:
        checks = [cid for cid, c in self.local.checks.items() if c["ServiceID"] == service_id]
        if not self.local.remove_service(service_id):
            raise HTTPError(404, f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                                 "not the service name.")
        for cid in checks:
            self._halt(cid)

    def register_check(self, check: dict[str, Any]) -> None:
        self.local.add_check(check)
        self._run(self.local.checks[check["CheckID"]])

    def deregister_check(self, check_id: str) -> None:
        if not self.local.remove_check(check_id):
            raise HTTPError(404, f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                                 "not the check name.")
        self._halt(check_id)

    def report(self, check_id: str, status: str, output: str) -> None:
        """A TTL check's report (pass/warn/fail/update): new status, and the countdown starts again."""
        check = self.local.checks.get(check_id)
        if check is None:
            raise HTTPError(404, f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                                 "not the check name.")
        if check["Type"] != "ttl":
            raise HTTPError(500, f"Check {check_id!r} is not a TTL check: its status comes from its probe")
        self.local.set_status(check_id, status, output)
        self.ttl.arm(check_id, check["Definition"]["TTL"])

    def set_maintenance(self, service_id: str | None, enable: bool, reason: str) -> None:
        """Consul's maintenance mode: a check in state ``maintenance`` takes the service (or, without a
        service, the whole node) out of healthy results until it is disabled; it persists like any check."""
        if service_id is not None and service_id not in self.local.services:
            raise HTTPError(404, f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                                 "not the service name.")
        cid = f"_service_maintenance:{service_id}" if service_id is not None else "_node_maintenance"
        if not enable:
            if cid in self.local.checks:
                self.local.remove_check(cid)
            return
        what = "service" if service_id is not None else "node"
        self.local.add_check({
            "CheckID": cid, "Name": f"{what.capitalize()} Maintenance Mode", "Status": "maintenance",
            "Notes": reason or f"Maintenance mode is enabled for this {what}, but no reason was provided. "
                               "This is a default message.",
            "Output": "", "ServiceID": service_id or "", "Type": "maintenance", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {},
        })

    def _checked(self, check_id: str, status: str, output: str) -> None:
        """A runner's verdict (TTL lapse or probe result); ignored once the check is gone."""
        if check_id in self.local.checks:
            self.local.set_status(check_id, status, output)
