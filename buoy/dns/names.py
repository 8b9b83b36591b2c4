"""What a query name asks for: Consul's name forms under the domain (or the alternate domain), reverse
lookups under ``arpa``, or a name outside both (for the recursors).

    [<tag>.]<svc>.service[.<dc>[.dc]].<domain>      _<svc>._<tag|tcp>[.service][.<dc>].<domain>  (SRV)
    <svc>.connect[.<dc>].<domain>                    <node>.node[.<dc>].<domain>
    <query>.query[.<dc>].<domain>                    _<query>._tcp.query[.<dc>].<domain>
    <hex-ip>.addr[.<dc>].<domain>                    <reversed-ip>.in-addr.arpa / ip6.arpa
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from buoy.dns.settings import Settings

QTYPE_SRV = 33
_KINDS = frozenset({"service", "connect", "node", "query", "addr", "virtual", "ingress"})
_IN_ADDR = (b"in-addr", b"arpa")
_IP6 = (b"ip6", b"arpa")


class Kind(Enum):
    SERVICE = "service"
    CONNECT = "connect"
    NODE = "node"
    QUERY = "query"
    ADDR = "addr"
    PTR = "ptr"
    APEX = "apex"  # the domain itself: SOA and NS
    INVALID = "invalid"  # under the domain but no name Consul answers: NXDOMAIN
    OUTSIDE = "outside"  # neither the domain nor arpa: the recursors' business


@dataclass(frozen=True)
class Lookup:
    kind: Kind
    domain: tuple[bytes, ...] = ()  # the domain the question used; answers name things under it
    name: str = ""  # service, node or prepared query
    tag: str = ""  # "" matches every instance
    datacenter: str = ""  # "" means this agent's
    ip: str = ""  # addr and PTR lookups


def parse(labels: tuple[bytes, ...], qtype: int, settings: Settings) -> Lookup:
    """The lookup a question name (its labels, folded to lower case) stands for."""
    for domain in sorted((settings.domain, settings.alt_domain), key=len, reverse=True):
        if domain and labels[-len(domain):] == domain:
            return _in_domain(labels[:-len(domain)], qtype, domain)
    if labels[-2:] in (_IN_ADDR, _IP6):
        return Lookup(Kind.PTR, ip=_reverse_ip(labels[:-2], labels[-2] == b"ip6"))
    return Lookup(Kind.OUTSIDE)


def _in_domain(raw: tuple[bytes, ...], qtype: int, domain: tuple[bytes, ...]) -> Lookup:
    if not raw:
        return Lookup(Kind.APEX, domain)
    labels = [label.decode() for label in raw]
    invalid = Lookup(Kind.INVALID, domain)
    for i in range(len(labels) - 1, -1, -1):
        if labels[i] in _KINDS:
            kind, parts, suffix = labels[i], labels[:i], labels[i + 1:]
            break
        # RFC 2782 names may leave out ".service" when they ask for SRV.
        if qtype == QTYPE_SRV and labels[i].startswith("_"):
            kind, parts, suffix = "service", labels[:i + 1], labels[i + 1:]
            break
    else:
        return invalid
    if not parts or kind in ("virtual", "ingress"):
        return invalid
    dc = _datacenter(suffix, allow_dc_label=kind != "query")
    if dc is None:
        return invalid
    rfc2782 = len(parts) >= 2 and parts[0].startswith("_") and parts[-1].startswith("_")
    if kind == "service":
        if rfc2782 and len(parts) == 2:
            tag = parts[1][1:]
            return Lookup(Kind.SERVICE, domain, parts[0][1:], "" if tag == "tcp" else tag, dc)
        # A tag may hold dots: every label before the service name is part of it.
        return Lookup(Kind.SERVICE, domain, parts[-1], ".".join(parts[:-1]), dc)
    if kind == "connect":
        return Lookup(Kind.CONNECT, domain, parts[-1], datacenter=dc)
    if kind == "node":
        return Lookup(Kind.NODE, domain, ".".join(parts), datacenter=dc)
    if kind == "query":
        # _<name>._<proto>.query: the protocol label is ignored; a name may hold dots.
        name = ".".join(parts[:-1])[1:] if rfc2782 else ".".join(parts)
        return Lookup(Kind.QUERY, domain, name, datacenter=dc)
    ip = _hex_ip(parts)
    return Lookup(Kind.ADDR, domain, datacenter=dc, ip=ip) if ip else invalid


def _datacenter(suffix: list[str], allow_dc_label: bool) -> str | None:
    """The datacenter after the kind label: none, ``<dc>`` or ``<dc>.dc``; None when it is neither."""
    if not suffix:
        return ""
    if len(suffix) == 1:
        return suffix[0]
    if allow_dc_label and len(suffix) == 2 and suffix[1] == "dc":
        return suffix[0]
    return None


def _hex_ip(parts: list[str]) -> str:
    if len(parts) != 1 or len(parts[0]) not in (8, 32):
        return ""
    try:
        return str(ipaddress.ip_address(bytes.fromhex(parts[0])))
    except ValueError:
        return ""


def _reverse_ip(labels: tuple[bytes, ...], v6: bool) -> str:
    """The address a reverse name stands for, or "" when it is not a whole address."""
    try:
        text = [label.decode("ascii") for label in reversed(labels)]
        if v6:
            if len(text) != 32 or any(len(n) != 1 for n in text):
                return ""
            return str(ipaddress.IPv6Address(bytes.fromhex("".join(text))))
        if len(text) != 4 or not all(t.isdigit() for t in text):
            return ""
        return str(ipaddress.IPv4Address(".".join(text)))
    except ValueError:  # not ASCII, not hex, an octet over 255
        return ""


def canonical_ip(text: str) -> str:
    """The one spelling of an address that reverse names decode to, or "" for a host name."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


def hex_ip(ip: str) -> str:
    """The ``.addr`` label of an address (``10.0.0.1`` -> ``0a000001``)."""
    return ipaddress.ip_address(ip).packed.hex()
