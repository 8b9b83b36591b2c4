"""A proxy's TLS material: its service's leaf certificate and key, and the CA roots it trusts.

Each new leaf or root set builds a fresh pair of contexts (server side for the public listener, client side
for upstream connections). A connection takes the contexts current when it starts and keeps its own TLS
state for its whole life, so a rotation never disturbs an open connection. Both sides demand a certificate
that chains to one of the current roots; the SPIFFE ID inside is checked by the caller.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from buoy.core.spiffe import SpiffeService, parse_spiffe


class PeerRejected(Exception):
    """The peer's certificate chains to our roots but names no service we accept; ``reason`` is the metric
    label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    trust_domain: str
    serial: str  # of the leaf, for logs


def _context(purpose: int, chain_file: str, roots: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the maximum is left at 1.3, which both sides then prefer
    ctx.verify_mode = ssl.CERT_REQUIRED
    if purpose == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False  # identities are SPIFFE URIs, checked after the handshake
    pems = []
    for root in roots.get("Roots") or []:
        pems.append(root["RootCert"])
        pems.extend(root.get("IntermediateCerts") or [])
    ctx.load_verify_locations(cadata="\n".join(pems))
    ctx.load_cert_chain(chain_file)
    return ctx


def build(leaf: dict[str, Any], roots: dict[str, Any]) -> Contexts:
    # The ssl module loads a key only from a file: write it to a private temporary file, on this host only,
    # load both contexts from it, and remove it at once.
    fd, path = tempfile.mkstemp(prefix="buoy-leaf-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(leaf["CertPEM"].rstrip() + "\n" + leaf["PrivateKeyPEM"])
        server = _context(ssl.PROTOCOL_TLS_SERVER, path, roots)
        client = _context(ssl.PROTOCOL_TLS_CLIENT, path, roots)
    finally:
        os.unlink(path)
    return Contexts(server, client, str(roots.get("TrustDomain") or "").lower(), str(leaf.get("SerialNumber", "")))


def peer_service(sslobj: Any, trust_domain: str) -> SpiffeService:
    """The service named by the verified peer certificate of ``sslobj`` (an ``ssl.SSLObject``)."""
    cert = sslobj.getpeercert() if sslobj is not None else None
    if not cert:
        raise PeerRejected("no_certificate", "the peer sent no certificate")
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    if len(uris) != 1:
        raise PeerRejected("bad_identity", f"the peer certificate has {len(uris)} URI SANs, expected one")
    try:
        peer = parse_spiffe(uris[0])
    except ValueError as e:  # NotAService too: an agent's or a server's certificate is no service
        raise PeerRejected("bad_identity", str(e)) from None
    if peer.trust_domain != trust_domain:
        raise PeerRejected("other_trust_domain", f"the peer {uris[0]} is not in trust domain {trust_domain}")
    return peer
