"""H2PING checks: open an HTTP/2 connection (TLS with ALPN h2 unless ``H2PingUseTLS`` is false, then
cleartext h2c) and send a PING frame; passing when its ACK comes back within the timeout."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any

from buoy.agent.checks.probe import Kind, host_port


def _tls(d: dict[str, Any]) -> ssl.SSLContext | None:
    if not d.get("H2PingUseTLS", True):
        return None
    ctx = ssl.create_default_context()
    if d.get("TLSSkipVerify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def probe(d: dict[str, Any], timeout: float) -> tuple[str, str]:
    # Imported here: h2 costs about 40 ms at import, which agents without an H2PING check should not pay.
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import ConnectionTerminated, PingAckReceived
    from h2.exceptions import ProtocolError

    target = d["H2PING"]
    host, port = host_port(target)
    tls = _tls(d)
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=(d.get("TLSServerName") or host) if tls else None)
    except OSError as e:
        return "critical", f"Failed to dial to {target}: {e}"
    try:
        conn = H2Connection(H2Configuration(client_side=True))
        conn.initiate_connection()
        opaque = os.urandom(8)
        conn.ping(opaque)
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            events = conn.receive_data(data)
            writer.write(conn.data_to_send())  # our ACK of the server's SETTINGS
            if any(isinstance(e, PingAckReceived) and e.ping_data == opaque for e in events):
                return "passing", "HTTP2 ping was successful"
            if any(isinstance(e, ConnectionTerminated) for e in events):
                return "critical", "HTTP2 ping failed: the server closed the connection (GOAWAY)"
        return "critical", "HTTP2 ping failed: connection closed before the ping was acknowledged"
    except (ProtocolError, OSError) as e:
        return "critical", f"HTTP2 ping failed: {e}"
    finally:
        writer.close()


KIND = Kind(probe)
