"""TTL checks: the application reports its health (pass/warn/fail/update) before the TTL lapses; when it
does not, the check turns critical. One timer per check on the event loop, nothing polls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from buoy.durations import parse_duration

EXPIRED = "TTL expired"


class TTLChecks:
    def __init__(self, set_status: Callable[[str, str, str], None]) -> None:
        self._set_status = set_status
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def arm(self, check_id: str, ttl: str) -> None:
        """(Re)start the countdown of a check; called on registration and on every report."""
        self.disarm(check_id)
        loop = asyncio.get_running_loop()
        self._timers[check_id] = loop.call_later(parse_duration(ttl), self._expire, check_id)

    def disarm(self, check_id: str) -> None:
        timer = self._timers.pop(check_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, check_id: str) -> None:
        self._timers.pop(check_id, None)
        self._set_status(check_id, "critical", EXPIRED)

    def stop(self) -> None:
        for check_id in list(self._timers):
            self.disarm(check_id)
