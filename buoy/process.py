"""The agent process: it builds each part from one ``Config`` (the server, the node agent, DNS, the HTTP app),
starts them in order, waits in its main loop for a signal, reloads and stops. A server agent (``-server``,
``-dev``) holds the state; a client agent keeps only its own node's services and checks and reaches
everything else through the servers, and never imports ``buoy.server``.

This is the top of the house below the CLI: it is the only module that knows every part.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from buoy import log as logging_setup
from buoy.agent.heartbeat import Heartbeater
from buoy.agent.leaf import LeafCerts
from buoy.agent.node import NodeAgent
from buoy.agent.servers import RemoteCatalog, ServerPool
from buoy.agent.sync import Catalog
from buoy.aio import run
from buoy.api.client import Client
from buoy.api.internal import HEARTBEAT, LEAVE, PEER, http_addr
from buoy.api.signed import signed_call
from buoy.config import Config, ConfigError, build, definitions
from buoy.dns.server import DNSServer
from buoy.files import narrow, private_dir, replace_file
from buoy.http.app import serve

if TYPE_CHECKING:
    from buoy.server.server import Server

log = structlog.get_logger("buoy.agent")
SHUTDOWN_GRACE = 5.0
# What a reload changes while the agent runs; any other changed setting waits for a restart.
RELOADED = ("services", "checks", "log_level")


class Agent:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.node_id = self._node_id()
        self.server: Server | None = None
        self.node: NodeAgent | None = None
        self.pool: ServerPool | None = None  # a client agent's servers
        self.leaves = LeafCerts(cfg, self._internal)
        self._beating: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._signals = 0

    def _node_id(self) -> str:
        """A stable node ID: kept in the data dir so a restart keeps it, fresh in dev mode."""
        if self.cfg.dev or not self.cfg.data_dir:
            return str(uuid.uuid4())
        private_dir(self.cfg.data_dir)
        narrow(self.cfg.data_dir)
        path = Path(self.cfg.data_dir, "node-id")
        if path.exists():
            return path.read_text().strip()
        node_id = str(uuid.uuid4())
        replace_file(path, node_id.encode())
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
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        # -dev without -encrypt: a throwaway key, so nothing else can join it.
        self.key = key = os.urandom(32) if cfg.dev and not cfg.encrypt else cfg.cluster_key()
        catalog: Catalog
        if cfg.server:
            from buoy.server.server import Server  # a client agent never loads the server's code

            self.server = catalog = Server(cfg, key, self.node_id)
        else:
            self.pool = ServerPool(cfg, key)
            catalog = RemoteCatalog(self.pool)
        # Open blocking queries get SHUTDOWN_GRACE seconds to finish before they are cut.
        stop_http = await serve(self, cfg.client_addr.split(), cfg.http_port, SHUTDOWN_GRACE)
        dns = None
        if cfg.dns_port != -1:
            dns = DNSServer(cfg)
            await dns.start(cfg.client_addr.split(), cfg.dns_port)
        log.info("agent started", node=cfg.node_name, datacenter=cfg.datacenter, http=cfg.http_addr,
                 raft=cfg.raft_addr, server=cfg.server, dev=cfg.dev)
        if self.server is not None:
            await self.server.start()
        self.node = NodeAgent(cfg, self.node_id, catalog)
        await self.node.start()
        self.heartbeat = Heartbeater(cfg, self.node_id, self._send_heartbeat, self.node.sync.resync)
        self._beating = loop.create_task(self.heartbeat.run())
        try:
            # Inside the try: a service or check the node cannot take stops the agent cleanly.
            self.node.apply_config(*definitions(cfg))
            await self._stop.wait()
        finally:
            if self._beating is not None:
                self._beating.cancel()
            # Checks first: an alias check's blocking query on this agent would hold the HTTP shutdown.
            await self.node.stop()
            await self.leaves.stop()
            if dns is not None:
                await dns.stop()  # before the HTTP server, which would wait for its views' blocking queries
            await stop_http()
            if self.server is not None:
                await self.server.stop()
            if self.pool is not None:
                await self.pool.close()
            log.info("agent stopped")


    # ---- membership ----------------------------------------------------------------------------------

    async def _internal(self, path: str, payload: dict[str, Any]) -> Any:
        """A call only the leader answers: straight to the local server, or through the server pool."""
        if self.server is not None:
            return await self.server.on_leader(path, payload)
        assert self.pool is not None
        return await self.pool.call(path, payload)

    async def _send_heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = await self._internal(HEARTBEAT, payload)
        if self.pool is not None:
            self.pool.learn(answer.get("servers") or [], answer.get("leader"))
        if self.node is not None:
            self.node.sync.cluster_size = int(answer.get("nodes") or 1)
        return answer

    async def leave(self) -> None:
        """Graceful leave: stop heartbeats and syncing, have the leader take this node out of the catalog,
        then shut down (the HTTP answer still goes out: the runner waits for open requests). The agent
        shuts down even when the servers cannot be told: they will see it fail instead."""
        if self._beating is not None:
            self._beating.cancel()
        assert self.node is not None
        await self.node.stop()
        try:
            await self._internal(LEAVE, {"node": self.cfg.node_name})
            log.info("left the cluster gracefully")
        finally:
            asyncio.get_running_loop().call_soon(self._stop.set)

    async def force_leave(self, node: str, prune: bool) -> None:
        await self._internal(LEAVE, {"node": node, "prune": prune})

    async def join(self, addr: str) -> None:
        """Check that ``addr`` is a server of this cluster (it must answer with our key), then use it."""
        target = http_addr(addr, self.cfg.http_port)
        async with Client(target, token="", timeout=10) as client:
            await signed_call(client, self.key, PEER, None)
        if self.pool is not None:
            self.pool.add(target)
        elif target not in self.cfg.retry_join:
            self.cfg.retry_join.append(target)  # a server still forming its cluster tries it too


    # ---- reload ------------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Build the Config again from the files and flags the agent started with and apply what can change
        while it runs: the config files' services and checks, and the log level. A configuration that does
        not build changes nothing (ConfigError, also logged): the agent keeps the last good one."""
        try:
            if self.node is None:
                raise ConfigError("the agent is still starting")
            new = build(self.cfg.sources)
            self.node.apply_config(*definitions(new))
        except ConfigError as e:
            log.error("reload failed, keeping the last good configuration", error=str(e))
            raise
        # The running parts keep the settings they were built with; a setting they hold that changed is
        # named, and takes effect at the next restart.
        stale = [f.name for f in fields(Config)
                 if f.name not in RELOADED and getattr(new, f.name) != getattr(self.cfg, f.name)]
        kept = {f.name: getattr(self.cfg, f.name) for f in fields(Config) if f.name not in RELOADED}
        self.cfg = replace(new, **kept)
        logging_setup.setup(self.cfg.log_level, self.cfg.log_json)
        if stale:
            log.warning("changed settings take effect at the next restart", settings=stale)
        log.info("configuration reloaded", services=len(self.cfg.services), checks=len(self.cfg.checks))

    def _on_sighup(self) -> None:
        log.info("caught signal, reloading", signal="SIGHUP")
        with contextlib.suppress(ConfigError):  # reload logged it; the agent carries on as it was
            self.reload()


def run_agent(cfg: Config) -> None:
    run(Agent(cfg).run())
