"""Choosing an instance of an upstream: round robin or least connections over the instances that are not
ejected. An instance whose connects fail ``max_failures`` times in a row is left out for ``ejection_time``
(outlier ejection); when every instance is ejected all are tried again, as Envoy's panic mode does,
because refusing every connection would be worse than trying an instance that may have come back."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass

POLICIES = ("round_robin", "least_request")


@dataclass(eq=False)
class Endpoint:
    key: str  # node/service ID
    host: str
    port: int
    active: int = 0
    failures: int = 0  # connects failed in a row
    ejected_until: float = 0.0

    def __str__(self) -> str:
        return f"{self.key} ({self.host}:{self.port})"


class Balancer:
    def __init__(self, policy: str = "round_robin", max_failures: int = 5, ejection_time: float = 30.0) -> None:
        self.policy = policy
        self.max_failures = max_failures
        self.ejection_time = ejection_time
        self.endpoints: list[Endpoint] = []
        self._turn = itertools.count()

    def update(self, instances: Iterable[tuple[str, str, int]]) -> None:
        """Replace the instance set; an instance that stays keeps its counts and ejection."""
        known = {(e.key, e.host, e.port): e for e in self.endpoints}
        self.endpoints = [known.get(i) or Endpoint(*i) for i in instances]

    def pick(self, tried: Iterable[Endpoint] = ()) -> Endpoint | None:
        skip = set(tried)
        candidates = [e for e in self.endpoints if e not in skip]
        if not candidates:
            return None
        now = time.monotonic()
        usable = [e for e in candidates if e.ejected_until <= now] or candidates
        turn = next(self._turn)
        if self.policy == "least_request":
            # The fewest open connections; ties go round robin so equal instances share the load.
            fewest = min(e.active for e in usable)
            usable = [e for e in usable if e.active == fewest]
        return usable[turn % len(usable)]

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0
        endpoint.ejected_until = 0.0

    def failed(self, endpoint: Endpoint) -> bool:
        """Count a failed connect; whether the instance is now ejected."""
        endpoint.failures += 1
        if endpoint.failures >= self.max_failures:
            endpoint.ejected_until = time.monotonic() + self.ejection_time
            endpoint.failures = 0
            return True
        return False
