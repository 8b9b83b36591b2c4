"""Structured logs (structlog) to stderr: human-readable by default, one JSON object per line with
``-log-json``."""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
          "WARNING": logging.WARNING, "ERR": logging.ERROR, "ERROR": logging.ERROR}


def setup(level: str, as_json: bool) -> None:
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log_level: unknown level {level!r} (trace, debug, info, warn, error)")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[name]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Uncached: a cached logger keeps the level it was first used with, and a reload may change it.
        cache_logger_on_first_use=False,
    )
    # pysyncobj logs through the standard library; keep its warnings, route them to stderr.
    logging.basicConfig(level=max(LEVELS[name], logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
