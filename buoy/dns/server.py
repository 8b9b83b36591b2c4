"""The DNS listeners: UDP and TCP on each client address.

A UDP query whose answer is cached costs one dict lookup and a few byte slices (see cache.py): no parsing,
no encoding, no task. Everything else goes to the handler on a task of its own, bounded in number so a
flood of cache misses cannot pile up. Identical misses wait for the first one's answer instead of each
building it: after a catalog change a hot name would otherwise be rebuilt once per query in flight.

TCP connections carry length-prefixed messages, answered in order; a connection idle for TCP_IDLE, or
slower than TCP_READ to deliver a message it started, is closed, as miekg/dns does for Consul.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import structlog

from buoy.api.client import Client
from buoy.config import Config, ConfigError
from buoy.dns import cache
from buoy.dns.answers import SERVFAIL, header_only
from buoy.dns.cache import Table, key_of
from buoy.dns.handler import Handler
from buoy.dns.recursor import Recursor
from buoy.dns.settings import Settings
from buoy.dns.view import Views

log = structlog.get_logger("buoy.dns")

FETCH_TIMEOUT = 10.0  # one HTTP call of a view to the agent (a blocking query gets its wait on top)
MAX_PENDING = 1024  # UDP cache misses being answered at once; more are dropped, as by a loaded resolver
MAX_TCP = 256  # open TCP connections
TCP_IDLE = 8.0  # between messages on one connection (miekg/dns's idle timeout)
TCP_READ = 2.0  # to deliver the rest of a message once its length has arrived (miekg/dns's read timeout)
TCP_WRITE = 5.0  # for a client to take an answer
UDP_RCVBUF = 4 * 1024 * 1024  # room for bursts; the kernel caps it at net.core.rmem_max


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.entries = server.udp.entries
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's does not subclass asyncio's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        key = key_of(data)
        entry = self.entries.get(key)
        if entry is not None:
            assert self.transport is not None
            self.transport.sendto(entry.reply(data), addr)
        else:
            self.server.miss(self, data, addr, key)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error about a client that went away: nothing to do, and never a reason to stop


class DNSServer:
    def __init__(self, cfg: Config) -> None:
        self.settings = Settings.from_config(cfg)
        self.client = Client(cfg.http_addr, token="", timeout=FETCH_TIMEOUT)
        self.udp, self.tcp = Table(), Table()
        self.views = Views(self.client, self.settings, cache.drop)
        self.handler = Handler(self.settings, self.views, Recursor(self.settings), self.client)
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[bytes, list[tuple[bytes, tuple[str, int]]]] = {}  # key -> queries behind the first

    async def start(self, hosts: list[str], port: int) -> None:
        loop = asyncio.get_running_loop()
        for host in hosts:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
                sock.bind((host, port))
                transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), sock=sock)
                self._udp.append(transport)
                self._tcp.append(await asyncio.start_server(self._serve_tcp, host, port, reuse_address=True))
            except OSError as e:
                sock.close()
                await self.stop()
                raise ConfigError(f"dns: cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.views.start()
        log.info("DNS listening", addresses=[f"{h}:{port}" for h in hosts], udp=True, tcp=True)

    async def stop(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for writer in list(self._connections):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.views.close()
        await self.client.close()

    def miss(self, protocol: _UDP, data: bytes, addr: tuple[str, int], key: bytes) -> None:
        waiting = self._waiting.get(key)
        if waiting is not None:
            if len(waiting) < MAX_PENDING:
                waiting.append((data, addr))
            return
        if key:
            self._waiting[key] = []
        self._spawn(protocol, data, addr, key)

    def _spawn(self, protocol: _UDP, data: bytes, addr: tuple[str, int], key: bytes) -> None:
        if len(self._tasks) >= MAX_PENDING:
            self._waiting.pop(key, None)
            return
        task = asyncio.get_running_loop().create_task(self._answer_udp(protocol, data, addr, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_udp(self, protocol: _UDP, data: bytes, addr: tuple[str, int], key: bytes) -> None:
        try:
            response = await self._handle(data, False, self.udp, key)
        finally:
            waiting = self._waiting.pop(key, [])
        transport = protocol.transport
        if transport is None or transport.is_closing():
            return
        if response is not None:
            transport.sendto(response, addr)
        entry = self.udp.entries.get(key)
        for query, client in waiting:
            if entry is not None:
                transport.sendto(entry.reply(query), client)
            else:  # not cacheable (forwarded, or a prepared query): each is answered on its own
                self._spawn(protocol, query, client, b"")

    async def _handle(self, data: bytes, tcp: bool, table: Table, key: bytes) -> bytes | None:
        try:
            return await self.handler.handle(data, tcp, table, key)
        except Exception:  # noqa: BLE001 - one query's failure must not stop the listener; it is logged
            log.exception("DNS query failed", size=len(data), tcp=tcp)
            return header_only(data, SERVFAIL) if len(data) >= cache.HEADER else None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_TCP:
            writer.close()
            return
        self._connections.add(writer)
        entries = self.tcp.entries
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE), "big")
                data = await asyncio.wait_for(reader.readexactly(size), TCP_READ)
                key = key_of(data)
                entry = entries.get(key)
                response = entry.reply(data) if entry is not None else await self._handle(data, True, self.tcp, key)
                if response is None:
                    return
                writer.write(len(response).to_bytes(2, "big") + response)
                await asyncio.wait_for(writer.drain(), TCP_WRITE)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return  # idle, too slow, or gone
        finally:
            self._connections.discard(writer)
            writer.close()
