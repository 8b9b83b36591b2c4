"""What the public and upstream listeners share: accepting, counting, the idle timeout, and logging
refusals at most once per reason per interval (a scan or a misconfigured peer must not flood the log)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from buoy.connect.metrics import Metrics
from buoy.connect.pipe import Side, paused

log = structlog.get_logger("buoy.proxy")
LOG_INTERVAL = 10.0
X509_V_ERR_CERT_HAS_EXPIRED = 10


class Throttled:
    """At most one warning per key per ``interval``, saying how many like it were left out."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[Any, tuple[float, int]] = {}

    def warning(self, key: Any, event: str, **fields: Any) -> None:
        now = time.monotonic()
        last, dropped = self._last.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._last[key] = (last, dropped + 1)
            return
        self._last[key] = (now, 0)
        if len(self._last) > 10_000:  # a key per source service: bounded anyway
            self._last.clear()
        log.warning(event, **fields, **({"suppressed": dropped} if dropped else {}))


def handshake_reason(exc: BaseException) -> str:
    """The metric label for a failed TLS handshake; "closed" for a peer that went away without one (a TCP
    health check does that every interval, so it is counted but not logged)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "expired" if exc.verify_code == X509_V_ERR_CERT_HAS_EXPIRED else "untrusted"
    if isinstance(exc, TimeoutError) or "longer than" in str(exc):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionError):
        return "closed"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE" or "CERTIFICATE_REQUIRED" in reason:
            return "no_certificate"
        if "EXPIRED" in reason:
            return "expired"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "VERIFY_FAILED" in reason:
            return "untrusted"
        return "tls_error"
    return "connection_error"


class Listener:
    """Accepts connections itself (``sock_accept`` then ``connect_accepted_socket``) rather than through
    ``create_server``: each connection then gets the TLS context current at that moment, and a failed
    handshake comes back here as an exception to count. (uvloop's ``start_tls`` on an accepted connection,
    the other way to choose a context per connection, loses a ClientHello that arrives early.)"""

    kind = ""

    def __init__(self, name: str, host: str, port: int, metrics: Metrics, idle_timeout: float) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.stats = metrics.stats(name, self.kind)
        self.throttled = Throttled()
        self.live: set[Side] = set()  # downstream ends, until they close
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def server_tls(self) -> tuple[ssl.SSLContext | None, float | None]:
        """The context and handshake timeout for the next accepted connection; none for plain TCP."""
        return None, None

    async def start(self) -> None:
        family, kind, proto, _, addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._spawn(self._accept(sock))
        self._spawn(self._sweep())
        log.info("listening", listener=self.name, kind=self.kind, address=f"{self.host}:{self.port}")

    async def stop(self, abort: bool) -> None:
        """Stop accepting; open connections carry on unless ``abort``."""
        for task in list(self._tasks):
            task.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if abort:
            for side in list(self.live):
                side.abort()
                if side.peer is not None:
                    side.peer.abort()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, client = await loop.sock_accept(sock)
            except OSError as e:  # out of file descriptors, mostly: wait for some to close rather than spin
                self.throttled.warning("accept", "cannot accept connections", listener=self.name, error=str(e))
                await asyncio.sleep(0.1)
                continue
            self.stats.accepted += 1
            self._spawn(self._open(conn, client))

    async def _open(self, conn: socket.socket, client: Any) -> None:
        loop = asyncio.get_running_loop()
        context, handshake_timeout = self.server_tls()
        side = Side(self.stats, True, paused)
        try:
            # uvloop returns its TLS protocol here rather than ours, so ours is made beforehand.
            await loop.connect_accepted_socket(lambda: side, conn, ssl=context, ssl_handshake_timeout=handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as e:
            conn.close()
            reason = handshake_reason(e)
            self.stats.handshake_failures[reason] += 1
            if reason != "closed":
                self.throttled.warning(("handshake", reason), "TLS handshake refused", listener=self.name,
                                       reason=reason, client=str(client), error=str(e) or type(e).__name__)
            return
        side.on_lost = lambda: self.gone(side)
        side.quiet_since = time.monotonic()
        self.stats.active += 1
        self.live.add(side)
        if side.closed:
            self.gone(side)
        elif self.admit(side):
            await self.serve(side)

    def gone(self, side: Side) -> None:
        """A downstream connection ended (closed by either end, or refused before piping)."""
        if side in self.live:
            self.live.discard(side)
            self.stats.active -= 1

    def drop(self, side: Side) -> None:
        side.abort()
        self.gone(side)

    def refuse(self, side: Side, reason: str) -> None:
        self.stats.rejected[reason] += 1
        self.drop(side)

    def admit(self, side: Side) -> bool:
        return True

    async def serve(self, side: Side) -> None:
        raise NotImplementedError

    async def _sweep(self) -> None:
        period = max(0.05, min(5.0, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for side in list(self.live):
                peer = side.peer
                if peer is None:
                    continue  # still being set up: the handshake and connect timeouts bound that
                moved = side.received + peer.received
                if moved != side.last_seen:
                    side.last_seen, side.quiet_since = moved, now
                    continue
                if now - side.quiet_since > self.idle_timeout:
                    self.stats.idle_timeouts += 1
                    side.abort()
                    peer.abort()
