"""The replicated state: one module per table, joined by :mod:`buoy.server.state.store`."""

from buoy.server.state.store import StateStore

__all__ = ["StateStore"]
