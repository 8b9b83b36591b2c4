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
import hashlib
import math
import re
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from buoy.core.errors import Failed, Forbidden, Invalid, RateLimited
from buoy.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from buoy.server.server import Server

log = structlog.get_logger("buoy.ca")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

PROVIDER = "consul"
DEFAULT_CONFIG: dict[str, Any] = {
    "LeafCertTTL": "72h",
    "IntermediateCertTTL": "8760h",
    "RootCertTTL": "87600h",
    "RotationPeriod": "2160h",
    "PrivateKeyType": "ec",
    "PrivateKeyBits": 256,
    "CSRMaxPerSecond": 50,
}
DURATIONS = ("LeafCertTTL", "IntermediateCertTTL", "RootCertTTL", "RotationPeriod")
# Changing one of these needs a new key, so it rotates the root.
ROTATING = ("PrivateKeyType", "PrivateKeyBits", "RotationPeriod")
# Consul refuses leaves shorter than an hour. Buoy goes down to 10 s so that renewal can be watched in
# tests and demos; production settings should stay in hours.
MIN_LEAF_TTL = 10.0
MAX_LEAF_TTL = 365 * 86400.0
MIN_INTERMEDIATE_TTL = 3 * 3600.0
MAX_DURATION = (2**63 - 1) / 1e9  # Go's time.Duration, about 292 years
EC_CURVES: dict[int, type[ec.EllipticCurve]] = {
    224: ec.SECP224R1, 256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}
RSA_BITS = (2048, 4096)
CLOCK_SKEW = 60.0  # certificates start this far in the past, so a server a little ahead is not refused
CROSS_SIGNED_LIFE = 7 * 86400.0  # Consul's: only needed until every proxy has the new root
CSR_WAIT = 0.5  # how long a CSR may wait for the rate limiter before it is refused (Consul's csrLimitWait)
RATE_LIMITED = "Rate limit reached, try again later"
UNINITIALIZED = "CA is uninitialized and unable to sign certificates yet: no root certificate"
INIT_RETRY = 1.0
PRUNE_EVERY = 60.0
SERVICE_ID = re.compile(r"spiffe://([^/]+)/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)")
LEAF_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                           data_encipherment=True, key_agreement=True, key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False)
CA_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


# ---- names and encodings shared with the agents ----------------------------------------------------

def service_uri(trust_domain: str, datacenter: str, service: str) -> str:
    """A service's SPIFFE ID, the URI SAN of its leaf certificates."""
    return f"spiffe://{trust_domain}/ns/default/dc/{datacenter}/svc/{service}"


def colon_hex(data: bytes) -> str:
    """Consul's rendering of key IDs, fingerprints and serials: lower-case hex pairs joined by colons."""
    return ":".join(f"{b:02x}" for b in data)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_id(public_key: Any) -> bytes:
    """Consul's key ID: SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def subject_key_id(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectKeyIdentifier (a root brought in by the user may compute it differently)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return key_id(cert.public_key())


def generate_key(key_type: str, bits: int) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(EC_CURVES[bits]())


def key_pem(key: PrivateKey) -> str:
    """The PEM form Consul uses (``EC PRIVATE KEY`` / ``RSA PRIVATE KEY``)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_info(public_key: Any) -> tuple[str, int]:
    return ("rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec", public_key.key_size)


# ---- configuration ---------------------------------------------------------------------------------

_CANONICAL = {name.lower(): name for name in (*DEFAULT_CONFIG, "PrivateKey", "RootCert")}


def _config_error(reason: str) -> Failed:
    return Failed(f"error configuring provider: {reason}")


def parse_config(raw: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The provider configuration of a PUT: every setting with its default filled in (keys matched the way
    Consul's decoder matches them, so ``csr_max_per_second`` is ``CSRMaxPerSecond``), plus the
    ``PrivateKey`` and ``RootCert`` it brings, which are used once and never stored in the configuration.
    Settings Buoy does not know are kept as given, as Consul keeps them."""
    given = {_CANONICAL.get(str(k).lower().replace("_", ""), str(k)): v for k, v in raw.items() if v is not None}
    private_key, root_cert = given.pop("PrivateKey", ""), given.pop("RootCert", "")
    if not isinstance(private_key, str) or not isinstance(root_cert, str):
        raise _config_error("error decoding config: PrivateKey and RootCert must be PEM strings")
    if root_cert and not private_key:
        raise _config_error("must provide a private key when providing a root cert")
    config = dict(DEFAULT_CONFIG, **given)
    for name in DURATIONS:
        value = config[name]
        try:
            # A JSON number is a Go time.Duration: nanoseconds.
            if isinstance(value, int | float) and not isinstance(value, bool):
                config[name] = format_duration(value / 1e9)
            if not abs(parse_duration(config[name])) <= MAX_DURATION:  # NaN fails this too
                raise ValueError
        except (TypeError, ValueError, AttributeError, OverflowError):
            raise _config_error(f"error decoding config: '{name}': time: invalid duration {value!r}") from None
    config["PrivateKeyType"] = str(config["PrivateKeyType"])
    config["PrivateKeyBits"] = _number(config, "PrivateKeyBits", int)
    config["CSRMaxPerSecond"] = _number(config, "CSRMaxPerSecond", float)
    if config["CSRMaxPerSecond"] < 0:
        raise _config_error("CSRMaxPerSecond must not be negative")
    _validate(config)
    return config, private_key, root_cert


def _number(config: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    value = config[name]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if not math.isfinite(number):
            raise ValueError
    except (TypeError, ValueError):
        raise _config_error(f"error decoding config: '{name}': expected a number, got {value!r}") from None
    # Keep integers integral so the configuration reads back the way it was written.
    return int(number) if number == int(number) else number


def seconds(config: dict[str, Any], name: str) -> float:
    return parse_duration(config[name])


def _validate(config: dict[str, Any]) -> None:
    """Consul's checks (CommonCAProviderConfig.Validate), with Buoy's shorter minimum leaf TTL."""
    leaf, inter, root = (seconds(config, n) for n in ("LeafCertTTL", "IntermediateCertTTL", "RootCertTTL"))
    if root < inter:
        raise _config_error("root cert TTL is set and is not greater than intermediate cert ttl. root cert ttl: "
                            f"{config['RootCertTTL']}, intermediate cert ttl: {config['IntermediateCertTTL']}")
    if leaf < MIN_LEAF_TTL:
        raise _config_error(f"leaf cert TTL must be greater or equal than {format_duration(MIN_LEAF_TTL)}")
    if leaf > MAX_LEAF_TTL:
        raise _config_error(f"leaf cert TTL must be less than {format_duration(MAX_LEAF_TTL)}")
    if inter < MIN_INTERMEDIATE_TTL:
        raise _config_error("Intermediate Cert TTL must be greater or equal than 3h")
    if inter < 3 * leaf:
        raise _config_error(f"Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL "
                            f"(>={format_duration(3 * leaf)}).")
    key_type, bits = config["PrivateKeyType"], config["PrivateKeyBits"]
    if key_type == "ec" and bits not in EC_CURVES:
        raise _config_error("EC key length must be one of (224, 256, 384, 521) bits")
    if key_type == "rsa" and bits not in RSA_BITS:
        raise _config_error("RSA key length must be 2048 or 4096 bits")
    if key_type not in ("ec", "rsa"):
        raise _config_error("private key type must be either 'ec' or 'rsa'")


def _rotates(old: dict[str, Any], new: dict[str, Any]) -> bool:
    for name in ROTATING:
        before, after = old.get(name), new[name]
        if name in DURATIONS:
            before, after = parse_duration(before or "0"), parse_duration(after)
        if before != after:
            return True
    return False


# ---- certificates ----------------------------------------------------------------------------------

def _ca_name(cluster_id: str) -> x509.Name:
    """Consul's CA common name: ``pri-<uid>.consul.ca.<trust domain, first 8>.consul``; the random part
    keeps successive roots distinguishable by subject."""
    uid = secrets.token_hex(4)
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pri-{uid}.consul.ca.{cluster_id[:8]}.consul")])


def make_root(key: PrivateKey, cluster_id: str, life: float) -> x509.Certificate:
    now = datetime.now(UTC)
    name = _ca_name(cluster_id)
    kid = key_id(key.public_key())
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(secrets.randbits(63) | 1)
               .not_valid_before(now - timedelta(seconds=CLOCK_SKEW)).not_valid_after(now + timedelta(seconds=life))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(CA_USAGE, critical=True)
               .add_extension(x509.SubjectKeyIdentifier(kid), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(kid, None, None), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                   f"spiffe://{cluster_id}.consul")]), critical=False))
    return builder.sign(key, hashes.SHA256())


def cross_sign(new_root: x509.Certificate, old_root: x509.Certificate, old_key: PrivateKey) -> x509.Certificate:
    """The new root's certificate issued by the old root: a leaf of the new root chains to the old one
    through it."""
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(new_root.subject).issuer_name(old_root.subject).public_key(new_root.public_key())
               .serial_number(secrets.randbits(63) | 1)
               .not_valid_before(now - timedelta(seconds=CLOCK_SKEW))
               .not_valid_after(now + timedelta(seconds=CROSS_SIGNED_LIFE)))
    for ext in new_root.extensions:
        if ext.oid != ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier(subject_key_id(old_root), None, None), critical=False)
    return builder.sign(old_key, hashes.SHA256())


def root_row(cert: x509.Certificate, cluster_id: str, intermediates: list[str]) -> dict[str, Any]:
    """Consul's ``CARoot`` for a root certificate (indexes are added when the command applies)."""
    key_type, bits = key_info(cert.public_key())
    return {
        "ID": colon_hex(cert.fingerprint(hashes.SHA1())),  # Consul's root ID: the SHA-1 fingerprint
        "Name": "Consul CA Root Cert",
        "SerialNumber": cert.serial_number,
        "SigningKeyID": colon_hex(subject_key_id(cert)),
        "ExternalTrustDomain": cluster_id,
        "NotBefore": rfc3339(cert.not_valid_before_utc),
        "NotAfter": rfc3339(cert.not_valid_after_utc),
        "RootCert": cert_pem(cert),
        "IntermediateCerts": intermediates,
        "Active": True,
        "PrivateKeyType": key_type,
        "PrivateKeyBits": bits,
        "RotatedOutAt": 0.0,
    }


def _load_key(text: str) -> PrivateKey:
    """A key this CA stored itself (so known to be EC or RSA)."""
    key = serialization.load_pem_private_key(text.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def _new_root(config: dict[str, Any], cluster_id: str) -> tuple[PrivateKey, x509.Certificate]:
    key = generate_key(config["PrivateKeyType"], config["PrivateKeyBits"])
    return key, make_root(key, cluster_id, seconds(config, "RootCertTTL"))


def _brought_root(private_key: str, root_cert: str, config: dict[str, Any],
                  cluster_id: str) -> tuple[PrivateKey, x509.Certificate]:
    """The key (and root certificate, made from the key when not given) a PUT brought in."""
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise _config_error(f"error parsing private key: {' '.join(str(e).split())}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise _config_error("private key type must be either 'ec' or 'rsa'")
    if not root_cert:
        return key, make_root(key, cluster_id, seconds(config, "RootCertTTL"))
    try:
        cert = x509.load_pem_x509_certificate(root_cert.encode())
    except ValueError as e:
        raise _config_error(f"error parsing root cert: {' '.join(str(e).split())}") from None
    if key_id(cert.public_key()) != key_id(key.public_key()):
        raise _config_error("the root cert's public key does not match the private key")
    return key, cert


def check_csr(csr_pem: str, service: str, trust_domain: str,
              datacenter: str) -> tuple[x509.CertificateSigningRequest, str]:
    """Consul's checks of a leaf CSR: one SPIFFE service ID, for the service asked for, in this datacenter
    and trust domain. Returns the CSR and its URI."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as e:
        raise Invalid(f"failed to parse CSR: {' '.join(str(e).split())}") from None
    if not csr.is_signature_valid:
        raise Invalid("CSR signature is invalid")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise Invalid("CSR SAN contains an invalid number of URIs: 0") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise Invalid(f"CSR SAN contains an invalid number of URIs: {len(uris)}")
    if san.get_values_for_type(x509.RFC822Name):
        raise Invalid("CSR SAN does not allow specifying email addresses")
    match = SERVICE_ID.fullmatch(uris[0])
    if match is None:
        raise Invalid(f"SPIFFE ID is not in the expected format: {uris[0]}")
    host, namespace, dc, name = match.groups()
    if namespace != "default":
        raise Invalid(f'SPIFFE ID in CSR names namespace "{namespace}"; only "default" exists')
    if name != service:
        # Consul's answer when the caller may not write the service the CSR names.
        raise Forbidden(f'Permission denied: the CSR is for service "{name}", the request for "{service}"')
    if dc != datacenter:
        raise Invalid(f"SPIFFE ID in CSR from a different datacenter: {dc}, we are {datacenter}")
    if host != trust_domain:
        raise Invalid(f"SPIFFE ID in CSR from a different trust domain: {host}, we are {trust_domain}")
    return csr, uris[0]


def sign_leaf(csr: x509.CertificateSigningRequest, uri: str, root: x509.Certificate, key: PrivateKey,
              ttl: float) -> x509.Certificate:
    """A leaf as Consul's provider issues it: no subject, the SPIFFE ID as a critical URI SAN, client and
    server authentication, valid from a little in the past for LeafCertTTL."""
    start = datetime.now(UTC) - timedelta(seconds=min(CLOCK_SKEW, ttl / 4))
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([])).issuer_name(root.subject).public_key(csr.public_key())
               .serial_number(int.from_bytes(secrets.token_bytes(16)) >> 1 or 1)
               .not_valid_before(start).not_valid_after(start + timedelta(seconds=ttl))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(LEAF_USAGE, critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier(key_id(csr.public_key())), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(subject_key_id(root), None, None), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True))
    return builder.sign(key, hashes.SHA256())


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

    def __init__(self, server: Server) -> None:
        self.server = server
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
        await self.server.barrier()  # see a root committed by an earlier leader before making one
        store = self.server.store
        async with self._lock:
            with store.lock:
                if store.ca.active() is not None:
                    return
                cluster_id = store.ca.cluster_id or str(uuid.uuid4())
            # The first configuration is the config files' connect.ca_config (validated at load), if any.
            config, private_key, root_cert = parse_config(self.server.cfg.connect_ca_config)
            loop = asyncio.get_running_loop()
            if private_key:
                key, cert = await loop.run_in_executor(None, _brought_root, private_key, root_cert, config, cluster_id)
            else:
                key, cert = await loop.run_in_executor(None, _new_root, config, cluster_id)
            doc = {"Provider": PROVIDER, "Config": config, "ForceWithoutCrossSigning": False}
            await self.server.apply({"op": "ca.init", "cluster_id": cluster_id, "config": doc,
                                     "root": root_row(cert, cluster_id, []), "key": key_pem(key)})
            log.info("mesh CA initialized", trust_domain=f"{cluster_id}.consul")

    async def _prune(self) -> None:
        """Forget rotated-out roots after twice the leaf TTL (Consul's rule): their leaves are gone."""
        store = self.server.store
        now = time.time()
        with store.lock:
            if store.ca.config is None:
                return
            keep = 2 * seconds(store.ca.config["Config"], "LeafCertTTL")
            gone = [r["ID"] for r in store.ca.roots if not r["Active"] and r["RotatedOutAt"] + keep < now]
        if gone:
            log.info("pruning rotated-out CA roots", roots=gone)
            await self.server.duties.apply({"op": "ca.prune", "ids": gone})

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
        await self.server.barrier()
        store = self.server.store
        async with self._lock:
            with store.lock:
                current, active = store.ca.config, store.ca.active()
                if current is None or active is None:
                    raise Failed("internal error: CA provider is nil")
                current, active = dict(current), dict(active)
                cluster_id, old_key = store.ca.cluster_id, store.ca.signing_key
            old_root = x509.load_pem_x509_certificate(active["RootCert"].encode())
            cmd: dict[str, Any] = {"op": "ca.configure", "expect": current["ModifyIndex"], "config": doc}
            loop = asyncio.get_running_loop()
            if private_key:
                key, cert = await loop.run_in_executor(None, _brought_root, private_key, root_cert, config, cluster_id)
                # Re-applying the same key (a config file applied twice) is not a rotation; another key or
                # another certificate for it is.
                rotate = key_id(key.public_key()) != key_id(old_root.public_key()) or bool(
                    root_cert and root_cert.strip() != active["RootCert"].strip())
            else:
                rotate = _rotates(current["Config"], config)
                if rotate:
                    key, cert = await loop.run_in_executor(None, _new_root, config, cluster_id)
            if not rotate and current["Config"] == config:
                return
            if rotate:
                cross = [] if force else [cert_pem(cross_sign(cert, old_root, _load_key(old_key)))]
                cmd.update(root=root_row(cert, cluster_id, cross), key=key_pem(key))
            await self.server.apply(cmd)
            if rotate:
                log.info("CA root rotated", old=active["ID"], new=cmd["root"]["ID"], cross_signed=not force)

    async def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign an agent's leaf CSR (leader only): Consul's checks, the rate limit, then the certificate
        with the active root's intermediates after it."""
        csr_pem, service = payload.get("csr"), payload.get("service")
        if not isinstance(csr_pem, str) or not isinstance(service, str) or not service:
            raise Invalid("a CSR and the service it is for are required")
        store = self.server.store
        with store.lock:
            active = store.ca.active()
            if active is None or store.ca.config is None:
                raise Failed(UNINITIALIZED)
            active, key_text = dict(active), store.ca.signing_key
            trust_domain, config, index = store.ca.trust_domain, store.ca.config["Config"], store.index
        csr, uri = check_csr(csr_pem, service, trust_domain, self.server.cfg.datacenter)
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
                            _load_key(key_text))
        return self._signer[1], self._signer[2]
