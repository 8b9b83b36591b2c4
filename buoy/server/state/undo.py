"""Undo steps for transactions: a failed ``/v1/txn`` puts every table back as it was.

Outside a transaction the log is disabled, so ordinary writes pay nothing for it.
"""

from collections.abc import Callable


class UndoLog:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._steps: list[Callable[[], None]] = []

    def append(self, step: Callable[[], None]) -> None:
        if self.enabled:
            self._steps.append(step)

    def rollback(self) -> None:
        for step in reversed(self._steps):
            step()
        self._steps.clear()
