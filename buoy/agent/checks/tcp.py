"""TCP checks: a connection that opens is passing, anything else is critical."""

from __future__ import annotations

import asyncio
from typing import Any

from buoy.agent.checks.probe import Kind, host_port


async def probe(d: dict[str, Any], timeout: float) -> tuple[str, str]:
    target = d["TCP"]
    try:
        _reader, writer = await asyncio.open_connection(*host_port(target))
    except OSError as e:
        return "critical", f"dial tcp {target}: {e}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return "passing", f"TCP connect {target}: Success"


KIND = Kind(probe)
