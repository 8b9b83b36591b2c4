"""Checks that probe something every ``interval``: the loop, the timeout and Consul's thresholds
(``success_before_passing``, ``failures_before_warning``, ``failures_before_critical``) are shared; each
kind supplies one probe."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from buoy.durations import parse_duration

Probe = Callable[[dict[str, Any], float], Awaitable[tuple[str, str]]]
OUTPUT_MAX = 4096  # Consul's check_output_max_size
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Kind:
    """How one kind of check is probed."""

    probe: Probe
    # A probe that owns its timeout ends itself when the timeout passes and gives its own verdict: for
    # UDP, silence is success; a script's process group must be killed and its output kept.
    owns_timeout: bool = False
    default_timeout: float | None = None  # None: the interval, at most DEFAULT_TIMEOUT


def output_max(d: dict[str, Any]) -> int:
    """The check's OutputMaxSize, Consul's default when unset."""
    return int(d.get("OutputMaxSize") or OUTPUT_MAX)


class ProbeCheck:
    """One probing check. Status changes go to ``set_status``; a new check starts at its initial status.

    The thresholds follow Consul's StatusHandler: the counters start at their thresholds, so the first
    result applies at once; after that a status changes only after enough results in a row (a warning
    result counts as a success). Below a threshold the status holds but the output still shows the run.
    """

    def __init__(self, check: dict[str, Any], kind: Kind, set_status: Callable[[str, str, str], None]) -> None:
        d = check["Definition"]
        self.check_id = check["CheckID"]
        self.definition = d
        self.kind = kind
        self.interval = parse_duration(d["Interval"])
        if d.get("Timeout"):
            self.timeout = parse_duration(d["Timeout"])
        else:
            self.timeout = kind.default_timeout or min(DEFAULT_TIMEOUT, self.interval)
        self.success_before_passing = int(d.get("SuccessBeforePassing", 0))
        self.failures_before_critical = int(d.get("FailuresBeforeCritical", 0))
        self.failures_before_warning = int(d.get("FailuresBeforeWarning", self.failures_before_critical))
        self._set_status = set_status
        self._status = check["Status"]
        self._successes = self.success_before_passing
        self._failures = self.failures_before_critical

    async def run(self) -> None:
        # Start at a random point of the first interval, so that many checks do not fire together.
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            self._report(*await self._once())
            await asyncio.sleep(self.interval)

    async def _once(self) -> tuple[str, str]:
        if self.kind.owns_timeout:
            return await self.kind.probe(self.definition, self.timeout)
        try:
            return await asyncio.wait_for(self.kind.probe(self.definition, self.timeout), self.timeout)
        except TimeoutError:
            return "critical", f"Timeout exceeded ({self.timeout:g}s)"

    def _report(self, status: str, output: str) -> None:
        if status in ("passing", "warning"):
            self._failures = 0
            self._successes += 1
            if self._successes >= self.success_before_passing:
                self._status = status
        else:
            self._successes = 0
            self._failures += 1
            if self._failures >= self.failures_before_critical:
                self._status = "critical"
            elif self._failures >= self.failures_before_warning:
                self._status = "warning"
        self._set_status(self.check_id, self._status, output)


def host_port(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` split; definitions.py has validated the form already."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)
