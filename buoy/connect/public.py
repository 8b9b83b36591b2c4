"""The public listener: mutual TLS from other services' proxies, admitted by intentions, piped to the
local service.

Each connection is accepted as plain TCP and then upgraded with the TLS contexts current at that moment,
so a new leaf or root set applies to the next connection while open ones keep theirs. Nothing is read
from the peer before its certificate has been verified against the roots, its SPIFFE ID parsed and the
intentions asked (from a cache that a blocking query keeps current).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from buoy.agent.intentions import Decision
from buoy.connect.config import PublicConfig
from buoy.connect.listener import Listener, handshake_reason
from buoy.connect.metrics import Metrics
from buoy.connect.pipe import Side, link, peer_address
from buoy.connect.tls import Contexts, PeerRejected, peer_service

Authorize = Callable[[str, str], Awaitable[Decision]]  # (source service, namespace) -> decision


class PublicListener(Listener):
    kind = "public"

    def __init__(self, cfg: PublicConfig, metrics: Metrics, tls: Callable[[], Contexts], service: str,
                 authorize: Authorize) -> None:
        super().__init__("public_listener", cfg.bind_address, cfg.bind_port, metrics, cfg.timeouts)
        self.cfg = cfg
        self.tls = tls
        self.service = service
        self.authorize = authorize

    async def serve(self, side: Side) -> None:
        loop = asyncio.get_running_loop()
        contexts = self.tls()
        client = peer_address(side)
        try:
            transport = await loop.start_tls(side.transport, side, contexts.server, server_side=True,
                                             ssl_handshake_timeout=self.cfg.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as e:
            reason = handshake_reason(e)
            self.stats.handshake_failures[reason] += 1
            self.throttled.warning(("handshake", reason), "TLS handshake refused", listener=self.name,
                                   reason=reason, client=str(client), error=str(e))
            side.abort()
            self.gone(side)
            return
        if transport is None or side.closed:
            self.gone(side)
            return
        side.transport = transport
        transport.pause_reading()
        try:
            peer = peer_service(transport.get_extra_info("ssl_object"), contexts.trust_domain)
        except PeerRejected as e:
            self.stats.handshake_failures[e.reason] += 1
            self.throttled.warning(("identity", e.reason), "peer identity refused", listener=self.name,
                                   reason=e.reason, client=str(client), error=str(e))
            side.abort()
            self.gone(side)
            return
        try:
            decision = await self.authorize(peer.service, peer.namespace)
        except Exception as e:  # the intentions could not be fetched at all: nothing allows the connection
            self.stats.denied += 1
            self.throttled.warning(("unknown", peer.service), "connection refused: intentions unavailable",
                                   source=peer.service, destination=self.service, error=str(e))
            side.abort()
            self.gone(side)
            return
        if not decision.allowed:
            self.stats.denied += 1
            self.throttled.warning(("denied", peer.service), "connection denied", source=peer.service,
                                   destination=self.service, reason=decision.reason)
            side.abort()
            self.gone(side)
            return
        await self._forward(side)

    async def _forward(self, side: Side) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.timeout(self.cfg.local_connect_timeout):
                _, local = await loop.create_connection(lambda: Side(self.stats, False), self.cfg.local_address,
                                                        self.cfg.local_port)
        except (OSError, TimeoutError) as e:
            self.stats.connect_failures += 1
            self.throttled.warning("local", "cannot reach the local service", listener=self.name,
                                   address=f"{self.cfg.local_address}:{self.cfg.local_port}", error=str(e) or "timeout")
            self.refuse(side, "local_unreachable")
            return
        self.stats.connect_time.observe(loop.time() - start)
        local.transport.pause_reading()
        link(side, local)

