"""How servers find each other and form the Raft cluster (``-bootstrap-expect``, ``-retry-join``).

pysyncobj has no bootstrap-expect and must be started with the same member list on every initial server,
so Buoy forms the cluster itself: a server polls the HTTP port of each ``-retry-join`` address for the
Raft addresses that peer knows, and once it knows ``bootstrap_expect`` servers, all of them start Raft with
that same list. A server that finds a cluster already running asks it to add it instead. The member list
is saved in the data dir, so a restarted server starts Raft at once with the members it last knew.

Every exchange is signed with an HMAC of the cluster key in both directions: a host without the key can
neither join nor feed a server false addresses.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import structlog

from buoy.api.client import Client, ClientError
from buoy.api.internal import JOIN, PEER, http_addr
from buoy.api.signed import signed_call
from buoy.config import Config
from buoy.files import replace_file

log = structlog.get_logger("buoy.membership")
RETRY_INTERVAL = 1.0


class Membership:
    def __init__(self, cfg: Config, key: bytes) -> None:
        self.cfg = cfg
        self.key = key
        self.known: set[str] = {cfg.raft_addr}
        self._peers_file = Path(cfg.data_dir, "raft", "peers.json") if cfg.data_dir else None

    def saved_members(self) -> list[str] | None:
        if self._peers_file is None or not self._peers_file.exists():
            return None
        return list(json.loads(self._peers_file.read_text())["members"])

    def save_members(self, members: list[str]) -> None:
        if self._peers_file is None:
            return
        replace_file(self._peers_file, json.dumps({"version": 1, "members": sorted(members)}).encode())

    async def _call(self, addr: str, path: str, payload: dict[str, Any] | None) -> Any:
        """One signed exchange with the server at ``addr``; the answer must be signed too."""
        async with Client(http_addr(addr, self.cfg.http_port), timeout=10) as client:
            return await signed_call(client, self.key, path, payload)

    async def form(self) -> list[str]:
        """Wait until the initial member list is known; return the partners (members other than self)."""
        me = self.cfg.raft_addr
        saved = self.saved_members()
        if saved:
            log.info("starting with saved members", members=saved)
            return [m for m in saved if m != me]
        if self.cfg.bootstrap_expect == 1:
            return []
        while True:
            for addr in self.cfg.retry_join:
                try:
                    info = await self._call(addr, PEER, None)
                except (ClientError, ValueError, KeyError) as e:
                    log.debug("join attempt failed", addr=addr, error=str(e))
                    continue
                members = info.get("members")
                if members and me in members:
                    # A peer already started Raft with us in its initial list: start with the same.
                    return [m for m in members if m != me]
                if members:
                    joined = await self._join(addr)
                    if joined:
                        return [m for m in joined if m != me]
                    continue
                self.known.add(info["raft"])
                self.known.update(info.get("known", []))
            if self.cfg.bootstrap_expect and len(self.known) >= self.cfg.bootstrap_expect:
                members = sorted(self.known)
                log.info("bootstrapping cluster", members=members)
                return [m for m in members if m != me]
            await asyncio.sleep(RETRY_INTERVAL)

    async def _join(self, addr: str) -> list[str] | None:
        try:
            answer = await self._call(addr, JOIN, {"raft": self.cfg.raft_addr})
        except (ClientError, ValueError, KeyError) as e:
            log.info("join request refused", addr=addr, error=str(e))
            return None
        return list(answer["members"])
