"""An upstream listener: plain TCP from the local application on loopback, carried over mutual TLS to a
healthy instance of the destination (its sidecar proxy, or a Connect-native service), whose certificate
must name the destination service.

The instances come from a watched ``/v1/health/connect/:dest?passing``. A failed connect (refused, timed
out, wrong identity) counts against that instance and the connection is retried on another one, up to
``ATTEMPTS`` instances; the application sees nothing of it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from buoy.connect.balancer import Balancer, Endpoint
from buoy.connect.config import UpstreamConfig
from buoy.connect.listener import Listener, handshake_reason, log
from buoy.connect.metrics import Metrics
from buoy.connect.pipe import Side, link, paused
from buoy.connect.tls import Contexts, PeerRejected, peer_service

ATTEMPTS = 3


def instances(entries: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(key, host, port) of each /v1/health/connect entry: the service's address, else its node's."""
    out = []
    for e in entries or []:
        svc, node = e.get("Service") or {}, e.get("Node") or {}
        host = svc.get("Address") or node.get("Address")
        if host and svc.get("Port"):
            out.append((f"{node.get('Node', '')}/{svc.get('ID', '')}", host, int(svc["Port"])))
    return out


class UpstreamListener(Listener):
    kind = "upstream"

    def __init__(self, cfg: UpstreamConfig, metrics: Metrics, tls: Callable[[], Contexts]) -> None:
        super().__init__(cfg.name, cfg.bind_address, cfg.bind_port, metrics, cfg.idle_timeout)
        self.cfg = cfg
        self.tls = tls
        self.balancer = Balancer(cfg.policy, cfg.max_failures, cfg.ejection_time)

    def reconfigure(self, cfg: UpstreamConfig) -> None:
        """New settings for the same bind address: instances and their counts are kept."""
        self.cfg, self.idle_timeout = cfg, cfg.idle_timeout
        self.balancer.policy, self.balancer.max_failures = cfg.policy, cfg.max_failures
        self.balancer.ejection_time = cfg.ejection_time

    def admit(self, side: Side) -> bool:
        if self.cfg.max_connections and self.stats.active > self.cfg.max_connections:
            self.throttled.warning("limit", "connection limit reached", listener=self.name,
                                   max_connections=self.cfg.max_connections)
            self.refuse(side, "limit")
            return False
        return True

    async def serve(self, side: Side) -> None:
        tried: list[Endpoint] = []
        while len(tried) < ATTEMPTS:
            endpoint = self.balancer.pick(tried)
            if endpoint is None:
                break
            tried.append(endpoint)
            remote = await self._connect(endpoint)
            if remote is None:
                continue
            if side.closed:  # the client left while we connected (its end is already counted out)
                remote.close()
            else:
                link(side, remote)
            return
        reason = "upstream_connect_failed" if tried else "no_healthy_instance"
        self.throttled.warning(reason, "no instance of the upstream could be reached", listener=self.name,
                               tried=[str(e) for e in tried])
        self.refuse(side, reason)

    async def _connect(self, endpoint: Endpoint) -> Side | None:
        loop = asyncio.get_running_loop()
        contexts = self.tls()
        start = loop.time()
        endpoint.active += 1  # counted from the attempt, so least_request sees connections being opened
        counted = [True]

        def released() -> None:  # once, whether the connect failed or the connection ended
            if counted[0]:
                counted[0] = False
                endpoint.active -= 1

        remote = Side(self.stats, False, paused, on_lost=released)
        try:
            async with asyncio.timeout(self.cfg.connect_timeout):
                await loop.create_connection(lambda: remote, endpoint.host, endpoint.port, ssl=contexts.client,
                                             ssl_handshake_timeout=self.cfg.connect_timeout)
            peer = peer_service(remote.transport.get_extra_info("ssl_object"), contexts.trust_domain)
            if peer.service != self.cfg.destination:
                remote.abort()
                raise PeerRejected("wrong_service", f"the instance presented {peer.service!r}, "
                                                    f"expected {self.cfg.destination!r}")
        except (OSError, ssl.SSLError, TimeoutError, PeerRejected) as e:
            released()
            self.stats.connect_failures += 1
            reason = e.reason if isinstance(e, PeerRejected) else handshake_reason(e)
            self.throttled.warning(("connect", endpoint.key), "upstream connect failed", listener=self.name,
                                   instance=str(endpoint), reason=reason, error=str(e) or "timeout")
            if self.balancer.failed(endpoint):  # at most once per ejection time per instance: not throttled
                log.warning("instance ejected", listener=self.name, instance=str(endpoint),
                            failures=self.cfg.max_failures, seconds=self.cfg.ejection_time)
            return None
        self.balancer.succeeded(endpoint)
        self.stats.connect_time.observe(loop.time() - start)
        return remote

