"""SPIFFE IDs as Consul's Connect uses them: a service's ID is the URI SAN of its leaf certificates
(``spiffe://<trust domain>/ns/<namespace>/dc/<datacenter>/svc/<service>``); a root's is the bare trust
domain."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

WILDCARD = "*"
DEFAULT_NS = "default"
# Consul's SPIFFE ID of a service; the partition segment is Enterprise and must be the default one.
_SERVICE_PATH = re.compile(r"^(?:/ap/([^/]+))?/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
# What a leaf CSR must carry, matched as Consul's CA matches it (the raw URI, no decoding).
CSR_SERVICE_ID = re.compile(r"spiffe://([^/]+)/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)")


def service_uri(trust_domain: str, datacenter: str, service: str, namespace: str = DEFAULT_NS) -> str:
    """A service's SPIFFE ID, the URI SAN of its leaf certificates."""
    return f"spiffe://{trust_domain}/ns/{namespace}/dc/{datacenter}/svc/{service}"


def trust_domain_uri(cluster_id: str) -> str:
    """A root certificate's URI SAN: the cluster's trust domain."""
    return f"spiffe://{cluster_id}.consul"


class NotAService(ValueError):
    """A SPIFFE ID that is well formed but names something other than a service (an agent, a server)."""


@dataclass(frozen=True)
class SpiffeService:
    trust_domain: str
    namespace: str
    datacenter: str
    service: str
    partition: str = DEFAULT_NS


def parse_spiffe(uri: str) -> SpiffeService:
    """The service a certificate's SPIFFE URI names; ValueError if it is no Connect identifier at all,
    NotAService if it names something else."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "spiffe" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not a SPIFFE ID: {uri!r}")
    m = _SERVICE_PATH.match(parts.path)
    if m is None:
        raise NotAService(f"not a service identifier: {uri!r}")
    partition, ns, dc, svc = (unquote(g) if g else g for g in m.groups())
    return SpiffeService(parts.netloc.lower(), ns, dc, svc, partition or DEFAULT_NS)
