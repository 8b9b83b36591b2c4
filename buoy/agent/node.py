"""What the agent does for its own node: keeps its services and checks (LocalState), runs their checks,
and keeps the catalog in step (AntiEntropy). The HTTP endpoints under /v1/agent call these methods."""

from __future__ import annotations

import asyncio
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
from buoy.core.structs.catalog import check_id, check_service_id, service_id, service_port, status
from buoy.core.structs.definitions import (
    SIDECAR_SUFFIX,
    ServiceDef,
    check_kind,
    complete_sidecar,
    proxies,
    reap_after,
    ttl,
)
from buoy.core.structs.local import maintenance_check, maintenance_id, same_but_status
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
        cid, kind = check_id(check), check_kind(check)
        self._halt(cid)
        if kind == "ttl":
            self.ttl.arm(cid, ttl(check))
        elif kind == "alias" or kind in PROBED:
            runner = (AliasCheck(check, self.cfg.http_addr, self.cfg.node_name, self._checked) if kind == "alias"
                      else ProbeCheck(check, PROBED[kind], self._checked))
            self._runners[cid] = asyncio.get_running_loop().create_task(runner.run())
        self._watch_critical(check)

    def _halt(self, cid: str) -> None:
        self.ttl.disarm(cid)
        task = self._runners.pop(cid, None)
        if task is not None:
            task.cancel()
        self._forget_critical(cid)

    def _watch_critical(self, check: dict[str, Any]) -> None:
        """Consul's reaper: a service whose check has stayed critical for longer than the check's
        DeregisterCriticalServiceAfter is deregistered, checks and all. One timer per critical check,
        started when it turns critical and dropped when it leaves that state."""
        cid, sid = check_id(check), check_service_id(check)
        after = reap_after(check)
        if not (after and sid and status(check) == "critical"):
            self._forget_critical(cid)
        elif cid not in self._reapers:
            self._reapers[cid] = asyncio.get_running_loop().call_later(
                parse_duration(after), self._reap, cid, sid, after)

    def _forget_critical(self, cid: str) -> None:
        timer = self._reapers.pop(cid, None)
        if timer is not None:
            timer.cancel()

    def _reap(self, cid: str, sid: str, after: str) -> None:
        self._reapers.pop(cid, None)
        if sid in self.local.services:
            log.info("deregistering a service whose check stayed critical", service=sid, check=cid,
                     after=after)
            self.deregister_service(sid)

    # ---- services and checks -----------------------------------------------------------------------

    def register_service(self, svc: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        gone = [cid for cid, c in self.local.checks.items()
                if check_service_id(c) == service_id(svc) and cid not in {check_id(ch) for ch in checks}]
        self.local.add_service(svc, checks)
        for cid in gone:  # a re-registration replaces the service's checks, as Consul does
            self.deregister_check(cid)
        for check in checks:
            self._run(self.local.checks[check_id(check)])

    def register(self, svc: dict[str, Any], checks: list[dict[str, Any]], sidecar: ServiceDef | None) -> None:
        """A service definition and the sidecar it asks for (completed first, so a failure registers nothing)."""
        side = complete_sidecar(sidecar, self.local.services) if sidecar is not None else None
        self.register_service(svc, checks)
        if side is not None:
            self.register_service(*side)

    def deregister_service(self, sid: str) -> None:
        """Remove a service with its checks, and its sidecar with it (Consul removes the sidecars it made)."""
        checks = [cid for cid, c in self.local.checks.items() if check_service_id(c) == sid]
        side = self.local.services.get(sid + SIDECAR_SUFFIX)
        if not self.local.remove_service(sid):
            raise NotFound(f'Unknown service ID "{sid}". Ensure that the service ID is passed, '
                                 "not the service name.")
        for cid in checks:
            self._halt(cid)
        if side is not None and proxies(side, sid):
            self.deregister_service(service_id(side))

    def register_check(self, check: dict[str, Any]) -> None:
        self.local.add_check(check)
        self._run(self.local.checks[check_id(check)])

    def deregister_check(self, cid: str) -> None:
        if not self.local.remove_check(cid):
            raise NotFound(f'Unknown check ID "{cid}". Ensure that the check ID is passed, '
                                 "not the check name.")
        self._halt(cid)

    def report(self, cid: str, verdict: str, output: str) -> None:
        """A TTL check's report (pass/warn/fail/update): new status, and the countdown starts again."""
        check = self.local.checks.get(cid)
        if check is None:
            raise NotFound(f'Unknown check ID "{cid}". Ensure that the check ID is passed, '
                                 "not the check name.")
        if check_kind(check) != "ttl":
            raise Failed(f"Check {cid!r} is not a TTL check: its status comes from its probe")
        self.local.set_status(cid, verdict, output)
        self.ttl.arm(cid, ttl(check))
        self._watch_critical(self.local.checks[cid])

    def set_maintenance(self, target: str | None, enable: bool, reason: str) -> None:
        """Consul's maintenance mode: a check in state ``maintenance`` takes the service (or, without a
        service, the whole node) out of healthy results until it is disabled; it persists like any check."""
        if target is not None and target not in self.local.services:
            raise NotFound(f'Unknown service ID "{target}". Ensure that the service ID is passed, '
                                 "not the service name.")
        cid = maintenance_id(target)
        if not enable:
            if cid in self.local.checks:
                self.local.remove_check(cid)
            return
        self.local.add_check(maintenance_check(target, reason))

    def _checked(self, cid: str, verdict: str, output: str) -> None:
        """A runner's verdict (TTL lapse or probe result); ignored once the check is gone."""
        if cid in self.local.checks:
            self.local.set_status(cid, verdict, output)
            self._watch_critical(self.local.checks[cid])

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
                    services.append(complete_sidecar(sidecar, local.services, taken))
                except Error as e:
                    raise ConfigError(f"service {service_id(svc)!r}: {e.message}") from None
                taken.add(service_port(services[-1][0]))
        ids = {service_id(svc) for svc, _ in services}
        targets = ids | (local.services.keys() - local.config_services)
        owners: dict[str, str] = {}  # check ID -> its service in the files
        for cid, sid in [(check_id(c), service_id(svc)) for svc, cs in services for c in cs] + [
                (check_id(c), check_service_id(c)) for c in checks]:
            if sid and sid not in targets:
                raise ConfigError(f'check "{cid}": ServiceID "{sid}" does not exist')
            old = local.checks.get(cid)
            if owners.setdefault(cid, sid) != sid or (
                    old is not None and cid not in local.config_checks and check_service_id(old) != sid):
                raise ConfigError(f'check "{cid}": the check ID is already used for another service')

        def current(row: dict[str, Any]) -> bool:
            cid = check_id(row)
            return same_but_status(local.checks.get(cid) if cid in local.config_checks else None, row)

        for sid in sorted(local.config_services - ids):
            if sid in local.services:  # a sidecar is gone already if its service went first
                self.deregister_service(sid)
        for cid in sorted(local.config_checks):
            if owners.get(cid) != check_service_id(local.checks[cid]):  # gone from the files, or moved
                self.deregister_check(cid)
        for svc, svc_checks in services:
            sid = service_id(svc)
            if sid not in local.config_services or local.services[sid] != svc or not all(
                    current(c) for c in svc_checks):
                local.config_services.add(sid)
                local.config_checks.update(check_id(c) for c in svc_checks)
                self.register_service(svc, svc_checks)
        for check in checks:
            if not current(check):
                local.config_checks.add(check_id(check))
                self.register_check(check)
        # An API check on a config service that left the files while the agent was down (it was persisted).
        for cid in [cid for cid, c in local.checks.items()
                    if check_service_id(c) and check_service_id(c) not in local.services]:
            self.deregister_check(cid)
