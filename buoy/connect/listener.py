"""What the public and upstream listeners share: accepting, counting, the idle and half-close timeouts,
and logging refusals at most once per reason per interval (a scan or a misconfigured peer must not flood
the log)."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import structlog

from buoy.connect.config import Timeouts
from buoy.connect.metrics import Metrics
from buoy.connect.pipe import Side

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
    """The metric label for a failed TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "expired" if exc.verify_code == X509_V_ERR_CERT_HAS_EXPIRED else "untrusted"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE" or "CERTIFICATE_REQUIRED" in reason:
            return "no_certificate"
        if "EXPIRED" in reason:
            return "expired"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "VERIFY_FAILED" in reason:
            return "untrusted"
        return "tls_error"
    if isinstance(exc, TimeoutError) or "longer than" in str(exc):
        return "timeout"
    return "connection_error"


class Listener:
    kind = ""

    def __init__(self, name: str, host: str, port: int, metrics: Metrics, timeouts: Timeouts) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.timeouts = timeouts
        self.stats = metrics.stats(name, self.kind)
        self.throttled = Throttled()
        self.live: set[Side] = set()  # downstream ends, until they close
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Side(self.stats, True, self._accepted), self.host, self.port,
                                                reuse_address=True, backlog=1024)
        self._sweeper = loop.create_task(self._sweep())
        log.info("listening", listener=self.name, kind=self.kind, address=f"{self.host}:{self.port}")

    async def stop(self, abort: bool) -> None:
        """Stop accepting; open connections carry on unless ``abort``."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        if abort:
            for side in list(self.live):
                side.abort()
                if side.peer is not None:
                    side.peer.abort()

    def _accepted(self, side: Side) -> None:
        side.transport.pause_reading()
        side.on_lost = lambda: self.gone(side)
        side.quiet_since = time.monotonic()
        self.stats.accepted += 1
        self.stats.active += 1
        self.live.add(side)
        if self.admit(side):
            task = asyncio.get_running_loop().create_task(self.serve(side))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def gone(self, side: Side) -> None:
        """A downstream connection ended (closed by either end, or refused before piping)."""
        if side in self.live:
            self.live.discard(side)
            self.stats.active -= 1

    def refuse(self, side: Side, reason: str) -> None:
        self.stats.rejected[reason] += 1
        side.abort()
        self.gone(side)

    def admit(self, side: Side) -> bool:
        return True

    async def serve(self, side: Side) -> None:
        raise NotImplementedError

    async def _sweep(self) -> None:
        t = self.timeouts
        period = max(0.05, min(5.0, t.idle / 4, t.half_close / 4))
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
                quiet = now - side.quiet_since
                if quiet > t.idle or ((side.eof or peer.eof) and quiet > t.half_close):
                    self.stats.timed_out["half_close" if side.eof or peer.eof else "idle"] += 1
                    side.abort()
                    peer.abort()
