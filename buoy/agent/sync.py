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
from buoy.http.errors import HTTPError
from buoy.server.raft import RaftError

log = structlog.get_logger("buoy.sync")
OUTPUT_UPDATE_INTERVAL = 300.0
RETRY_AFTER = 1.0
SCALE_THRESHOLD = 128
SERVER_OWNED_SERVICES = frozenset({"consul"})
SERVER_OWNED_CHECKS = frozenset({"serfHealth"})
_CHECK_KEYS = ("Name", "Status", "Notes", "Output", "ServiceID", "Type", "Interval", "Timeout", "Definition")


def node_fields(cfg: Config, node_id: str) -> dict[str, Any]:
    """This node as the catalog should show it; the server's self-registration and the sync agree on it."""
    return {
        "Node": cfg.node_name, "Address": cfg.advertise_addr, "ID": node_id, "Datacenter": cfg.datacenter,
        "TaggedAddresses": {"lan": cfg.advertise_addr, "lan_ipv4": cfg.advertise_addr},
        "Meta": {"consul-network-segment": ""}, "SkipNodeUpdate": False, "Service": None, "Checks": [],
    }


class Catalog(Protocol):
    """Where the agent's node lives: the local state store on a server agent, signed calls to the
    servers on a client agent (buoy.agent.servers.RemoteCatalog)."""

    async def node_view(self, node: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]: ...

    async def apply(self, cmd: dict[str, Any]) -> Any: ...


class AntiEntropy:
    def __init__(self, cfg: Config, node_id: str, local: Any, catalog: Catalog) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.local = local
        self.catalog = catalog
        self._wake = asyncio.Event()
        self._output_pushed: dict[str, float] = {}
        self.cluster_size = 1  # alive nodes, as the leader last said in a heartbeat answer

    def interval(self) -> float:
        """``ae_interval`` scaled with the cluster as Consul does: x1 up to 128 nodes, then one more step
        per doubling, so the servers see about the same sync load whatever the size."""
        if self.cluster_size <= SCALE_THRESHOLD:
            return self.cfg.ae_interval
        return self.cfg.ae_interval * (math.ceil(math.log2(self.cluster_size) - math.log2(SCALE_THRESHOLD)) + 1)

    def trigger(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval() * random.uniform(1.0, 1.5))
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.sync()
            except (HTTPError, RaftError, ClientError) as e:
                log.info("sync with the catalog failed, retrying", error=str(e))
                await asyncio.sleep(RETRY_AFTER)
                self._wake.set()

    async def sync(self) -> None:
        node = self.cfg.node_name
        remote_services, remote_checks = await self.catalog.node_view(node)
        base = node_fields(self.cfg, self.node_id)
        for sid, svc in list(self.local.services.items()):
            remote = remote_services.get(sid)
            if remote is None or any(remote.get(k) != v for k, v in svc.items()):
                await self.catalog.apply({"op": "catalog.register", "reg": dict(base, Service=svc)})
        now = time.monotonic()
        changed = []
        for cid, check in list(self.local.checks.items()):
            remote = remote_checks.get(cid)
            if remote is not None and all(remote.get(k) == check[k] for k in _CHECK_KEYS):
                continue
            only_output = remote is not None and all(
                remote.get(k) == check[k] for k in _CHECK_KEYS if k != "Output")
            if only_output and now - self._output_pushed.get(cid, 0.0) < OUTPUT_UPDATE_INTERVAL:
                continue
            self._output_pushed[cid] = now
            changed.append(dict(check, Node=node))
        if changed:
            await self.catalog.apply({"op": "catalog.register", "reg": dict(base, Checks=changed)})
        for sid in remote_services:
            if sid not in self.local.services and sid not in SERVER_OWNED_SERVICES:
                await self.catalog.apply({"op": "catalog.deregister", "node": node, "service_id": sid})
        for cid, check in remote_checks.items():
            if cid not in self.local.checks and cid not in SERVER_OWNED_CHECKS and \
                    (not check["ServiceID"] or check["ServiceID"] in self.local.services):
                await self.catalog.apply({"op": "catalog.deregister", "node": node, "check_id": cid})
