"""UDP checks, as Consul runs them: send an (empty) datagram on a connected socket and wait up to the
timeout. A reply is passing, and so is silence, since many UDP services never answer; only an error is
critical, typically the ICMP port-unreachable that the kernel reports as "connection refused"."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from buoy.agent.checks.probe import Kind, host_port

MESSAGE = b""  # what Consul's agent sends


async def probe(d: dict[str, Any], timeout: float) -> tuple[str, str]:
    target = d["UDP"]
    success = "passing", f"UDP connect {target}: Success"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            host, port = host_port(target)
            family, kind, proto, _, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
            with socket.socket(family, kind, proto) as sock:
                sock.setblocking(False)
                sock.connect(addr)
                lhost, lport = sock.getsockname()[:2]
                local = f"[{lhost}]:{lport}" if ":" in lhost else f"{lhost}:{lport}"
                try:
                    sock.send(MESSAGE)
                    await loop.sock_recv(sock, 1)
                except OSError as e:
                    return "critical", f"read udp {local}->{target}: read: {(e.strerror or str(e)).lower()}"
    except TimeoutError:
        return success
    except OSError as e:
        return "critical", f"dial udp {target}: {e}"
    return success


KIND = Kind(probe, owns_timeout=True)
