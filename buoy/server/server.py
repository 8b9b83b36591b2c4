"""A Buoy server: the replicated state store, the Raft node that feeds it, blocking-query wake-ups,
cluster formation and the leader's duties, behind a small API the HTTP handlers use."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from buoy.api.client import APIError, Client, ClientError
from buoy.api.internal import CA_SIGN, HEARTBEAT, JOIN, LEAVE
from buoy.api.signed import signed_call
from buoy.config import Config
from buoy.core.commands import CatalogRegister, Command, MemberAlive, MemberLeft, ServerRegister
from buoy.core.errors import NO_LEADER, Error, NotFound, Unavailable
from buoy.server.fsm import FSM
from buoy.server.leader import LeaderDuties, LeaderSettings
from buoy.server.membership import Membership
from buoy.server.raft import RaftNode
from buoy.server.state import StateStore
from buoy.server.watch import WatchHub

log = structlog.get_logger("buoy.server")
T = TypeVar("T")


class Server:
    def __init__(self, cfg: Config, key: bytes, node_id: str) -> None:
        self.cfg = cfg
        self.key = key
        self.node_id = node_id
        self.loop = asyncio.get_running_loop()
        self.store = StateStore()
        self.hub = WatchHub(self.loop)
        self.store.notify = self.hub.notify_threadsafe
        self.membership = Membership(cfg, key)
        self.duties = LeaderDuties(self, self.hub, LeaderSettings.from_config(cfg))
        self.raft: RaftNode | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_client: Client | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start Raft now if the member list is known (dev, saved), else in the background once it is."""
        if self.cfg.dev:
            self._start_raft([])
        else:
            self._tasks.append(self.loop.create_task(self._form()))

    async def _form(self) -> None:
        partners = await self.membership.form()
        self._start_raft(partners)

    def _start_raft(self, partners: list[str]) -> None:
        data_dir = None if self.cfg.dev else f"{self.cfg.data_dir}/raft"
        self.raft = RaftNode(
            FSM(self.store), self.cfg.raft_addr, partners, data_dir=data_dir,
            password=base64.b64encode(self.key).decode(),
            on_leader_change=self._leader_changed,
        )
        self.membership.save_members(self.raft.members())
        log.info("raft started", addr=self.cfg.raft_addr, partners=partners)
        self._tasks.append(self.loop.create_task(self._register_self()))
        self._tasks.append(self.loop.create_task(self._track_members()))

    def _leader_changed(self, is_leader: bool) -> None:
        """Called on the Raft thread: leader duties run on the loop."""
        self.loop.call_soon_threadsafe(self.duties.set_leader, is_leader)

    async def _register_self(self) -> None:
        """Put this server in the server table, the member table (node and serfHealth, which its heartbeats
        keep up from then on, like every agent's) and the catalog (the ``consul`` service). Done at once
        rather than at the first heartbeat, so the node can hold sessions as soon as there is a leader."""
        cfg = self.cfg
        me = cfg.identity(self.node_id)
        reg = dict(me.node(), Service={
            "ID": "consul", "Service": "consul", "Tags": [], "Address": "", "TaggedAddresses": {}, "Meta": {},
            "Port": cfg.server_port, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
            "Kind": ""})
        cmds: list[Command] = [
            ServerRegister(raft=cfg.raft_addr, node=cfg.node_name, id=self.node_id, http=cfg.http_addr),
            MemberAlive(member=me.member(), reg=me.node()),
            CatalogRegister(reg=reg),
        ]
        for cmd in cmds:
            while True:
                try:
                    await self.apply(cmd)
                    break
                except Error as e:
                    log.debug("self-registration waits for a leader", error=str(e))
                    await asyncio.sleep(0.2)

    async def _track_members(self) -> None:
        """Keep the saved member list current so a restart starts Raft with the right peers."""
        last: list[str] = []
        while self.raft is not None:
            members = sorted(self.raft.members())
            if members != last:
                self.membership.save_members(members)
                last = members
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.duties.set_leader(False)
        if self._leader_client is not None:
            await self._leader_client.close()
        if self.raft is not None:
            raft, self.raft = self.raft, None
            await asyncio.get_running_loop().run_in_executor(None, raft.close)

    # ---- what handlers use -------------------------------------------------------------------------

    def read(self, fn: Callable[[StateStore], T]) -> T:
        """Run ``fn`` on one consistent state: the lock is held for it alone (microseconds), so it should
        pick rows, not encode them. Stored rows are never changed once published (a write replaces them),
        so what ``fn`` returns may be encoded after the lock is released."""
        with self.store.lock:
            return fn(self.store)

    @property
    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.is_leader

    @property
    def leader_addr(self) -> str | None:
        return self.raft.leader if self.raft is not None else None

    @property
    def known_leader(self) -> bool:
        return self.leader_addr is not None

    def members(self) -> list[str]:
        return sorted(self.raft.members()) if self.raft is not None else []

    def last_contact_ms(self) -> int:
        return self.raft.last_contact_ms() if self.raft is not None else 0

    def raft_status(self) -> dict[str, Any]:
        return self.raft.status() if self.raft is not None else {"state": "none"}

    async def require_leader(self) -> None:
        if not self.known_leader:
            raise Unavailable(NO_LEADER)

    async def barrier(self) -> None:
        if self.raft is None:
            raise Unavailable(NO_LEADER)
        await self.raft.barrier()

    async def node_view(self, node: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """A node's services and checks as the catalog holds them (for anti-entropy)."""
        with self.store.lock:
            return (dict(self.store.catalog.services.get(node, {})), dict(self.store.catalog.checks.get(node, {})))

    async def apply(self, cmd: Command) -> Any:
        """Replicate one command; a refusal from the state machine is raised here, in the proposer."""
        if self.raft is None:
            raise Unavailable(NO_LEADER)
        wire = cmd.to_wire()
        if not wire["ts"]:
            wire["ts"] = time.time()
        result = await self.raft.apply(wire)
        if isinstance(result, Error):
            raise result
        return result

    async def add_server(self, raft_addr: str) -> list[str]:
        """Add a server to the cluster (leader only, one change at a time); returns the new member list."""
        if self.raft is None:
            raise Unavailable(NO_LEADER)
        if raft_addr not in self.raft.members():
            await self.raft.add_member(raft_addr)
        return self.members()

    # ---- calls that only the leader answers ----------------------------------------------------------

    def server_http_addrs(self) -> list[str]:
        """The HTTP addresses of the current Raft members (what client agents may talk to)."""
        members = set(self.members())
        with self.store.lock:
            return sorted(info["HTTP"] for addr, info in self.store.servers.items() if addr in members)

    def leader_http_addr(self) -> str | None:
        with self.store.lock:
            info = self.store.servers.get(self.leader_addr or "")
        return info["HTTP"] if info else None

    async def on_leader(self, path: str, payload: dict[str, Any]) -> Any:
        """Answer an internal call here if this server leads, else pass it to the leader, signed."""
        if self.is_leader:
            return await self.handle(path, payload)
        leader = self.leader_http_addr()
        if leader is None:
            raise Unavailable(NO_LEADER)
        if self._leader_client is None or self._leader_client.addr != leader:
            if self._leader_client is not None:
                await self._leader_client.close()
            self._leader_client = Client(leader, token="", timeout=10)
        try:
            return await signed_call(self._leader_client, self.key, path, payload)
        except APIError:  # the leader's refusal (a CSR over the rate limit: 429) passes on as it is
            raise
        except ClientError as e:
            raise Unavailable(f"rpc error making call: {e}") from None

    async def handle(self, path: str, payload: dict[str, Any]) -> Any:
        """The leader's side of the internal calls agents make (see buoy/http/internal.py)."""
        if path == HEARTBEAT:
            answer = await self.duties.heartbeats.beat(payload["member"], payload["reg"])
            return dict(answer, servers=self.server_http_addrs(), leader=self.leader_http_addr())
        if path == LEAVE:
            self.duties.heartbeats.forget(payload["node"])
            await self.apply(MemberLeft(node=payload["node"], prune=bool(payload.get("prune"))))
            # The server table is the Raft thread's to write: read it under the lock, like every other read.
            leaving = self.read(lambda s: next((a for a, i in s.servers.items() if i["Node"] == payload["node"]), None))
            if leaving is not None and leaving != self.cfg.raft_addr and leaving in self.members():
                assert self.raft is not None
                await self.raft.remove_member(leaving)
            return {}
        if path == JOIN:
            return {"members": await self.add_server(str(payload["raft"]))}
        if path == CA_SIGN:
            return await self.duties.ca.sign(payload)
        raise NotFound(f"unknown internal call {path}")
