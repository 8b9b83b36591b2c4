"""What the agent does for its own node: keeps its services and checks (LocalState), runs their checks,
and keeps the catalog in step (AntiEntropy). The HTTP endpoints under /v1/agent call these methods."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import structlog

from buoy.agent.checks import grpc, h2ping, http, script, tcp, udp
from buoy.agent.checks.alias import AliasCheck
from buoy.agent.checks.probe import Kind, ProbeCheck
from buoy.agent.checks.ttl import TTLChecks
from buoy.agent.local import LocalState
from buoy.agent.sync import AntiEntropy, Catalog
from buoy.agent.versioned import Versioned
from buoy.config import Config, ConfigError
from buoy.core.errors import Error, Failed, NotFound
from buoy.core.structs.definitions import SIDECAR_PORTS, SIDECAR_SUFFIX, ServiceDef, sidecar_checks
from buoy.durations import parse_duration

log = structlog.get_logger("buoy.node")
PROBED: dict[str, Kind] = {"http": http.KIND, "tcp": tcp.KIND, "udp": udp.KIND, "grpc": grpc.KIND,
                           "h2ping": h2ping.KIND, "script": script.KIND}


class NodeAgent:
    def __init__(self, cfg: Config, node_id: str, catalog: Catalog) -> None:
        self.cfg = cfg
        self.local = LocalState(None if cfg.dev else cfg.data_dir, on_change=self._changed)
        self.ttl = TTLChecks(self._checked)
        self.sync = AntiEntropy(cfg, node_id, self.local, catalog)
        self._task: asyncio.Task[None] | None = None
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._reapers: dict[str, asyncio.TimerHandle] = {}
        self.changes = Versioned()  # moves on every local change; what ?hash blocking reads wait on
        self.closed = False

    def _changed(self) -> None:
        self.sync.trigger()
        self.changes.bump()

    async def start(self) -> None:
        self.local.load()
        for check in self.local.checks.values():
            self._run(check)
        self._task = asyncio.get_running_loop().create_task(self.sync.run())
        self.sync.trigger()

    async def stop(self) -> None:
        self.closed = True
        self.changes.wake()
        self.ttl.stop()
        runners = list(self._runners.values())
        for cid in [*self._runners, *self._reapers]:
            self._halt(cid)
        # Wait for the runners to wind down, so that no script check's process outlives the agent.
        await asyncio.gather(*runners, return_exceptions=True)
        self.local.flush()  # the last status changes, still waiting for their batched write
        await http.close()
        if self._task is not None:
            self._task.cancel()

    def _run(self, check: dict[str, Any]) -> None:
        """Start (or restart) whatever keeps this check's status current."""
        cid, kind = check["CheckID"], check["Type"]
        self._halt(cid)
        if kind == "ttl":
            self.ttl.arm(cid, check["Definition"]["TTL"])
        elif kind == "alias" or kind in PROBED:
            runner = (AliasCheck(check, self.cfg.http_addr, self.cfg.node_name, self._checked) if kind == "alias"
                      else ProbeCheck(check, PROBED[kind], self._checked))
            self._runners[cid] = asyncio.get_running_loop().create_task(runner.run())
        self._watch_critical(check)

    def _halt(self, check_id: str) -> None:
        self.ttl.disarm(check_id)
        task = self._runners.pop(check_id, None)
        if task is not None:
            task.cancel()
        self._forget_critical(check_id)

    def _watch_critical(self, check: dict[str, Any]) -> None:
        """Consul's reaper: a service whose check has stayed critical for longer than the check's
        DeregisterCriticalServiceAfter is deregistered, checks and all. One timer per critical check,
        started when it turns critical and dropped when it leaves that state."""
        cid, sid = check["CheckID"], check["ServiceID"]
        after = check["Definition"].get("DeregisterCriticalServiceAfter")
        if not (after and sid and check["Status"] == "critical"):
            self._forget_critical(cid)
        elif cid not in self._reapers:
            self._reapers[cid] = asyncio.get_running_loop().call_later(
                parse_duration(after), self._reap, cid, sid, after)

    def _forget_critical(self, check_id: str) -> None:
        timer = self._reapers.pop(check_id, None)
        if timer is not None:
            timer.cancel()

    def _reap(self, check_id: str, service_id: str, after: str) -> None:
        self._reapers.pop(check_id, None)
        if service_id in self.local.services:
            log.info("deregistering a service whose check stayed critical", service=service_id, check=check_id,
                     after=after)
            self.deregister_service(service_id)

    # ---- services and checks -----------------------------------------------------------------------

    def register_service(self, svc: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        gone = [cid for cid, c in self.local.checks.items()
                if c["ServiceID"] == svc["ID"] and cid not in {ch["CheckID"] for ch in checks}]
        self.local.add_service(svc, checks)
        for cid in gone:  # a re-registration replaces the service's checks, as Consul does
            self.deregister_check(cid)
        for check in checks:
            self._run(self.local.checks[check["CheckID"]])

    def register(self, svc: dict[str, Any], checks: list[dict[str, Any]], sidecar: ServiceDef | None) -> None:
        """A service definition and the sidecar it asks for (completed first, so a failure registers nothing)."""
        side = self.complete_sidecar(sidecar) if sidecar is not None else None
        self.register_service(svc, checks)
        if side is not None:
            self.register_service(*side)

    def complete_sidecar(self, sidecar: ServiceDef, taken: Collection[int] = ()) -> ServiceDef:
        """Give a sidecar without a port the first free one of the range (keeping the one it already has, as
        Consul does, so a re-registration or reload does not move it), and Consul's default checks when it
        defines none. ``taken``: ports given to other sidecars not registered yet."""
        svc, checks = sidecar
        if not svc["Port"]:
            old = self.local.services.get(svc["ID"])
            used = {s["Port"] for s in self.local.services.values()} | set(taken)
            port = old["Port"] if old is not None and old["Port"] in SIDECAR_PORTS else next(
                (p for p in SIDECAR_PORTS if p not in used), None)
            if port is None:
                raise Failed("no port provided for sidecar_service and none left in the configured range "
                                     f"[{SIDECAR_PORTS.start}, {SIDECAR_PORTS.stop - 1}]")
            svc = dict(svc, Port=port)
        return svc, checks or sidecar_checks(svc)

    def deregister_service(self, service_id: str) -> None:
        """Remove a service with its checks, and its sidecar with it (Consul removes the sidecars it made)."""
        checks = [cid for cid, c in self.local.checks.items() if c["ServiceID"] == service_id]
        side = self.local.services.get(service_id + SIDECAR_SUFFIX)
        if not self.local.remove_service(service_id):
            raise NotFound(f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                                 "not the service name.")
        for cid in checks:
            self._halt(cid)
        if side is not None and side.get("Proxy", {}).get("DestinationServiceID") == service_id:
            self.deregister_service(side["ID"])

    def register_check(self, check: dict[str, Any]) -> None:
        self.local.add_check(check)
        self._run(self.local.checks[check["CheckID"]])

    def deregister_check(self, check_id: str) -> None:
        if not self.local.remove_check(check_id):
            raise NotFound(f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                                 "not the check name.")
        self._halt(check_id)

    def report(self, check_id: str, status: str, output: str) -> None:
        """A TTL check's report (pass/warn/fail/update): new status, and the countdown starts again."""
        check = self.local.checks.get(check_id)
        if check is None:
            raise NotFound(f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                                 "not the check name.")
        if check["Type"] != "ttl":
            raise Failed(f"Check {check_id!r} is not a TTL check: its status comes from its probe")
        self.local.set_status(check_id, status, output)
        self.ttl.arm(check_id, check["Definition"]["TTL"])
        self._watch_critical(self.local.checks[check_id])

    def set_maintenance(self, service_id: str | None, enable: bool, reason: str) -> None:
        """Consul's maintenance mode: a check in state ``maintenance`` takes the service (or, without a
        service, the whole node) out of healthy results until it is disabled; it persists like any check."""
        if service_id is not None and service_id not in self.local.services:
            raise NotFound(f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
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
            self._watch_critical(self.local.checks[check_id])

    # ---- config files --------------------------------------------------------------------------------

    def apply_config(self, definitions: list[tuple[dict[str, Any], list[dict[str, Any]], ServiceDef | None]],
                     checks: list[dict[str, Any]]) -> None:
        """Make the config files' services and checks current, at start and on every reload: register what
        they define, remove the config-defined ones they no longer define, leave API registrations alone.
        What is registered as defined already keeps its checks running. A set the node cannot take raises
        ConfigError before anything changes."""
        local = self.local
        services: list[ServiceDef] = []
        taken: set[int] = set()
        for svc, svc_checks, sidecar in definitions:
            services.append((svc, svc_checks))
            if sidecar is not None:
                try:
                    services.append(self.complete_sidecar(sidecar, taken))
                except Error as e:
                    raise ConfigError(f"service {svc['ID']!r}: {e.message}") from None
                taken.add(services[-1][0]["Port"])
        ids = {svc["ID"] for svc, _ in services}
        targets = ids | (local.services.keys() - local.config_services)
        owners: dict[str, str] = {}  # check ID -> its service in the files
        for cid, sid in [(c["CheckID"], svc["ID"]) for svc, cs in services for c in cs] + [
                (c["CheckID"], c["ServiceID"]) for c in checks]:
            if sid and sid not in targets:
                raise ConfigError(f'check "{cid}": ServiceID "{sid}" does not exist')
            old = local.checks.get(cid)
            if owners.setdefault(cid, sid) != sid or (
                    old is not None and cid not in local.config_checks and old["ServiceID"] != sid):
                raise ConfigError(f'check "{cid}": the check ID is already used for another service')

        def current(row: dict[str, Any]) -> bool:
            old = local.checks.get(row["CheckID"]) if row["CheckID"] in local.config_checks else None
            return old is not None and dict(old, Status=row["Status"], Output=row["Output"]) == row

        for sid in sorted(local.config_services - ids):
            if sid in local.services:  # a sidecar is gone already if its service went first
                self.deregister_service(sid)
        for cid in sorted(local.config_checks):
            if owners.get(cid) != local.checks[cid]["ServiceID"]:  # gone from the files, or moved
                self.deregister_check(cid)
        for svc, svc_checks in services:
            if svc["ID"] not in local.config_services or local.services[svc["ID"]] != svc or not all(
                    current(c) for c in svc_checks):
                local.config_services.add(svc["ID"])
                local.config_checks.update(c["CheckID"] for c in svc_checks)
                self.register_service(svc, svc_checks)
        for check in checks:
            if not current(check):
                local.config_checks.add(check["CheckID"])
                self.register_check(check)
        # An API check on a config service that left the files while the agent was down (it was persisted).
        for cid in [cid for cid, c in local.checks.items() if c["ServiceID"] and c["ServiceID"] not in local.services]:
            self.deregister_check(cid)
