"""The mesh CA, Consul's built-in ``consul`` provider: roots, rotation and leaf signing.

Where things happen:

- Keys and certificates are made by the server that proposes a change, before the Raft command; the
  command carries them and applying it only stores them (:mod:`buoy.server.state.ca`), so every server
  ends up with the same bytes. The active root's private key is replicated among the servers that way
  and nowhere else: no HTTP read returns it, and it is not part of the stored configuration.
- The leader creates the first root (EC P-256, ten years, URI SAN ``spiffe://<cluster-id>.consul``) when
  it finds none, and later forgets rotated-out roots once every leaf they signed has expired.
- A configuration change that changes the key (a new ``PrivateKey``/``RootCert``, another
  ``PrivateKeyType``/``PrivateKeyBits``, or a changed ``RotationPeriod``) rotates the root: the new root
  is cross-signed by the old key and that certificate goes into the new root's ``IntermediateCerts``,
  so a new leaf also chains to the old root for a peer that has not seen the new one yet. Both roots
  stay published; leaves of the old root keep verifying until they expire.
- Only the leader signs leaf CSRs (agents reach it with a signed internal call). Signing writes nothing
  to Raft: a leaf gets a random 128-bit serial where Consul increments a replicated counter, and the
  leaf's index is the state index at signing time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509

from buoy.connect.ca import (
    brought_root,
    cert_pem,
    check_csr,
    colon_hex,
    cross_sign,
    key_id,
    key_pem,
    load_key,
    new_root,
    rfc3339,
    root_row,
    sign_leaf,
)
from buoy.core.commands import CAConfigure, CAInit, CAPrune
from buoy.core.errors import Failed, Invalid, RateLimited
from buoy.core.structs.ca import PROVIDER, parse_config, rotates, seconds

if TYPE_CHECKING:
    from buoy.connect.ca import PrivateKey
    from buoy.server.replica import Propose, Replica

log = structlog.get_logger("buoy.ca")

CSR_WAIT = 0.5  # how long a CSR may wait for the rate limiter before it is refused (Consul's csrLimitWait)
RATE_LIMITED = "Rate limit reached, try again later"
UNINITIALIZED = "CA is uninitialized and unable to sign certificates yet: no root certificate"
INIT_RETRY = 1.0
PRUNE_EVERY = 60.0


class TokenBucket:
    """The leader's CSR limiter, Consul's: ``rate`` per second with a burst of one; a CSR may wait up to
    CSR_WAIT for its turn and is refused beyond that."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.tokens = 1.0
        self.stamp = time.monotonic()

    async def take(self, rate: float) -> None:
        if rate <= 0:
            return
        now = time.monotonic()
        if rate != self.rate:  # a new limit starts afresh, as Consul builds a new limiter
            self.rate, self.tokens = rate, 1.0
        self.tokens = min(1.0, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        wait = max(0.0, 1.0 - self.tokens) / rate
        if wait > CSR_WAIT:
            raise RateLimited(RATE_LIMITED)
        self.tokens -= 1.0  # reserved now, so later callers queue behind this one
        if wait:
            await asyncio.sleep(wait)


# ---- the manager -----------------------------------------------------------------------------------

class CAManager:
    """The CA on one server: initialization and pruning while it leads, configuration changes and
    leaf signing on request."""

    def __init__(self, replica: Replica, propose: Propose, datacenter: str, first_config: dict[str, Any]) -> None:
        self.replica = replica
        self.propose = propose  # the leader's own writes (pruning): a failure is logged and retried later
        self.datacenter = datacenter
        self.first_config = first_config  # the config files' connect.ca_config, validated at load
        self.bucket = TokenBucket()
        self._lock = asyncio.Lock()  # one configuration change at a time on this server
        self._task: asyncio.Task[None] | None = None
        self._signer: tuple[str, x509.Certificate, PrivateKey] | None = None  # parsed active root, by ID

    def start(self) -> None:
        if self._task is None:
            self.bucket = TokenBucket()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._initialize()
                break
            except Exception as e:  # no quorum yet, or leadership moving: try again while this server leads
                log.warning("CA initialization failed, retrying", error=str(e))
                await asyncio.sleep(INIT_RETRY)
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            await self._prune()

    async def _initialize(self) -> None:
        await self.replica.barrier()  # see a root committed by an earlier leader before making one
        async with self._lock:
            active, known_id = self.replica.read(lambda s: (s.ca.active(), s.ca.cluster_id))
            if active is not None:
                return
            cluster_id = known_id or str(uuid.uuid4())
            config, private_key, root_cert = parse_config(self.first_config)
            loop = asyncio.get_running_loop()
            if private_key:
                key, cert = await loop.run_in_executor(None, brought_root, private_key, root_cert, config, cluster_id)
            else:
                key, cert = await loop.run_in_executor(None, new_root, config, cluster_id)
            doc = {"Provider": PROVIDER, "Config": config, "ForceWithoutCrossSigning": False}
            await self.replica.apply(CAInit(cluster_id=cluster_id, config=doc, root=root_row(cert, cluster_id, []),
                                           key=key_pem(key)))
            log.info("mesh CA initialized", trust_domain=f"{cluster_id}.consul")

    async def _prune(self) -> None:
        """Forget rotated-out roots after twice the leaf TTL (Consul's rule): their leaves are gone."""
        config, roots = self.replica.read(lambda s: (s.ca.config, s.ca.roots))
        if config is None:
            return
        keep = 2 * seconds(config["Config"], "LeafCertTTL")
        now = time.time()
        gone = [r["ID"] for r in roots if not r["Active"] and r["RotatedOutAt"] + keep < now]
        if gone:
            log.info("pruning rotated-out CA roots", roots=gone)
            await self.propose(CAPrune(ids=gone))

    async def configure(self, provider: str, raw: dict[str, Any], force: bool, state: Any) -> None:
        """PUT /v1/connect/ca/configuration, on whichever server got it: the new configuration, and a new
        root when it changes the key. The command carries the configuration index read here, so a change
        that raced it elsewhere refuses it instead of being overwritten."""
        if state:
            raise Invalid("Provider State is read-only. It must be omitted or identical to the current value")
        if provider != PROVIDER:
            raise Failed(f'could not initialize provider: unknown CA provider "{provider}"')
        config, private_key, root_cert = parse_config(raw)
        doc = {"Provider": provider, "Config": config, "ForceWithoutCrossSigning": force}
        await self.replica.barrier()
        async with self._lock:
            current, active, cluster_id, old_key = self.replica.read(
                lambda s: (s.ca.config, s.ca.active(), s.ca.cluster_id, s.ca.signing_key))
            if current is None or active is None:
                raise Failed("internal error: CA provider is nil")
            old_root = x509.load_pem_x509_certificate(active["RootCert"].encode())
            loop = asyncio.get_running_loop()
            if private_key:
                key, cert = await loop.run_in_executor(None, brought_root, private_key, root_cert, config, cluster_id)
                # Re-applying the same key (a config file applied twice) is not a rotation; another key or
                # another certificate for it is.
                rotate = key_id(key.public_key()) != key_id(old_root.public_key()) or bool(
                    root_cert and root_cert.strip() != active["RootCert"].strip())
            else:
                rotate = rotates(current["Config"], config)
                if rotate:
                    key, cert = await loop.run_in_executor(None, new_root, config, cluster_id)
            expect = current["ModifyIndex"]
            if not rotate:
                if current["Config"] != config:
                    await self.replica.apply(CAConfigure(expect=expect, config=doc))
                return
            cross = [] if force else [cert_pem(cross_sign(cert, old_root, load_key(old_key)))]
            root = root_row(cert, cluster_id, cross)
            await self.replica.apply(CAConfigure(expect=expect, config=doc, root=root, key=key_pem(key)))
            log.info("CA root rotated", old=active["ID"], new=root["ID"], cross_signed=not force)

    async def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign an agent's leaf CSR (leader only): Consul's checks, the rate limit, then the certificate
        with the active root's intermediates after it."""
        csr_pem, service = payload.get("csr"), payload.get("service")
        if not isinstance(csr_pem, str) or not isinstance(service, str) or not service:
            raise Invalid("a CSR and the service it is for are required")
        active, doc, key_text, trust_domain, index = self.replica.read(
            lambda s: (s.ca.active(), s.ca.config, s.ca.signing_key, s.ca.trust_domain, s.index))
        if active is None or doc is None:
            raise Failed(UNINITIALIZED)
        config = doc["Config"]
        csr, uri = check_csr(csr_pem, service, trust_domain, self.datacenter)
        await self.bucket.take(float(config["CSRMaxPerSecond"]))
        root, key = self._signing(active, key_text)
        if root.not_valid_after_utc < datetime.now(UTC):
            raise Failed(f"root expired: certificate expired, expiration date: {active['NotAfter']}")
        leaf = sign_leaf(csr, uri, root, key, seconds(config, "LeafCertTTL"))
        chain = cert_pem(leaf) + "".join(p if p.endswith("\n") else p + "\n" for p in active["IntermediateCerts"])
        return {"SerialNumber": colon_hex(leaf.serial_number.to_bytes((leaf.serial_number.bit_length() + 7) // 8)),
                "CertPEM": chain, "Service": service, "ServiceURI": uri,
                "ValidAfter": rfc3339(leaf.not_valid_before_utc), "ValidBefore": rfc3339(leaf.not_valid_after_utc),
                "CreateIndex": index, "ModifyIndex": index}

    def _signing(self, active: dict[str, Any], key_text: str) -> tuple[x509.Certificate, PrivateKey]:
        """The active root and its key, parsed once per root rather than once per CSR."""
        if self._signer is None or self._signer[0] != active["ID"]:
            self._signer = (active["ID"], x509.load_pem_x509_certificate(active["RootCert"].encode()),
                            load_key(key_text))
        return self._signer[1], self._signer[2]
