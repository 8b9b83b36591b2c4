"""Following one agent endpoint with blocking queries, as Consul's watch clients do: by ``X-Consul-Index``,
or by ``X-Consul-ContentHash`` for the endpoints that block on a hash (``/v1/agent/service/:id``).

``first()`` is one plain read, so a caller can refuse to start when the agent cannot be reached; ``run()``
then follows the endpoint and calls ``on_change`` with every new answer. While the agent cannot be reached
the last answer stands: the caller keeps what it had and the watch retries with backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from buoy.api.client import APIError, Client, ClientError, ParamValue, Response

log = structlog.get_logger("buoy.watch")

WAIT = 300.0  # each blocking read
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


def backoff(failures: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(failures, 6))


class Watch:
    def __init__(self, client: Client, path: str, on_change: Callable[[Any], None], *,
                 params: list[tuple[str, ParamValue]] | None = None, hashed: bool = False) -> None:
        self.client = client
        self.path = path
        self.on_change = on_change
        self.params = params or []
        self.hashed = hashed
        self.index = 0
        self.hash = ""

    async def first(self) -> Any:
        """The current answer (raises ClientError); ``run`` follows on from it."""
        resp = await self.client.query(self.path, self.params)
        self._remember(resp)
        return resp.json()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                resp = await self._block()
            except ClientError as e:
                failures += 1
                if failures == 1:
                    event = ("the agent refused the watch" if isinstance(e, APIError)
                             else "cannot reach the agent")
                    log.warning(f"{event}, keeping the last answer", path=self.path, error=str(e))
                await asyncio.sleep(backoff(failures))
                continue
            if failures:
                log.info("the agent answers again", path=self.path)
            failures = 0
            if self._remember(resp):
                self.on_change(resp.json())

    async def _block(self) -> Response:
        if self.hashed:
            return await self.client.query(self.path, [*self.params, ("hash", self.hash)], wait=WAIT)
        return await self.client.query(self.path, self.params, index=self.index or None, wait=WAIT)

    def _remember(self, resp: Response) -> bool:
        """Keep the answer's index or hash; whether it is news."""
        if self.hashed:
            new = resp.headers.get("X-Consul-ContentHash", "")
            changed, self.hash = new != self.hash, new
            return changed
        changed = resp.index != self.index
        # An index that went backwards (a restored snapshot) restarts the watch, as Consul's clients do.
        self.index = resp.index if resp.index >= self.index else 0
        return changed
