"""Reload (SIGHUP, ``PUT /v1/agent/reload``, ``buoy reload``): the agent builds its Config again from the files
and flags it started with, then applies what can change while it runs: the config files' services and checks,
and the log level. A configuration that does not build changes nothing: the agent keeps the last good one."""

from __future__ import annotations

import contextlib
from dataclasses import fields
from typing import TYPE_CHECKING

import structlog

from buoy import log as logging_setup
from buoy.config import Config, ConfigError, build, definitions

if TYPE_CHECKING:
    from buoy.agent.agent import Agent

log = structlog.get_logger("buoy.agent")
RELOADED = ("services", "checks", "log_level")


def reload(agent: Agent) -> None:
    """Reload, or raise ConfigError (one line, also logged) and leave everything as it was."""
    cfg = agent.cfg
    try:
        if agent.node is None:
            raise ConfigError("the agent is still starting")
        new = build(cfg.sources)
        agent.node.apply_config(*definitions(new))
    except ConfigError as e:
        log.error("reload failed, keeping the last good configuration", error=str(e))
        raise
    # In place: the server, the node agent and the HTTP app hold this same Config.
    for name in RELOADED:
        setattr(cfg, name, getattr(new, name))
    logging_setup.setup(cfg.log_level, cfg.log_json)
    stale = [f.name for f in fields(Config) if f.name not in RELOADED and getattr(new, f.name) != getattr(cfg, f.name)]
    if stale:
        log.warning("changed settings take effect at the next restart", settings=stale)
    log.info("configuration reloaded", services=len(cfg.services), checks=len(cfg.checks))


def on_sighup(agent: Agent) -> None:
    log.info("caught signal, reloading", signal="SIGHUP")
    with contextlib.suppress(ConfigError):  # reload logged it; the agent carries on as it was
        reload(agent)
