"""Closed-loop HTTP/1.1 load generator, run as its own process by bench.kv.

Each client is one keep-alive connection with one request in flight (no pipelining): it sends a request,
waits for the full response, records the latency and immediately sends the next one. Clients are plain
asyncio protocols driven from data_received (no coroutine or future per request), on uvloop when available,
so one generator process sustains far more requests per second than the servers it measures.
Client i connects to ports[i % len(ports)]: one port puts every client on one server, several spread them
round-robin over the members of a cluster. Keys are issued in one sequence across all clients either way.

Protocol with the parent on stdout: a line "ready" once every connection is open, "start" when warm-up
ends and measurement begins, "end" when it stops, then one line "result <json>". Every run is bounded by
`seconds` and by `max_ops`; a request with no answer after `timeout` seconds aborts its connection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Any, cast

VALUE = bytes(range(48, 112))  # 64 bytes
KINDS = ("buoy-put", "buoy-get", "etcd-put", "etcd-range", "bare-get")


@dataclass
class Spec:
    kind: str
    ports: list[int]
    clients: int
    seconds: float
    warmup: float
    keys: int = 1000
    max_ops: int = 3_000_000
    timeout: float = 5.0


@dataclass
class Result:
    ops: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    timeouts: int
    reconnects: int
    statuses: dict[str, int]
    cpu_s: float


def build_requests(kind: str, port: int, keys: int) -> list[bytes]:
    host = f"Host: 127.0.0.1:{port}\r\n"
    out: list[bytes] = []
    for n in range(keys):
        key = f"bench/{n}".encode()
        if kind == "buoy-put":
            head = f"PUT /v1/kv/bench/{n} HTTP/1.1\r\n{host}Content-Length: {len(VALUE)}\r\n\r\n"
            out.append(head.encode() + VALUE)
        elif kind == "buoy-get":
            out.append(f"GET /v1/kv/bench/{n} HTTP/1.1\r\n{host}\r\n".encode())
        elif kind in ("etcd-put", "etcd-range"):
            doc = {"key": base64.b64encode(key).decode()}
            if kind == "etcd-put":
                doc["value"] = base64.b64encode(VALUE).decode()
            body = json.dumps(doc).encode()
            path = "/v3/kv/put" if kind == "etcd-put" else "/v3/kv/range"
            head = f"POST {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
            head += f"Content-Length: {len(body)}\r\n\r\n"
            out.append(head.encode() + body)
        elif kind == "bare-get":
            out.append(f"GET / HTTP/1.1\r\n{host}\r\n".encode())
        else:
            raise ValueError(f"unknown kind {kind!r}")
    return out


def response_length(buf: bytearray) -> tuple[int, int, bool] | None:
    """(status, total length, `Connection: close`?) of the complete HTTP response at the start of buf."""
    h = buf.find(b"\r\n\r\n")
    if h < 0:
        return None
    head = bytes(buf[:h]).lower()
    status = int(head[9:12])
    close = b"\nconnection: close" in head
    i = head.find(b"\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r", i + 16)
        n = h + 4 + int(head[i + 16 : j if j >= 0 else len(head)])
        return (status, n, close) if len(buf) >= n else None
    if b"\ntransfer-encoding: chunked" in head:
        pos = h + 4
        while True:
            e = buf.find(b"\r\n", pos)
            if e < 0:
                return None
            size = int(bytes(buf[pos:e]).split(b";")[0], 16)
            pos = e + 2 + size + 2
            if size == 0:  # no trailers expected
                return (status, pos, close) if len(buf) >= pos else None
            if len(buf) < pos:
                return None
    return status, h + 4, close  # 1xx/204/304 or no body


class Run:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.requests = {port: build_requests(spec.kind, port, spec.keys) for port in spec.ports}
        self.issued = 0
        self.stopping = False
        self.measure_from = float("inf")
        self.measure_to = float("inf")
        self.latencies = array("d")
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.timeouts = 0
        self.reconnects = 0
        self.conns: set[Client] = set()
        self.reconnecting = 0
        self.all_closed: asyncio.Future[None] | None = None

    def check_done(self) -> None:
        if self.conns or self.reconnecting or self.all_closed is None or self.all_closed.done():
            return
        self.all_closed.set_result(None)


class Client(asyncio.Protocol):
    def __init__(self, run: Run, port: int) -> None:
        self.run = run
        self.port = port
        self.requests = run.requests[port]
        self.buf = bytearray()
        self.sent_at = 0.0
        self.inflight = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.run.conns.add(self)

    def send(self) -> None:
        run = self.run
        assert self.transport is not None
        if run.stopping or run.issued >= run.spec.max_ops:
            self.transport.close()
            return
        req = self.requests[run.issued % len(self.requests)]
        run.issued += 1
        self.inflight = True
        self.sent_at = time.perf_counter()
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = response_length(self.buf)
        if parsed is None:
            return
        now = time.perf_counter()
        status, n, close = parsed
        del self.buf[:n]
        self.inflight = False
        run = self.run
        if run.measure_from <= now <= run.measure_to:
            run.statuses[status] = run.statuses.get(status, 0) + 1
            if status < 300:
                run.latencies.append(now - self.sent_at)
            else:
                run.errors += 1
        if close:  # connection_lost reconnects
            assert self.transport is not None
            self.transport.close()
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        run.conns.discard(self)
        if not run.stopping and run.issued < run.spec.max_ops:  # the server closed it, or the watchdog
            if self.inflight:
                run.errors += 1
            if run.reconnects < 10 * run.spec.clients:
                run.reconnects += 1
                run.reconnecting += 1
                asyncio.get_running_loop().create_task(reconnect(run, self.port))
        run.check_done()


async def connect(run: Run, port: int) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(run, port), "127.0.0.1", port)
    return client


async def reconnect(run: Run, port: int) -> None:
    try:
        client = await asyncio.wait_for(connect(run, port), run.spec.timeout)
        client.send()
    except (OSError, TimeoutError):
        run.errors += 1
    finally:
        run.reconnecting -= 1
        run.check_done()


async def watchdog(run: Run) -> None:
    while True:
        await asyncio.sleep(0.5)
        limit = time.perf_counter() - run.spec.timeout
        for c in list(run.conns):
            if c.inflight and c.sent_at < limit and c.transport is not None:
                run.timeouts += 1  # connection_lost counts it as an error and reconnects
                c.transport.abort()


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def drive(spec: Spec) -> Result:
    run = Run(spec)
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    for i in range(0, spec.clients, 64):  # batches, so a small listen backlog does not stall connects
        batch = [connect(run, spec.ports[j % len(spec.ports)]) for j in range(i, min(i + 64, spec.clients))]
        clients += await asyncio.wait_for(asyncio.gather(*batch), 10)
    emit("ready")
    dog = loop.create_task(watchdog(run))
    run.all_closed = loop.create_future()
    t0 = time.perf_counter()
    run.measure_from = t0 + spec.warmup
    run.measure_to = run.measure_from + spec.seconds
    cpu0 = 0.0
    said: set[str] = set()

    def begin() -> None:
        nonlocal cpu0
        if "start" not in said:
            said.add("start")
            cpu0 = time.process_time()
            emit("start")

    def stop() -> None:
        run.stopping = True
        begin()
        if "end" not in said:
            said.add("end")
            emit("end")

    loop.call_at(loop.time() + spec.warmup, begin)
    loop.call_at(loop.time() + spec.warmup + spec.seconds, stop)
    for c in clients:
        c.send()
    try:
        await asyncio.wait_for(asyncio.shield(run.all_closed), spec.warmup + spec.seconds + spec.timeout + 5)
    except TimeoutError:
        pass
    finally:
        dog.cancel()
        stop()  # the timer's stop() has not run if max_ops ended the step or every connection failed
        for c in list(run.conns):
            if c.transport is not None:
                c.transport.abort()
    cpu = time.process_time() - cpu0 if cpu0 else 0.0
    # Ended before the timer (max_ops reached or every connection gone): measure up to now.
    window = max(0.0, min(run.measure_to, time.perf_counter()) - run.measure_from)
    lat = sorted(run.latencies)
    n = len(lat)

    def pct(q: float) -> float:
        return lat[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return Result(
        ops=n,
        seconds=round(window, 3),
        ops_per_s=n / window if window > 0 else 0.0,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        errors=run.errors,
        timeouts=run.timeouts,
        reconnects=run.reconnects,
        statuses={str(k): v for k, v in sorted(run.statuses.items())},
        cpu_s=round(cpu, 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("spec", help="JSON object with the fields of bench.load.Spec")
    args = parser.parse_args()
    spec = Spec(**json.loads(args.spec))
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    result = runner(drive(spec))
    emit("result " + json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
