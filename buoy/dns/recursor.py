"""Forwarding names outside the domain to the configured recursors, as Consul does: over the transport the
query came in on, one recursor after another (in order, or shuffled with ``recursor_strategy = "random"``),
each with ``recursor_timeout``. A recursor that cannot be reached, does not answer in time, or answers with
a code other than NOERROR or NXDOMAIN passes the query on to the next; the first usable reply is relayed
as it came. None means that every recursor failed (the caller answers SERVFAIL).
"""

from __future__ import annotations

import asyncio
import random

import structlog

from buoy.dns.settings import Settings

log = structlog.get_logger("buoy.dns")


class _Exchange(asyncio.DatagramProtocol):
    """Waits for the one reply to a query sent over a connected UDP socket."""

    def __init__(self, query_id: bytes) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:2] == self.query_id and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp(query: bytes, host: str, port: int) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Exchange(query[:2]), remote_addr=(host, port))
    try:
        transport.sendto(query)
        return await protocol.reply
    finally:
        transport.close()


async def _tcp(query: bytes, host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(len(query).to_bytes(2, "big") + query)
        await writer.drain()
        size = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(size)
    finally:
        writer.close()


def _usable(query: bytes, reply: bytes) -> bool:
    return len(reply) >= 12 and reply[:2] == query[:2] and reply[2] & 0x80 != 0 and reply[3] & 0x0F in (0, 3)


class Recursor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def forward(self, query: bytes, tcp: bool) -> bytes | None:
        recursors = list(self.settings.recursors)
        if self.settings.recursor_random:
            random.shuffle(recursors)
        exchange = _tcp if tcp else _udp
        for host, port in recursors:
            try:
                reply = await asyncio.wait_for(exchange(query, host, port), self.settings.recursor_timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("recursor failed", recursor=f"{host}:{port}", error=str(e) or type(e).__name__)
                continue
            if _usable(query, reply):
                return reply
            log.debug("recursor answered with an error", recursor=f"{host}:{port}", rcode=reply[3] & 0x0F)
        log.warning("all recursors failed", recursors=len(recursors))
        return None
