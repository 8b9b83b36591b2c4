"""The agent's side of failure detection: heartbeat the leader a few times per TTL (the leader says how
long the TTL is), and push everything again when the leader says it had lost this node."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from buoy.api.client import ClientError
from buoy.config import Config
from buoy.core.errors import Error
from buoy.core.structs.member import BEATS_PER_TTL

log = structlog.get_logger("buoy.heartbeat")
RETRY_AFTER = 0.5

Send = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Heartbeater:
    def __init__(self, cfg: Config, node_id: str, send: Send, on_resync: Callable[[], None]) -> None:
        me = cfg.identity(node_id)
        self.payload = {"member": me.member(), "reg": me.node()}
        self.send = send
        self.on_resync = on_resync
        self.ttl = cfg.heartbeat_ttl

    async def run(self) -> None:
        failing = False
        while True:
            try:
                answer = await self.send(self.payload)
            except (ClientError, Error) as e:
                if not failing:
                    log.warning("heartbeat failed, retrying", error=str(e))
                failing = True
                await asyncio.sleep(RETRY_AFTER)
                continue
            if failing:
                log.info("heartbeat reached the servers again")
            failing = False
            self.ttl = float(answer["ttl"])
            if answer.get("resync"):
                self.on_resync()
            await asyncio.sleep(self.ttl / BEATS_PER_TTL * random.uniform(0.8, 1.0))
