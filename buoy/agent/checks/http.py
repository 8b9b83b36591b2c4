"""HTTP checks: 2xx is passing, 429 is warning, anything else (or no answer) is critical."""

from __future__ import annotations

from typing import Any

import aiohttp

from buoy.agent.checks.probe import Kind, output_max

_session: aiohttp.ClientSession | None = None


def _client() -> aiohttp.ClientSession:
    # One connection pool for every HTTP check of the agent; no keep-alive so each probe is a fresh
    # connection, as a load balancer's would be.
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         headers={"User-Agent": "Buoy Health Check"})
    return _session


async def probe(d: dict[str, Any], timeout: float) -> tuple[str, str]:
    url, method = d["HTTP"], d.get("Method") or "GET"
    headers = [(k, v) for k, values in (d.get("Header") or {}).items() for v in values]
    try:
        async with _client().request(method, url, headers=headers, data=(d.get("Body") or None),
                                     ssl=not d.get("TLSSkipVerify"),
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = (await resp.content.read(output_max(d))).decode("utf-8", "replace")
    except (aiohttp.ClientError, OSError) as e:
        return "critical", f"{method} {url}: {type(e).__name__}: {e}"
    output = f"HTTP {method} {url}: {resp.status} {resp.reason} Output: {body}"
    if 200 <= resp.status < 300:
        return "passing", output
    if resp.status == 429:
        return "warning", output
    return "critical", output


KIND = Kind(probe)


async def close() -> None:
    if _session is not None:
        await _session.close()
