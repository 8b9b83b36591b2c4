"""The public listener: mutual TLS from other services' proxies, admitted by intentions, piped to the
local service.

Each connection is accepted with the TLS context current at that moment, so a new leaf or root set
applies to the next connection while open ones keep theirs. Nothing is read from the peer before its
certificate has been verified against the roots, its SPIFFE ID parsed and the intentions asked (from a
cache that a blocking query keeps current).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from buoy.connect.config import PublicConfig
from buoy.connect.intentions import Decision
from buoy.connect.listener import Listener
from buoy.connect.metrics import Metrics
from buoy.connect.pipe import Side, link, paused
from buoy.connect.tls import Contexts, PeerRejected, peer_service

Authorize = Callable[[str, str], Awaitable[Decision]]  # (source service, namespace) -> decision


class PublicListener(Listener):
    kind = "public"

    def __init__(self, cfg: PublicConfig, metrics: Metrics, tls: Callable[[], Contexts], service: str,
                 authorize: Authorize) -> None:
        super().__init__("public_listener", cfg.bind_address, cfg.bind_port, metrics, cfg.idle_timeout)
        self.cfg = cfg
        self.tls = tls
        self.service = service
        self.authorize = authorize

    def server_tls(self) -> tuple[ssl.SSLContext | None, float | None]:
        return self.tls().server, self.cfg.handshake_timeout

    async def serve(self, side: Side) -> None:
        """Admit a connection whose handshake verified its certificate against the roots."""
        client = side.transport.get_extra_info("peername")
        try:
            peer = peer_service(side.transport.get_extra_info("ssl_object"), self.tls().trust_domain)
        except PeerRejected as e:
            self.stats.handshake_failures[e.reason] += 1
            self.throttled.warning(("identity", e.reason), "peer identity refused", listener=self.name,
                                   reason=e.reason, client=str(client), error=str(e))
            self.drop(side)
            return
        try:
            decision = await self.authorize(peer.service, peer.namespace)
        except Exception as e:  # the intentions could not be fetched at all: nothing allows the connection
            self.stats.denied += 1
            self.throttled.warning(("unknown", peer.service), "connection refused: intentions unavailable",
                                   source=peer.service, destination=self.service, error=str(e))
            self.drop(side)
            return
        if not decision.allowed:
            self.stats.denied += 1
            self.throttled.warning(("denied", peer.service), "connection denied", source=peer.service,
                                   destination=self.service, reason=decision.reason)
            self.drop(side)
            return
        await self._forward(side)

    async def _forward(self, side: Side) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        local = Side(self.stats, False, paused)
        try:
            async with asyncio.timeout(self.cfg.local_connect_timeout):
                await loop.create_connection(lambda: local, self.cfg.local_address, self.cfg.local_port)
        except (OSError, TimeoutError) as e:
            self.stats.connect_failures += 1
            self.throttled.warning("local", "cannot reach the local service", listener=self.name,
                                   address=f"{self.cfg.local_address}:{self.cfg.local_port}", error=str(e) or "timeout")
            self.refuse(side, "local_unreachable")
            return
        self.stats.connect_time.observe(loop.time() - start)
        link(side, local)

