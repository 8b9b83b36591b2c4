"""A running proxy: its configuration, TLS material, intentions and upstream instances, each followed from
the local agent with a blocking query, and the listeners built from them.

Startup needs the agent (the registration, a leaf, the roots and the intentions must be read once); after
that the proxy keeps serving with what it last had when the agent cannot be reached, and catches up when
it answers again.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import start_http_server

from buoy.api.client import Client
from buoy.api.watch import Watch
from buoy.connect.config import ProxyConfig, ProxyConfigError, UpstreamConfig, from_service, split_hostport
from buoy.connect.intentions import Decision, IntentionCache, default_for
from buoy.connect.metrics import Metrics
from buoy.connect.public import PublicListener
from buoy.connect.tls import Contexts, build
from buoy.connect.upstream import UpstreamListener, instances
from buoy.core.structs.definitions import proxies

log = structlog.get_logger("buoy.proxy")


class SidecarNotFound(Exception):
    pass


async def find_sidecar(client: Client, service_id: str) -> str:
    """The ID of the connect-proxy registered on this agent for ``service_id``, with Consul's errors."""
    services = (await client.get("/v1/agent/services")).json() or {}
    ids = sorted(sid for sid, s in services.items() if proxies(s, service_id))
    if not ids:
        raise SidecarNotFound(f"No sidecar proxy registered for {service_id}")
    if len(ids) > 1:
        raise SidecarNotFound(f"More than one sidecar proxy registered for {service_id}.\n"
                              f"    Start proxy with -proxy-id and one of the following IDs: {', '.join(ids)}")
    return ids[0]


class _Upstream:
    """An upstream listener and the watch that feeds it instances."""

    def __init__(self, listener: UpstreamListener, watch: Watch) -> None:
        self.listener = listener
        self.watch = watch
        self.task: asyncio.Task[None] | None = None


class Proxy:
    def __init__(self, client: Client, *, proxy_id: str = "", config: ProxyConfig | None = None,
                 metrics_addr: str = "") -> None:
        self.client = client
        self.proxy_id = proxy_id  # follow this registration, or run ``config`` as given
        self.cfg = config
        self.metrics_addr = metrics_addr
        self.metrics = Metrics()
        self.contexts: Contexts | None = None
        self._leaf: dict[str, Any] = {}
        self._roots: dict[str, Any] = {}
        self.intentions: IntentionCache | None = None
        self.public: PublicListener | None = None
        self.upstreams: dict[tuple[str, int], _Upstream] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: WSGIServer | None = None
        self._applying = asyncio.Lock()

    def tls(self) -> Contexts:
        assert self.contexts is not None
        return self.contexts

    async def start(self) -> None:
        """Read everything once and open the listeners; raises ClientError, ProxyConfigError or OSError."""
        debug = (await self.client.agent_self()).get("DebugConfig") or {}
        default = default_for(str(debug.get("IntentionsDefault") or ""), bool(debug.get("DevMode")))
        watches = []
        if self.proxy_id:
            registration = Watch(self.client, f"/v1/agent/service/{quote(self.proxy_id, safe='')}",
                                 self._registration_changed, hashed=True)
            self.cfg = from_service(await registration.first())
            watches.append(registration)
        cfg = self.cfg
        assert cfg is not None
        leaf = Watch(self.client, f"/v1/agent/connect/ca/leaf/{quote(cfg.service, safe='')}", self._leaf_changed)
        roots = Watch(self.client, "/v1/agent/connect/ca/roots", self._roots_changed)
        self._leaf, self._roots = await leaf.first(), await roots.first()
        self.contexts = build(self._leaf, self._roots)
        watches += [leaf, roots]
        self.intentions = IntentionCache(self.client.addr, default, token=self.client.token or "")
        await self.intentions.intentions(cfg.service)  # so that the first connection finds them cached
        await self._apply(cfg)
        metrics_addr = self.metrics_addr or cfg.metrics_addr
        if metrics_addr:
            await self._serve_metrics(metrics_addr)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(w.run()) for w in watches]
        log.info("proxy running", service=cfg.service, leaf_serial=self.contexts.serial,
                 upstreams=[u.name for u in cfg.upstreams], public=bool(cfg.public))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for up in self.upstreams.values():
            if up.task is not None:
                up.task.cancel()
            await up.listener.stop(abort=True)
        if self.public is not None:
            await self.public.stop(abort=True)
        if self.intentions is not None:
            await self.intentions.close()
        if self._metrics_server is not None:
            # shutdown() waits for the exporter's poll loop (up to half a second): off the event loop.
            await asyncio.get_running_loop().run_in_executor(None, self._metrics_server.shutdown)
            self._metrics_server.server_close()
        await asyncio.gather(*self._tasks, *(u.task for u in self.upstreams.values() if u.task),
                             return_exceptions=True)

    async def authorize(self, source: str, namespace: str) -> Decision:
        assert self.intentions is not None and self.cfg is not None
        return await self.intentions.authorize(self.cfg.service, source, namespace)

    # -- following the agent -------------------------------------------------------------------------

    def _registration_changed(self, svc: Any) -> None:
        try:
            cfg = from_service(svc)
        except (ProxyConfigError, KeyError, TypeError, ValueError) as e:
            log.error("the proxy's registration changed to something unusable; keeping the last one", error=str(e))
            return
        asyncio.get_running_loop().create_task(self._apply(cfg))

    def _leaf_changed(self, leaf: Any) -> None:
        self._rebuild(leaf, self._roots)

    def _roots_changed(self, roots: Any) -> None:
        self._rebuild(self._leaf, roots)

    def _rebuild(self, leaf: dict[str, Any], roots: dict[str, Any]) -> None:
        try:
            contexts = build(leaf, roots)
        except (ValueError, KeyError, OSError) as e:  # ssl.SSLError is an OSError
            log.error("new TLS material unusable; keeping the last", error=str(e))
            return
        self._leaf, self._roots, self.contexts = leaf, roots, contexts
        log.info("TLS material updated", leaf_serial=contexts.serial, trust_domain=contexts.trust_domain)

    async def _apply(self, cfg: ProxyConfig) -> None:
        """Bring the listeners in line with ``cfg``; a listener that goes away stops accepting, and its open
        connections carry on."""
        async with self._applying:
            old = self.cfg if self.public is not None or self.upstreams else None
            if old is not None and old.service != cfg.service:
                log.error("the proxy's destination service changed; restart the proxy to take the new identity")
                return
            self.cfg = cfg
            if self.public is None or self.public.cfg != cfg.public:
                if self.public is not None:
                    await self.public.stop(abort=False)
                    self.public = None
                if cfg.public is not None:
                    public = PublicListener(cfg.public, self.metrics, self.tls, cfg.service, self.authorize)
                    await public.start()
                    self.public = public
            wanted = {(u.bind_address, u.bind_port): u for u in cfg.upstreams}
            for key in [k for k, up in self.upstreams.items()
                        if k not in wanted or up.listener.cfg.destination != wanted[k].destination]:
                up = self.upstreams.pop(key)
                if up.task is not None:
                    up.task.cancel()
                await up.listener.stop(abort=False)
            for key, ucfg in wanted.items():
                if key in self.upstreams:
                    self.upstreams[key].listener.reconfigure(ucfg)
                else:
                    self.upstreams[key] = await self._start_upstream(ucfg)

    async def _start_upstream(self, cfg: UpstreamConfig) -> _Upstream:
        listener = UpstreamListener(cfg, self.metrics, self.tls)

        def changed(entries: Any) -> None:
            listener.balancer.update(instances(entries))

        watch = Watch(self.client, f"/v1/health/connect/{quote(cfg.destination, safe='')}", changed,
                      params=[("passing", "1")])
        changed(await watch.first())
        await listener.start()
        up = _Upstream(listener, watch)
        up.task = asyncio.get_running_loop().create_task(watch.run())
        return up

    async def _serve_metrics(self, addr: str) -> None:
        """prometheus-client's own exporter, on a thread of its own: a scrape never waits on the data path's
        loop, and the proxy needs no web framework."""
        host, port = split_hostport(addr, "metrics address")
        self._metrics_server, _thread = start_http_server(port, addr=host, registry=self.metrics.registry)
        log.info("metrics", address=f"http://{host}:{port}/metrics")
