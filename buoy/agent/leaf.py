"""The agent's side of the mesh CA: the roots it serves at ``/v1/agent/connect/ca/roots`` and the leaf
certificates of ``/v1/agent/connect/ca/leaf/:service``.

The agent makes each leaf's private key and a CSR for the service's SPIFFE ID; only the CSR goes to the
servers (the leader signs it), so the key never leaves this host. Each leaf is renewed at a random point
between half and nine tenths of its life, and soon after the active root changes; a blocking read of the
leaf wakes with the new certificate. Both caches start on first use: an agent nobody asks for
certificates holds no watch on the servers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from buoy.agent.versioned import Versioned
from buoy.api.client import Client, ClientError
from buoy.api.internal import CA_SIGN
from buoy.config import Config
from buoy.connect.ca import colon_hex, generate_key, key_pem
from buoy.core.errors import Failed
from buoy.core.spiffe import service_uri
from buoy.core.structs import leaf as structs

log = structlog.get_logger("buoy.leaf")

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]
ROOTS_PATH = "/v1/connect/ca/roots"
WATCH_WAIT = 300.0  # each blocking read of the roots
RENEW_WINDOW = (0.5, 0.9)  # fractions of a leaf's life between which it is renewed
# After a root rotation every agent renews its leaves; spreading them keeps most CSRs under the leader's
# rate limit, and a refused one is retried with backoff anyway.
ROOT_CHANGE_SPREAD = 5.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
IDLE_DROP = 72 * 3600.0  # a leaf nobody read for this long is dropped rather than renewed forever


class Roots:
    """The CA roots as this agent last read them from its own HTTP API (a client agent's is answered by
    the servers), kept current by a blocking query once someone has asked for them."""

    def __init__(self, addr: str, on_change: Callable[[dict[str, Any]], None], closed: Callable[[], bool]) -> None:
        self.current = Versioned()
        self._addr = addr
        self._on_change = on_change
        self._closed = closed
        self._client: Client | None = None
        self._server_index = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def get(self, min_index: int = 0, wait: float = 0.0) -> tuple[dict[str, Any], int]:
        if self.current.value is None:
            async with self._lock:  # readers arriving together share the first fetch
                if self.current.value is None:
                    if self._client is None:
                        # Stale reads, as Consul's agent cache makes them: any server answers from its own
                        # replica, so no read is forwarded to the leader and a server's shutdown ends it.
                        self._client = Client(self._addr, token="", consistency="stale")
                    resp = await self._client.query(ROOTS_PATH)
                    self._publish(resp.json(), resp.index)
                    self._task = asyncio.get_running_loop().create_task(self._watch())
        if min_index:
            await self.current.wait_past(min_index, wait, self._closed)
        return self.current.value, self.current.index

    def _publish(self, roots: dict[str, Any], server_index: int) -> None:
        self._server_index = server_index
        if roots != self.current.value:
            self.current.set(roots, server_index)
            self._on_change(roots)

    async def _watch(self) -> None:
        assert self._client is not None
        failures = 0
        while True:
            before = self._server_index
            try:
                resp = await self._client.query(ROOTS_PATH, index=before or 1, wait=WATCH_WAIT)
            except ClientError as e:
                failures += 1
                if failures == 1:
                    log.warning("watching the CA roots failed, retrying", error=str(e))
                await asyncio.sleep(_backoff(failures))
                continue
            failures = 0
            self._publish(resp.json(), resp.index)
            if resp.index == before:  # the wait ran out, or a server answered early: never spin
                await asyncio.sleep(RETRY_MIN)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.current.wake()
        if self._client is not None:
            await self._client.close()


@dataclass
class _Leaf:
    service: str
    cert: Versioned = field(default_factory=Versioned)
    issuer_key_id: str = ""  # the SigningKeyID of the root that signed it
    valid_before: float = 0.0
    last_read: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None
    renewing: asyncio.Task[None] | None = None


class LeafCerts:
    """This agent's leaf certificates, one per service name asked for."""

    def __init__(self, cfg: Config, call: Call) -> None:
        self.cfg = cfg
        self.call = call  # a signed call that only the leader answers
        self.closed = False
        self.roots = Roots(cfg.http_addr, self._roots_changed, lambda: self.closed)
        self._leaves: dict[str, _Leaf] = {}

    async def get(self, service: str, min_index: int, wait: float) -> tuple[dict[str, Any], int]:
        """The service's current leaf, issued now if there is none or it expired; with ``min_index``, the
        first one whose index passes it (or the current one when ``wait`` runs out)."""
        leaf = self._leaves.setdefault(service, _Leaf(service))
        leaf.last_read = time.monotonic()
        if leaf.cert.value is None or leaf.valid_before <= time.time():
            async with leaf.lock:
                if leaf.cert.value is None or leaf.valid_before <= time.time():
                    await self._issue(leaf)
        if min_index:
            await leaf.cert.wait_past(min_index, wait, lambda: self.closed)
        return leaf.cert.value, leaf.cert.index

    async def _issue(self, leaf: _Leaf) -> None:
        roots, _ = await self.roots.get()
        active = structs.active_root(roots)
        if active is None:
            raise Failed("CA is uninitialized and unable to sign certificates yet: no root certificate")
        uri = service_uri(structs.trust_domain(roots), self.cfg.datacenter, leaf.service)
        # Generating an RSA key takes long enough to matter.
        key = await asyncio.get_running_loop().run_in_executor(None, generate_key, *structs.key_type(active))
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
               .sign(key, hashes.SHA256()))
        issued = await self.call(CA_SIGN, {"csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                                           "service": leaf.service})
        cert = x509.load_pem_x509_certificate(structs.cert_pem(issued).encode())
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        leaf.issuer_key_id = colon_hex(aki or b"")
        leaf.valid_before = cert.not_valid_after_utc.timestamp()
        served = structs.issued_cert(issued, key_pem(key), leaf.cert.index)
        leaf.cert.set(served, structs.index(served))
        start = cert.not_valid_before_utc.timestamp()
        renew_at = start + (leaf.valid_before - start) * random.uniform(*RENEW_WINDOW)
        if structs.active_key_id(self.roots.current.value or {}) not in ("", leaf.issuer_key_id):
            # Signed by a root that is no longer active (a rotation raced this CSR): renew soon instead.
            renew_at = time.time() + random.uniform(0, ROOT_CHANGE_SPREAD)
        self._schedule(leaf, renew_at - time.time())
        log.info("leaf certificate issued", service=leaf.service, **structs.summary(issued))

    def _schedule(self, leaf: _Leaf, delay: float) -> None:
        if leaf.timer is not None:
            leaf.timer.cancel()
        leaf.timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._start_renewal, leaf)

    def _start_renewal(self, leaf: _Leaf) -> None:
        leaf.timer = None
        if leaf.renewing is None or leaf.renewing.done():
            leaf.renewing = asyncio.get_running_loop().create_task(self._renew(leaf))

    async def _renew(self, leaf: _Leaf) -> None:
        if time.monotonic() - leaf.last_read > IDLE_DROP:
            log.info("dropping an unused leaf certificate", service=leaf.service)
            self._leaves.pop(leaf.service, None)
            return
        failures = 0
        while not self.closed:
            try:
                async with leaf.lock:
                    await self._issue(leaf)
                return
            except Exception as e:  # whatever went wrong, the leaf must not be left to expire unrenewed
                failures += 1
                log.warning("leaf certificate renewal failed, retrying", service=leaf.service, error=str(e))
                await asyncio.sleep(_backoff(failures))

    def _roots_changed(self, roots: dict[str, Any]) -> None:
        """A new active root: renew, soon, every leaf another root signed."""
        if structs.active_root(roots) is None:
            return
        key_id = structs.active_key_id(roots)
        for leaf in self._leaves.values():
            if leaf.cert.value is not None and leaf.issuer_key_id != key_id:
                self._schedule(leaf, random.uniform(0, ROOT_CHANGE_SPREAD))

    async def stop(self) -> None:
        """Shutdown: wake every blocking read so none holds the HTTP server, and stop every renewal."""
        self.closed = True
        for leaf in self._leaves.values():
            if leaf.timer is not None:
                leaf.timer.cancel()
            if leaf.renewing is not None:
                leaf.renewing.cancel()
            leaf.cert.wake()
        await self.roots.stop()


def _backoff(failures: int) -> float:
    return min(RETRY_MAX, RETRY_MIN * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)

