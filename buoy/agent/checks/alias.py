"""Alias checks (``AliasService``, ``AliasNode``): mirror the health of a service instance, or of a node.

The check follows the aliased node's checks through this agent's own HTTP API with a blocking query on
``/v1/health/node/<node>``, so it works the same on a server agent and on a client agent that forwards
to the servers. As in Consul, the verdict counts the node's own checks and the aliased service's checks
(for a node alias, the node checks only): critical if any is critical, else warning if any is warning,
else passing; critical when the aliased service is not on the node. A maintenance check counts as
critical, since it takes the instance out of healthy results too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from buoy.api.client import Client, ClientError

WAIT = 60.0  # Consul's MaxQueryTime for the alias's blocking query
BACKOFF_AFTER = 3  # failed queries in a row before the retries slow down
BACKOFF_MAX = 60.0


def verdict(checks: list[dict[str, Any]], service_id: str, own_id: str) -> tuple[str, str, bool]:
    """(status, output, whether a check of the aliased service was seen), Consul's processChecks; the
    check ``own_id`` (the alias itself) is left out."""
    status, output, found = "passing", "No checks found.", False
    for chk in checks:
        sid = chk.get("ServiceID") or ""
        if chk["CheckID"] == own_id or (sid and sid != service_id):
            continue  # another service's check, or this alias itself (a node check would feed back)
        found = found or sid == service_id
        state = "warning" if chk["Status"] == "warning" else "passing" if chk["Status"] == "passing" else "critical"
        if state == "passing":
            if status == "passing":
                output = "All checks passing."
            continue
        status = state
        output = f"Aliased check {json.dumps(chk['Name'], ensure_ascii=False)} failing: {chk.get('Output', '')}"
        if state == "critical":
            break
    return status, output, found


class AliasCheck:
    def __init__(self, check: dict[str, Any], http_addr: str, local_node: str,
                 set_status: Callable[[str, str, str], None]) -> None:
        d = check["Definition"]
        self.check_id = check["CheckID"]
        self.service_id = d.get("AliasService", "")
        self.node = d.get("AliasNode") or local_node
        # The alias's own row is among the node's checks when it aliases this node; another node's check
        # may have the same ID.
        self._own_id = self.check_id if self.node == local_node else ""
        self.http_addr = http_addr
        self._set_status = set_status

    async def run(self) -> None:
        async with Client(self.http_addr) as client:
            index, failures = 0, 0
            while True:
                try:
                    resp = await client.query(f"/v1/health/node/{quote(self.node, safe='')}", consistency="stale",
                                              index=index or None, wait=WAIT)
                    status, output = await self._judge(client, resp.json() or [])
                except ClientError as e:
                    failures += 1
                    if failures > 1:  # one failure is forgiven, as Consul does (a server changing leader)
                        self._set_status(self.check_id, "critical",
                                         f"Failure checking aliased node or service: {e}")
                    await asyncio.sleep(min(BACKOFF_MAX, 2.0 ** max(0, failures - BACKOFF_AFTER)))
                    continue
                failures = 0
                index = max(resp.index, 1)  # never 0: a query without an index would not block
                self._set_status(self.check_id, status, output)

    async def _judge(self, client: Client, checks: list[dict[str, Any]]) -> tuple[str, str]:
        status, output, found = verdict(checks, self.service_id, self._own_id)
        if found:
            return status, output
        resp = await client.query(f"/v1/catalog/node/{quote(self.node, safe='')}", consistency="stale")
        node = resp.json()
        if node is None:
            return "critical", f"Node {self.node} could not be found"
        if self.service_id and self.service_id not in (node.get("Services") or {}):
            return "critical", f"Service {self.service_id} could not be found on node {self.node}"
        return status, output
