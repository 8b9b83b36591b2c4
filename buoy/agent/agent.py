"""The agent process: one ``Config``, an explicit startup, a main loop that waits for a signal, and a
clean shutdown. A server agent (``-server``, ``-dev``) holds the state; a client agent keeps only its own
node's services and checks and reaches everything else through the servers."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from buoy.agent.heartbeat import Heartbeater
from buoy.agent.leaf import LeafCerts
from buoy.agent.node import NodeAgent
from buoy.agent.reload import on_sighup
from buoy.agent.servers import RemoteCatalog, ServerPool
from buoy.agent.sync import Catalog
from buoy.aio import run
from buoy.api.client import Client
from buoy.api.signed import signed_call
from buoy.config import Config, definitions
from buoy.dns.server import DNSServer
from buoy.http.app import make_app
from buoy.server.membership import http_addr
from buoy.server.server import HEARTBEAT, LEAVE, Server

log = structlog.get_logger("buoy.agent")
SHUTDOWN_GRACE = 5.0


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
        loop.add_signal_handler(signal.SIGHUP, on_sighup, self)
        # -dev without -encrypt: a throwaway key, so nothing else can join it.
        self.key = key = os.urandom(32) if cfg.dev and not cfg.encrypt else cfg.cluster_key()
        catalog: Catalog
        if cfg.server:
            self.server = catalog = Server(cfg, key, self.node_id)
        else:
            self.pool = ServerPool(cfg, key)
            catalog = RemoteCatalog(self.pool)
        # Open blocking queries get SHUTDOWN_GRACE seconds to finish before they are cut.
        runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        for host in cfg.client_addr.split():
            await web.TCPSite(runner, host, cfg.http_port, reuse_address=True).start()
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
            await runner.cleanup()
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
            await signed_call(client, self.key, "/v1/internal/buoy/peer", None)
        if self.pool is not None:
            self.pool.add(target)
        elif target not in self.cfg.retry_join:
            self.cfg.retry_join.append(target)  # a server still forming its cluster tries it too


def run_agent(cfg: Config) -> None:
    run(Agent(cfg).run())
