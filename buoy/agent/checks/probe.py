"""Checks that probe something every ``interval``: the loop, the timeout and Consul's thresholds
(``success_before_passing``, ``failures_before_critical``) are shared; each kind supplies one probe."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from buoy.durations import parse_duration

Probe = Callable[[dict[str, Any], float], Awaitable[tuple[str, str]]]
OUTPUT_MAX = 4096


class ProbeCheck:
    """One probing check. Status changes go to ``set_status``; a new check starts at its initial status."""

    def __init__(self, check: dict[str, Any], probe: Probe, set_status: Callable[[str, str, str], None]) -> None:
        d = check["Definition"]
        self.check_id = check["CheckID"]
        self.definition = d
        self.interval = parse_duration(d["Interval"])
        self.timeout = parse_duration(d["Timeout"]) if d.get("Timeout") else min(10.0, self.interval)
        self.success_before_passing = int(d.get("SuccessBeforePassing", 0))
        self.failures_before_critical = int(d.get("FailuresBeforeCritical", 0))
        self._probe = probe
        self._set_status = set_status
        self._status = check["Status"]
        self._successes = 0
        self._failures = 0

    async def run(self) -> None:
        # Start at a random point of the first interval, so that many checks do not fire together.
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            try:
                status, output = await asyncio.wait_for(self._probe(self.definition, self.timeout), self.timeout)
            except TimeoutError:
                status, output = "critical", f"Timeout exceeded ({self.timeout:g}s)"
            self._report(status, output[:OUTPUT_MAX])
            await asyncio.sleep(self.interval)

    def _report(self, status: str, output: str) -> None:
        if status == "passing":
            self._failures = 0
            self._successes += 1
            if self._status != "passing" and self._successes <= self.success_before_passing:
                self._set_status(self.check_id, self._status, output)
                return
        else:
            self._successes = 0
            self._failures += 1
            if status == "critical" and self._failures <= self.failures_before_critical:
                self._set_status(self.check_id, self._status, output)
                return
        self._status = status
        self._set_status(self.check_id, status, output)
