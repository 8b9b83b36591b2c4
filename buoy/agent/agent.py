"""The agent process: one ``Config``, an explicit startup, a main loop that waits for a signal, and a
clean shutdown. In this release every agent is a server (``-dev`` or ``-server``)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import structlog
from aiohttp import web

from buoy.agent.node import NodeAgent
from buoy.config import Config
from buoy.http.app import make_app
from buoy.server.server import Server

log = structlog.get_logger("buoy.agent")
SHUTDOWN_GRACE = 5.0


class Agent:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.node_id = self._node_id()
        self.server: Server | None = None
        self.node: NodeAgent | None = None
        self._stop = asyncio.Event()
        self._signals = 0

    def _node_id(self) -> str:
        """A stable node ID: kept in the data dir so a restart keeps it, fresh in dev mode."""
        if self.cfg.dev or not self.cfg.data_dir:
            return str(uuid.uuid4())
        path = Path(self.cfg.data_dir, "node-id")
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        node_id = str(uuid.uuid4())
        path.write_text(node_id)
        return node_id

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal, exiting now", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("caught signal, shutting down", signal=signal.Signals(signum).name)
        self._stop.set()

    async def run(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        key = os.urandom(32) if cfg.dev else cfg.cluster_key()
        self.server = Server(cfg, key, self.node_id)
        # Open blocking queries get SHUTDOWN_GRACE seconds to finish before they are cut.
        runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        for host in cfg.client_addr.split():
            await web.TCPSite(runner, host, cfg.http_port, reuse_address=True).start()
        log.info("agent started", node=cfg.node_name, datacenter=cfg.datacenter, http=cfg.http_addr,
                 raft=cfg.raft_addr, server=cfg.server, dev=cfg.dev)
        await self.server.start()
        self.node = NodeAgent(cfg, self.node_id, self.server)
        await self.node.start()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await self.node.stop()
            await self.server.stop()
            log.info("agent stopped")


def run_agent(cfg: Config) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(Agent(cfg).run())
    else:
        uvloop.run(Agent(cfg).run())
