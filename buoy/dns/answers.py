"""Records and whole responses, encoded to fit their transport as Consul's DNS does.

Answers are built as groups, one per instance (its answer records and the additional records that go with
them, such as an SRV target's address), so that shuffling, ``a_record_limit`` and truncation keep or drop
an instance together with its additional records.

Limits (Consul's): over UDP without EDNS at most min(udp_answer_limit, 8) answers and 512 bytes; with EDNS
the client's buffer size (at most 65,467); over TCP 65,535 bytes and 4,096 answers (1,024 SRV). When
answers had to be left out, the TC bit is set only with ``enable_truncate``.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import permutations

from dnslib import (
    AAAA,
    CNAME,
    NS,
    PTR,
    QTYPE,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)

from buoy.dns.names import hex_ip
from buoy.dns.settings import Settings
from buoy.dns.view import Instance, Node

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
ROTATION = 8  # encodings per cached answer, handed out in turn
MAX_UDP_ANSWERS = 8  # Consul's ceiling on udp_answer_limit
MIN_UDP, MAX_UDP = 512, 65467
ECS = 8  # EDNS Client Subnet option code

Group = tuple[list[RR], list[RR]]  # (answers, additional records) of one instance


@dataclass(frozen=True)
class Query:
    """The question of a parsed query and what the response must echo or respect."""

    id: int
    rd: bool
    cd: bool
    qname: DNSLabel  # as asked: answers repeat the asker's spelling
    qtype: int
    qclass: int
    opt: RR | None  # the client's EDNS OPT record
    tcp: bool

    def max_size(self) -> int:
        if self.tcp:
            return 65535
        if self.opt is None:
            return MIN_UDP
        return min(max(self.opt.rclass, MIN_UDP), MAX_UDP)


def header_only(query: bytes, rcode: int) -> bytes:
    """A response that carries only a header: for queries that cannot be parsed or are refused outright."""
    flags = struct.unpack_from("!H", query, 2)[0]
    # QR set; opcode and RD kept from the query (as miekg/dns, under Consul, does); the rest cleared.
    flags = 0x8000 | (flags & 0x7900) | rcode
    return query[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def _opt(q: Query) -> list[RR]:
    """The response's OPT: the client's buffer size echoed (as Consul does), ECS echoed with scope 0."""
    if q.opt is None:
        return []
    opts = []
    for o in q.opt.rdata or ():
        if o.code == ECS and len(o.data) >= 4:
            opts.append(EDNSOption(ECS, o.data[:3] + b"\x00" + o.data[4:]))  # scope 0: valid for everyone
    return [RR(".", QTYPE.OPT, rclass=q.opt.rclass, ttl=0, rdata=opts)]


def _pack(q: Query, rcode: int, answers: list[RR], authority: Sequence[RR], additional: list[RR], *,
          aa: bool, ra: bool, tc: bool) -> bytes:
    header = DNSHeader(id=q.id, qr=1, opcode=0, aa=int(aa), tc=int(tc), rd=int(q.rd), ra=int(ra), cd=int(q.cd),
                       rcode=rcode)
    record = DNSRecord(header, questions=[DNSQuestion(q.qname, q.qtype, q.qclass)], rr=answers,
                       auth=list(authority), ar=additional + _opt(q))
    return bytes(record.pack())


def _assemble(groups: Sequence[Group]) -> tuple[list[RR], list[RR]]:
    answers: list[RR] = []
    additional: list[RR] = []
    seen = set()
    for ans, extra in groups:
        answers.extend(ans)
        for rr in extra:  # two instances on one node share its address and meta
            key = (str(rr.rname).lower(), rr.rtype, str(rr.rdata))
            if key not in seen:
                seen.add(key)
                additional.append(rr)
    return answers, additional


def encode(q: Query, settings: Settings, groups: Sequence[Group], *, rcode: int = NOERROR,
           authority: Sequence[RR] = (), additional: Sequence[RR] = (), aa: bool = True, ra: bool = False) -> bytes:
    """One response holding as many of ``groups`` (in order) as the transport allows."""
    limit = len(groups)
    if q.tcp:
        limit = min(limit, 1024 if q.qtype == QTYPE.SRV else 4096)
    elif q.max_size() == MIN_UDP:
        limit = min(limit, settings.udp_answer_limit, MAX_UDP_ANSWERS)
    trimmed = limit < len(groups)
    max_size = q.max_size() if q.tcp else q.max_size() - 8  # Consul leaves room for the UDP header

    def pack(n: int, auth: Sequence[RR]) -> bytes:
        answers, extra = _assemble(groups[:n])
        return _pack(q, rcode, answers, auth, extra + list(additional), aa=aa, ra=ra,
                     tc=trimmed and settings.enable_truncate)

    out = pack(limit, authority)
    if len(out) <= max_size:
        return out
    authority = ()  # the authority section goes first, as in Consul
    out = pack(limit, authority)
    if len(out) <= max_size or limit <= 1:
        return out
    # The most groups that fit, found by bisection; at least one goes out even if it alone is too big.
    trimmed = True
    lo, hi = 1, limit - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(pack(mid, authority)) <= max_size:
            lo = mid
        else:
            hi = mid - 1
    return pack(lo, authority)


def orderings(groups: list[Group]) -> list[list[Group]]:
    """The shuffles a cached answer rotates through: every order of up to three, else ROTATION random ones."""
    if len(groups) <= 1:
        return [groups]
    if len(groups) <= 3:
        orders = [list(p) for p in permutations(groups)]
        random.shuffle(orders)
        return orders
    return [random.sample(groups, len(groups)) for _ in range(ROTATION)]


# ---- records ------------------------------------------------------------------------------------------

def fqdn(*parts: str | tuple[bytes, ...]) -> str:
    """A name from labels and domains (label tuples): ``fqdn("web", "node", (b"consul",))``."""
    out: list[str] = []
    for p in parts:
        if isinstance(p, tuple):
            out.extend(label.decode() for label in p)
        else:
            out.append(p)
    return ".".join(out) + "."


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def address_records(name: DNSLabel | str, address: str, qtype: int, ttl: int) -> list[RR]:
    """A or AAAA for an IP (when the question type wants that family), CNAME for a host name."""
    ip = _ip(address)
    if ip is None:
        return [RR(name, QTYPE.CNAME, ttl=ttl, rdata=CNAME(address.rstrip(".") + "."))] if address else []
    if ip.version == 4 and qtype in (QTYPE.A, QTYPE.ANY, QTYPE.SRV, QTYPE.NS, QTYPE.SOA):
        return [RR(name, QTYPE.A, ttl=ttl, rdata=A(str(ip)))]
    if ip.version == 6 and qtype in (QTYPE.AAAA, QTYPE.ANY, QTYPE.SRV, QTYPE.NS, QTYPE.SOA):
        return [RR(name, QTYPE.AAAA, ttl=ttl, rdata=AAAA(str(ip)))]
    return []


def _rfc1464(key: str, value: str) -> str:
    key = key.replace("`", "``").replace("=", "`=")
    stripped = key.lstrip(" ")
    key = "` " * (len(key) - len(stripped)) + stripped
    stripped = key.rstrip(" ")
    key = stripped + "` " * (len(key) - len(stripped))
    return f"{key}={value.replace('`', '``')}"


def meta_txt(name: DNSLabel | str, node: Node, ttl: int) -> list[RR]:
    """One TXT per node meta key: ``key=value`` (RFC 1464), or the bare value for ``rfc1035-`` keys."""
    out = []
    for key, value in node.meta:
        text = (value if key.lower().startswith("rfc1035-") else _rfc1464(key, value)).encode()
        chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [b""]
        out.append(RR(name, QTYPE.TXT, ttl=ttl, rdata=TXT(chunks)))
    return out


def soa(settings: Settings, domain: tuple[bytes, ...]) -> RR:
    name = fqdn(domain)
    times = (int(time.time()), settings.soa_refresh, settings.soa_retry, settings.soa_expire, settings.soa_min_ttl)
    return RR(name, QTYPE.SOA, ttl=settings.soa_min_ttl,
              rdata=SOA(fqdn("ns", domain), fqdn("hostmaster", domain), times))


def node_name(node: Node, settings: Settings, domain: tuple[bytes, ...]) -> str:
    return fqdn(node.name, "node", node.datacenter or settings.datacenter, domain)


def service_groups(q: Query, instances: Iterable[Instance], settings: Settings, domain: tuple[bytes, ...],
                   ttl: int) -> list[Group]:
    """One group per distinct instance answer, in the order given."""
    groups: list[Group] = []
    seen = set()
    cname: list[Group] = []
    for inst in instances:
        if not inst.address:
            continue
        if q.qtype == QTYPE.SRV:
            key: object = (inst.node.name, inst.address, inst.port)
            if key not in seen:
                seen.add(key)
                groups.append(_srv_group(q, inst, settings, domain, ttl))
            continue
        records = address_records(q.qname, inst.address, q.qtype, ttl)
        if not records or inst.address in seen:
            continue
        seen.add(inst.address)
        if records[0].rtype == QTYPE.CNAME:
            cname = cname or [(records, [])]  # a host name answers only when no instance has an IP
        else:
            groups.append((records, []))
    return groups or cname


def _srv_group(q: Query, inst: Instance, settings: Settings, domain: tuple[bytes, ...], ttl: int) -> Group:
    node_fqdn = node_name(inst.node, settings, domain)
    if _ip(inst.address) is None:
        target = inst.address.rstrip(".") + "."  # a host name: the client resolves it
    elif inst.service_address:
        target = fqdn(hex_ip(inst.address), "addr", inst.node.datacenter or settings.datacenter, domain)
    else:
        target = node_fqdn
    srv = RR(q.qname, QTYPE.SRV, ttl=ttl, rdata=SRV(priority=1, weight=inst.weight, port=inst.port, target=target))
    extra = address_records(target, inst.address, QTYPE.SRV, ttl) if _ip(inst.address) else []
    if settings.node_meta_txt:
        extra += meta_txt(node_fqdn, inst.node, ttl)
    return [srv], extra


def node_group(q: Query, node: Node, settings: Settings) -> Group:
    """(answers, additional) for ``<node>.node``: its address, and its meta as TXT."""
    ttl = settings.node_ttl
    if q.qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY, QTYPE.TXT):
        return [], []
    answers = [] if q.qtype == QTYPE.TXT else address_records(q.qname, node.address, q.qtype, ttl)
    txt = meta_txt(q.qname, node, ttl)
    if q.qtype in (QTYPE.TXT, QTYPE.ANY):
        return answers + txt, []
    return answers, txt if settings.node_meta_txt else []


def ns_groups(servers: Iterable[Instance], settings: Settings, domain: tuple[bytes, ...]) -> list[Group]:
    """One NS record (and its address as glue) per server."""
    groups: list[Group] = []
    for inst in servers:
        target = node_name(inst.node, settings, domain)
        glue = address_records(target, inst.node.address, QTYPE.NS, settings.node_ttl)
        groups.append(([RR(fqdn(domain), QTYPE.NS, ttl=settings.node_ttl, rdata=NS(target))], glue))
    return groups


def ptr(q: Query, target: str) -> RR:
    return RR(q.qname, QTYPE.PTR, ttl=0, rdata=PTR(target))  # Consul's PTR TTL is always 0
