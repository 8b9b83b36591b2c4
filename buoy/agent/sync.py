"""Anti-entropy: the agent's services and checks are the truth for its node in the catalog.

A local change is pushed at once; a full comparison runs every ``ae_interval`` (60 s, scaled up in
clusters of more than 128 nodes) plus up to half of it again as jitter, and repairs both ways: it
re-registers what the catalog lost and deregisters what the agent no longer has, on this node only,
leaving the server's own ``consul`` service and ``serfHealth`` check alone. A check whose only change is
its output is pushed at most every ``OUTPUT_UPDATE_INTERVAL`` (Consul's check_update_interval), so output
that changes on every run does not cost a Raft write each time.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any, Protocol

import structlog

from buoy.api.client import ClientError
from buoy.config import Config
from buoy.core.commands import CatalogDeregister, CatalogRegister, Command
from buoy.core.errors import Error
from buoy.core.structs import catalog as structs
from buoy.core.structs.session import SERF_HEALTH

log = structlog.get_logger("buoy.sync")
OUTPUT_UPDATE_INTERVAL = 300.0
RETRY_AFTER = 1.0
SCALE_THRESHOLD = 128
SYNC_CONCURRENCY = 32  # writes in flight during one sync
SERVER_OWNED_SERVICES = frozenset({"consul"})
SERVER_OWNED_CHECKS = frozenset({SERF_HEALTH})


class Catalog(Protocol):
    """Where the agent's node lives: the local state store on a server agent, signed calls to the
    servers on a client agent (buoy.agent.servers.RemoteCatalog)."""

    async def node_view(self, node: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]: ...

    async def apply(self, cmd: Command) -> Any: ...


class AntiEntropy:
    def __init__(self, cfg: Config, node_id: str, local: Any, catalog: Catalog) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.local = local
        self.catalog = catalog
        self._wake = asyncio.Event()
        self._full = True
        self._output_pushed: dict[str, float] = {}
        # What the catalog holds for this node as far as this agent knows: read by a full sync, kept
        # current by every push, so a local change is pushed without reading the catalog first.
        self._services: dict[str, dict[str, Any]] = {}
        self._checks: dict[str, dict[str, Any]] = {}
        self.cluster_size = 1  # alive nodes, as the leader last said in a heartbeat answer

    def interval(self) -> float:
        """``ae_interval`` scaled with the cluster as Consul does: x1 up to 128 nodes, then one more step
        per doubling, so the servers see about the same sync load whatever the size."""
        if self.cluster_size <= SCALE_THRESHOLD:
            return self.cfg.ae_interval
        return self.cfg.ae_interval * (math.ceil(math.log2(self.cluster_size) - math.log2(SCALE_THRESHOLD)) + 1)

    def trigger(self) -> None:
        """A local change: push what differs from what the catalog is known to hold."""
        self._wake.set()

    def resync(self) -> None:
        """The catalog may have lost this node (a leader said so): compare with it in full."""
        self._full = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval() * random.uniform(1.0, 1.5))
            except TimeoutError:
                self._full = True
            self._wake.clear()
            full, self._full = self._full, False
            try:
                await self.sync(full)
            except (Error, ClientError) as e:
                log.info("sync with the catalog failed, retrying", error=str(e))
                self._full = True  # what reached the catalog is unknown now
                await asyncio.sleep(RETRY_AFTER)
                self._wake.set()

    async def sync(self, full: bool = True) -> None:
        node = self.cfg.node_name
        if full:
            self._services, self._checks = await self.catalog.node_view(node)
        base = self.cfg.identity(self.node_id).node()
        await self._apply_all([
            (CatalogRegister(reg=structs.service_registration(base, svc)), self._services, sid, svc)
            for sid, svc in list(self.local.services.items())
            if not structs.service_in_sync(self._services.get(sid), svc)])
        now = time.monotonic()
        changed = []
        for cid, check in list(self.local.checks.items()):
            remote = self._checks.get(cid)
            if structs.check_in_sync(remote, check):
                continue
            only_output = structs.check_in_sync(remote, check, but_output=True)
            if only_output and now - self._output_pushed.get(cid, 0.0) < OUTPUT_UPDATE_INTERVAL:
                continue
            self._output_pushed[cid] = now
            changed.append(structs.node_check(check, node))
        if changed:
            await self.catalog.apply(CatalogRegister(reg=structs.checks_registration(base, changed)))
            self._checks.update((structs.check_id(c), c) for c in changed)
        await self._apply_all([
            (CatalogDeregister(node=node, service_id=sid), self._services, sid, None)
            for sid in list(self._services)
            if sid not in self.local.services and sid not in SERVER_OWNED_SERVICES])
        await self._apply_all([
            (CatalogDeregister(node=node, check_id=cid), self._checks, cid, None)
            for cid, check in list(self._checks.items())
            if cid not in self.local.checks and cid not in SERVER_OWNED_CHECKS and
            (not structs.check_service_id(check) or structs.check_service_id(check) in self.local.services)])
        # A deregistered service takes its checks with it.
        for cid in [cid for cid, c in self._checks.items()
                    if structs.check_service_id(c) and structs.check_service_id(c) not in self._services]:
            del self._checks[cid]

    async def _apply_all(self, writes: list[tuple[Command, dict[str, Any], str, Any]]) -> None:
        """Apply independent writes concurrently (the Raft layer batches them), recording each one that
        lands in the known catalog view (``None`` = removed); raise the first failure."""
        limit = asyncio.Semaphore(SYNC_CONCURRENCY)

        async def one(cmd: Command, view: dict[str, Any], key: str, value: Any) -> None:
            async with limit:
                await self.catalog.apply(cmd)
            if value is None:
                view.pop(key, None)
            else:
                view[key] = value

        results = await asyncio.gather(*(one(*w) for w in writes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
