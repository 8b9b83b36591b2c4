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
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from buoy.config import Config

log = structlog.get_logger("buoy.membership")
MAX_SKEW = 120.0
RETRY_INTERVAL = 1.0


def sign(key: bytes, stamp: str, body: bytes) -> str:
    return hmac.new(key, stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def verify(key: bytes, stamp: str, body: bytes, signature: str) -> bool:
    try:
        if abs(time.time() - float(stamp)) > MAX_SKEW:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(sign(key, stamp, body), signature)


def signed_headers(key: bytes, body: bytes) -> dict[str, str]:
    stamp = f"{time.time():.3f}"
    return {"X-Buoy-Time": stamp, "X-Buoy-Signature": sign(key, stamp, body)}


def join_url(addr: str, default_port: int, path: str) -> str:
    host = addr if addr.rsplit(":", 1)[-1].isdigit() and ":" in addr else f"{addr}:{default_port}"
    return f"http://{host}{path}"


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
        self._peers_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._peers_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"version": 1, "members": sorted(members)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._peers_file)

    async def _call(self, session: aiohttp.ClientSession, url: str, payload: dict[str, Any] | None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else b""
        method = "POST" if payload is not None else "GET"
        async with session.request(method, url, data=body, headers=signed_headers(self.key, body),
                                   timeout=aiohttp.ClientTimeout(total=10)) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status} {data.decode(errors='replace').strip()}")
            if not verify(self.key, resp.headers.get("X-Buoy-Time", ""), data,
                          resp.headers.get("X-Buoy-Signature", "")):
                raise RuntimeError(f"{url}: the answer is not signed with this cluster's key")
            return json.loads(data)

    async def form(self) -> list[str]:
        """Wait until the initial member list is known; return the partners (members other than self)."""
        me = self.cfg.raft_addr
        saved = self.saved_members()
        if saved:
            log.info("starting with saved members", members=saved)
            return [m for m in saved if m != me]
        if self.cfg.bootstrap_expect == 1:
            return []
        async with aiohttp.ClientSession() as session:
            while True:
                for addr in self.cfg.retry_join:
                    url = join_url(addr, self.cfg.http_port, "/v1/internal/buoy/peer")
                    try:
                        info = await self._call(session, url, None)
                    except Exception as e:
                        log.debug("join attempt failed", addr=addr, error=str(e))
                        continue
                    members = info.get("members")
                    if members and me in members:
                        # A peer already started Raft with us in its initial list: start with the same.
                        return [m for m in members if m != me]
                    if members:
                        joined = await self._join(session, addr)
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

    async def _join(self, session: aiohttp.ClientSession, addr: str) -> list[str] | None:
        url = join_url(addr, self.cfg.http_port, "/v1/internal/buoy/join")
        try:
            answer = await self._call(session, url, {"raft": self.cfg.raft_addr})
        except Exception as e:
            log.info("join request refused", addr=addr, error=str(e))
            return None
        return list(answer["members"])

    async def forward_join(self, leader_http: str, raft_addr: str) -> list[str]:
        async with aiohttp.ClientSession() as session:
            url = join_url(leader_http, self.cfg.http_port, "/v1/internal/buoy/join")
            answer = await self._call(session, url, {"raft": raft_addr})
        return list(answer["members"])
