"""One query in, one response out: the path a query takes when its answer is not cached.

Malformed input gets what Consul (miekg/dns) gives it: nothing for a packet shorter than a header or one
that is itself a response, NOTIMP for an opcode other than QUERY, FORMERR for a query without exactly one
question or one that cannot be parsed (names over 255 bytes, labels over 63). Buoy answers a class other
than IN or ANY under its domains with NOTIMP, where Consul would answer it as IN.
"""

from __future__ import annotations

import struct
from urllib.parse import quote

import structlog
from dnslib import QTYPE, DNSRecord

from buoy.api.client import APIError, Client, ClientError
from buoy.core.structs.query import read_execute_response
from buoy.dns import answers, cache, names
from buoy.dns.answers import FORMERR, NOERROR, NOTIMP, NXDOMAIN, REFUSED, SERVFAIL, Query, encode, header_only
from buoy.dns.names import Kind, Lookup, canonical_ip
from buoy.dns.recursor import Recursor
from buoy.dns.settings import Settings
from buoy.dns.view import Instance, LookupFailed, Views, Watch, healthy_instances
from buoy.durations import parse_duration

log = structlog.get_logger("buoy.dns")

CLASS_IN, CLASS_ANY = 1, 255
_ZONE_TRANSFERS = (QTYPE.AXFR, QTYPE.IXFR)
SERVERS = "consul"  # the service the servers register: the domain's name servers

# Encodings (None: ask the recursors), and the views they were built from (None: not cacheable).
Answer = tuple[list[bytes] | None, tuple[Watch, ...] | None]


def _wire_length(labels: tuple[bytes, ...]) -> int:
    return sum(len(label) + 1 for label in labels) + 1


class Handler:
    def __init__(self, settings: Settings, views: Views, recursor: Recursor, client: Client) -> None:
        self.settings = settings
        self.views = views
        self.recursor = recursor
        self.client = client
        self.ra = bool(settings.recursors)  # Consul offers recursion exactly when it has recursors

    async def handle(self, data: bytes, tcp: bool, table: cache.Table, key: bytes) -> bytes | None:
        """The response to ``data`` (None: send nothing). A cacheable answer is stored in ``table`` under
        ``key`` in the same step as it was built from the views, so no change can slip in between."""
        if len(data) < cache.HEADER:
            return None
        flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHH", data, 2)
        if flags & 0x8000:
            return None  # a response: answering it could start a loop
        if (flags >> 11) & 0x0F != 0:
            return header_only(data, NOTIMP)
        if qdcount != 1 or ancount > 1 or nscount > 1 or arcount > 2:  # miekg/dns's limits for a query
            return header_only(data, FORMERR)
        try:
            record = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises several types for malformed input; all mean FORMERR
            return header_only(data, FORMERR)
        question = record.q
        labels = question.qname.label
        opts = [rr for rr in record.ar if rr.rtype == QTYPE.OPT]
        if _wire_length(labels) > 255 or any(len(label) > 63 for label in labels) or len(opts) > 1:
            return header_only(data, FORMERR)
        q = Query(record.header.id, bool(record.header.rd), bool(record.header.cd), question.qname,
                  question.qtype, question.qclass, opts[0] if opts else None, tcp)
        lookup = names.parse(tuple(label.lower() for label in labels), q.qtype, self.settings)
        if lookup.kind is Kind.OUTSIDE:
            return await self._recurse(data, q)
        if q.qclass not in (CLASS_IN, CLASS_ANY):
            return self._error(q, NOTIMP)
        try:
            encodings, watches = await self._answer(q, lookup)
        except LookupFailed as e:
            log.debug("DNS lookup failed", name=str(q.qname), error=str(e))
            return self._error(q, SERVFAIL)
        if encodings is None:
            return await self._recurse(data, q)
        if watches is not None and key and cache.question_end(data) == cache.HEADER + _wire_length(labels) + 4:
            table.put(key, encodings, cache.question_end(data), watches)
        return encodings[0]

    def _error(self, q: Query, rcode: int) -> bytes:
        return encode(q, self.settings, [], rcode=rcode, aa=False, ra=self.ra)

    async def _recurse(self, data: bytes, q: Query) -> bytes:
        if not self.settings.recursors:
            return encode(q, self.settings, [], rcode=REFUSED, aa=False, ra=False)
        reply = await self.recursor.forward(data, q.tcp)
        return reply if reply is not None else self._error(q, SERVFAIL)

    def _negative(self, q: Query, rcode: int, domain: tuple[bytes, ...]) -> list[bytes]:
        """NXDOMAIN, or NODATA (NOERROR without answers), with the SOA in the authority section."""
        return [encode(q, self.settings, [], rcode=rcode, authority=[answers.soa(self.settings, domain)], ra=self.ra)]

    async def _answer(self, q: Query, lookup: Lookup) -> Answer:
        """The answer to an in-domain or reverse question."""
        s = self.settings
        domain = lookup.domain or s.domain
        if lookup.datacenter and lookup.datacenter != s.datacenter.lower():
            return self._negative(q, NXDOMAIN, domain), ()  # no path to that datacenter
        if q.qtype in _ZONE_TRANSFERS:
            return [self._error(q, NOTIMP)], ()
        if lookup.kind in (Kind.SERVICE, Kind.CONNECT):
            watch = await self.views.service(lookup.name, connect=lookup.kind is Kind.CONNECT)
            found = [i for i in watch.usable() if not lookup.tag or lookup.tag in i.tags]
            return self._service(q, found, domain, s.service_ttl(lookup.name)), (watch,)
        if lookup.kind is Kind.QUERY:
            return await self._prepared_query(q, lookup.name, domain), None
        if lookup.kind is Kind.NODE:
            watch = await self.views.nodes()
            node = watch.usable().by_name.get(lookup.name)
            if node is None:
                return self._negative(q, NXDOMAIN, domain), (watch,)
            ans, extra = answers.node_group(q, node, s)
            if not ans:
                return self._negative(q, NOERROR, domain), (watch,)
            return [encode(q, s, [(ans, extra)], ra=self.ra)], (watch,)
        if lookup.kind is Kind.ADDR:
            ans = answers.address_records(q.qname, lookup.ip, q.qtype, s.node_ttl)
            if not ans:
                return self._negative(q, NOERROR, domain), ()
            return [encode(q, s, [(ans, [])], ra=self.ra)], ()
        if lookup.kind is Kind.APEX:
            return await self._apex(q, domain)
        if lookup.kind is Kind.PTR:
            return await self._ptr(q, lookup.ip)
        return self._negative(q, NXDOMAIN, domain), ()

    def _service(self, q: Query, found: list[Instance], domain: tuple[bytes, ...], ttl: int) -> list[bytes]:
        if not found:
            return self._negative(q, NXDOMAIN, domain)
        groups = answers.service_groups(q, found, self.settings, domain, ttl)
        if not groups:
            return self._negative(q, NOERROR, domain)
        limit = self.settings.a_record_limit if q.qtype != QTYPE.SRV else 0
        return [encode(q, self.settings, order[:limit or None], ra=self.ra) for order in answers.orderings(groups)]

    async def _prepared_query(self, q: Query, name: str, domain: tuple[bytes, ...]) -> list[bytes]:
        try:
            resp = await self.client.query(f"/v1/query/{quote(name, safe='')}/execute",
                                           consistency=self.settings.consistency)
        except APIError as e:
            if e.status == 404:
                return self._negative(q, NXDOMAIN, domain)
            raise LookupFailed(f"prepared query {name!r}: {e}") from None
        except ClientError as e:
            raise LookupFailed(f"prepared query {name!r}: {e}") from None
        result = read_execute_response(resp.json())
        try:
            ttl = int(parse_duration(result.dns_ttl)) if result.dns_ttl else self.settings.service_ttl(result.service)
        except ValueError:
            ttl = self.settings.service_ttl(result.service)
        # The query filtered health already (its own OnlyPassing); DNS's only_passing does not apply.
        return self._service(q, list(healthy_instances(result.nodes, only_passing=False)), domain, ttl)

    async def _apex(self, q: Query, domain: tuple[bytes, ...]) -> Answer:
        s = self.settings
        if q.qtype not in (QTYPE.SOA, QTYPE.NS):
            return self._negative(q, NOERROR, domain), ()
        watch = await self.views.service(SERVERS)
        orders = answers.orderings(answers.ns_groups(watch.usable(), s, domain))
        if q.qtype == QTYPE.NS:
            return [encode(q, s, order[:3], ra=self.ra) for order in orders], (watch,)
        out = []
        for order in orders:
            ns, glue = [rr for g in order[:3] for rr in g[0]], [rr for g in order[:3] for rr in g[1]]
            out.append(encode(q, s, [([answers.soa(s, domain)], [])], authority=ns, additional=glue, ra=self.ra))
        return out, (watch,)

    async def _ptr(self, q: Query, ip: str) -> Answer:
        """A known node's name, else the service registered with that address; else the recursors, or
        NXDOMAIN. PTR names use the primary domain, as in Consul."""
        s = self.settings
        nodes = await self.views.nodes()
        node = nodes.usable().by_address.get(ip) if ip else None
        if node is not None:
            target = answers.node_name(node, s, s.domain)
            return [encode(q, s, [([answers.ptr(q, target)], [])], ra=self.ra)], (nodes,)
        for watch in self.views.services() if ip else ():
            for inst in watch.data:
                if inst.service_address and canonical_ip(inst.service_address) == ip:
                    svc = watch.key[1]
                    target = answers.fqdn(svc, "service", inst.node.datacenter or s.datacenter, s.domain)
                    return [encode(q, s, [([answers.ptr(q, target)], [])], ra=self.ra)], (nodes, watch)
        if s.recursors:
            return None, None
        # Not cacheable: any service view could learn the address.
        return self._negative(q, NXDOMAIN, s.domain), None
