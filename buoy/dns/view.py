"""The live view DNS answers from: one blocking query per service (and one for the node list) kept open on
this agent's own HTTP API, so a server agent and a client agent (which passes /v1 to the servers) work the
same way. The first question about a service waits for its first answer; later ones are answered from
memory. A change in the catalog wakes the blocking query, the view replaces its data and drops the cached
answers built from it. When the servers cannot be reached the view keeps what it has and answers from it
(stale) until ``max_stale`` has passed. A view nobody asked about for IDLE_AFTER is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog

from buoy.api.client import Client, Response
from buoy.core.structs import catalog
from buoy.dns.names import canonical_ip
from buoy.dns.settings import Settings

if TYPE_CHECKING:
    from buoy.dns.cache import Entry

log = structlog.get_logger("buoy.dns")

BLOCK_WAIT = 300.0  # Consul's default blocking wait; a change ends it early
FIRST_LOAD_TIMEOUT = 4.0  # a question waits this long for a new view (resolvers retry after about 5 s)
MIN_POLL = 1.0  # pause when a query returned without blocking (no index, or the index went back)
RETRY_MIN, RETRY_MAX = 0.25, 5.0  # back-off while the API (or the servers behind it) cannot be reached
IDLE_AFTER = 600.0  # a view unused this long is closed
SWEEP_EVERY = 60.0
MAX_WATCHES = 64  # blocking queries held open at once; each holds one HTTP connection


class LookupFailed(Exception):
    """The view has no usable data: its first fetch failed, or its data is older than max_stale."""


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    datacenter: str
    meta: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Instance:
    node: Node
    service_address: str  # "" when the service uses its node's address
    port: int
    tags: frozenset[str]  # folded to lower case: DNS names are
    weight: int  # Weights.Passing, or Weights.Warning for an instance with a warning

    @property
    def address(self) -> str:
        return self.service_address or self.node.address


def _node(info: catalog.NodeInfo) -> Node:
    return Node(info.name, info.address, info.datacenter,
                tuple(sorted((str(k), str(v)) for k, v in info.meta.items())))


def healthy_instances(entries: list[dict[str, Any]] | None, only_passing: bool) -> tuple[Instance, ...]:
    """The instances of a /v1/health/service (or prepared query) answer that DNS may return: none with a
    critical check, node checks included (maintenance counts as critical); none with a warning either when
    ``only_passing``."""
    out = []
    for e in entries or ():
        statuses = catalog.entry_statuses(e)
        if statuses & {"critical", "maintenance"} or (only_passing and statuses - {"passing"}):
            continue
        svc = catalog.read_instance(e)
        tags = frozenset(t.lower() for t in svc.tags)
        out.append(Instance(_node(svc.node), svc.address, svc.port, tags, svc.weight("warning" in statuses)))
    return tuple(out)


@dataclass(frozen=True)
class NodeTable:
    by_name: dict[str, Node]  # folded name
    by_address: dict[str, Node]


def node_table(rows: list[dict[str, Any]] | None) -> NodeTable:
    nodes = [_node(catalog.read_node(r)) for r in rows or ()]
    by_address: dict[str, Node] = {}
    for n in nodes:
        ip = canonical_ip(n.address)
        if ip:  # a host name has no PTR
            by_address.setdefault(ip, n)
    return NodeTable({n.name.lower(): n for n in nodes}, by_address)


class Watch:
    """One blocking query and its latest data (``project`` of the JSON answer)."""

    def __init__(self, views: Views, key: tuple[str, str], path: str, project: Callable[[Any], Any]) -> None:
        self.views = views
        self.key = key
        self.path = path
        self.project = project
        self.data: Any = None
        self.entries: set[Entry] = set()  # cached answers built from the data; the cache keeps this
        self.last_used = time.monotonic()
        self.failing_since: float | None = None
        self.expired = False
        self.loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved here so that a first failure nobody waits for any more is not reported as unhandled.
        self.loaded.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.task = asyncio.get_running_loop().create_task(self._run())

    def usable(self) -> Any:
        if self.expired:
            raise LookupFailed(f"{self.path}: the servers have been unreachable for longer than max_stale")
        return self.data

    async def _fetch(self, index: int) -> tuple[Response, Any]:
        settings, client = self.views.settings, self.views.client
        resp = await client.query(self.path, consistency=settings.consistency, index=index or None,
                                  wait=BLOCK_WAIT if index else None, allow_404=True)
        if settings.allow_stale and resp.last_contact_ms > settings.max_stale * 1000:
            # The server that answered lags the leader by more than max_stale: ask the leader, as Consul does.
            resp = await client.query(self.path, consistency="default", allow_404=True)
        # A 404 is an endpoint this cluster does not have yet (/v1/health/connect before the mesh): no data.
        return resp, resp.json() if resp.status == 200 else None

    async def _run(self) -> None:
        index, retry = 0, RETRY_MIN
        while True:
            try:
                resp, payload = await self._fetch(index)
                data = self.project(payload)
            except Exception as e:  # noqa: BLE001 - servers unreachable, or an unreadable answer: a failed fetch
                if not self.loaded.done():
                    self.loaded.set_exception(LookupFailed(f"{self.path}: {e}"))
                    self.views.forget(self)
                    return
                self._failing(e)
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            retry = RETRY_MIN
            if self.failing_since is not None:
                log.info("DNS view reaches the catalog again", path=self.path)
                self.failing_since = None
            if data != self.data or self.expired:
                self.data, self.expired = data, False
                self.views.on_change(self)
            if not self.loaded.done():
                self.loaded.set_result(None)
            new = max(resp.index, 1)  # never 0: a query without an index does not block
            if new <= index:
                await asyncio.sleep(MIN_POLL)
            index = new

    def _failing(self, error: Exception) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
            log.warning("DNS view cannot reach the catalog, answering from what it has", path=self.path,
                        error=str(error))
        elif not self.expired and now - self.failing_since > self.views.settings.max_stale:
            self.expired = True
            self.views.on_change(self)

    def close(self) -> None:
        self.task.cancel()
        if not self.loaded.done():
            self.loaded.cancel()


class Views:
    """Every open watch, keyed by what it watches; opened on first use, closed when idle or evicted."""

    def __init__(self, client: Client, settings: Settings, on_change: Callable[[Watch], None]) -> None:
        self.client = client
        self.settings = settings
        self.on_change = on_change
        self._watches: dict[tuple[str, str], Watch] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        watches = list(self._watches.values())
        for w in watches:
            w.close()
        await asyncio.gather(*(w.task for w in watches), return_exceptions=True)
        self._watches.clear()

    async def service(self, name: str, connect: bool = False) -> Watch:
        """The loaded view of a service's healthy instances (or of its mesh-capable ones)."""
        only_passing = self.settings.only_passing
        kind = "connect" if connect else "service"
        return await self._get((kind, name), f"/v1/health/{kind}/{quote(name, safe='')}",
                               lambda payload: healthy_instances(payload, only_passing))

    async def nodes(self) -> Watch:
        return await self._get(("nodes", ""), "/v1/catalog/nodes", node_table)

    def services(self) -> Iterator[Watch]:
        """The service views that hold data (for reverse lookups of service addresses)."""
        return (w for (kind, _), w in list(self._watches.items()) if kind == "service" and w.data is not None)

    async def _get(self, key: tuple[str, str], path: str, project: Callable[[Any], Any]) -> Watch:
        watch = self._watches.get(key)
        if watch is None:
            if len(self._watches) >= MAX_WATCHES:
                # The least recently used view that has loaded: one still loading has a question waiting.
                loaded = [w for w in self._watches.values() if w.loaded.done()]
                if not loaded:
                    raise LookupFailed(f"{path}: {MAX_WATCHES} views are loading already")
                self._close(min(loaded, key=lambda w: w.last_used))
            watch = self._watches[key] = Watch(self, key, path, project)
        watch.last_used = time.monotonic()
        if not watch.loaded.done():
            try:
                await asyncio.wait_for(asyncio.shield(watch.loaded), FIRST_LOAD_TIMEOUT)
            except TimeoutError:
                raise LookupFailed(f"{path}: no answer within {FIRST_LOAD_TIMEOUT:g}s") from None
        watch.loaded.result()  # raises LookupFailed when the first fetch failed
        return watch

    def forget(self, watch: Watch) -> None:
        if self._watches.get(watch.key) is watch:
            del self._watches[watch.key]

    def _close(self, watch: Watch) -> None:
        self.forget(watch)
        watch.close()
        self.on_change(watch)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = time.monotonic()
            for watch in list(self._watches.values()):
                # Cached answers mark themselves used without touching the watch (the hot path stays short).
                used = [e for e in watch.entries if e.used]
                for e in used:
                    e.used = False
                if used:
                    watch.last_used = now
                elif now - watch.last_used > IDLE_AFTER:
                    self._close(watch)
