"""The DNS interface of real agents, asked with dig and with dnslib as a client.

Two dev agents with DNS ports: ``agent`` with recursors (a dead one, then a tiny dnslib resolver started
here), an alternate domain, ``enable_truncate`` and TTLs; ``strict`` with ``only_passing``,
``a_record_limit`` and no recursors. Every test registers services of its own, so none depends on another.
The last test runs a 1-server cluster and a client agent whose server is killed.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, TXT, A, DNSRecord, EDNSOption
from dnslib.server import BaseResolver, DNSLogger
from dnslib.server import DNSServer as UpstreamServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.cluster import Cluster
from tests.integration.conftest import REPO, Run, clean_env, free_port, wait_until

TIMEOUT = 5.0  # for one DNS exchange


# ---- a DNS client ---------------------------------------------------------------------------------------

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def exchange(port: int, packet: bytes, tcp: bool = False) -> bytes:
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(len(packet).to_bytes(2, "big") + packet)
            return _recv_exact(s, int.from_bytes(_recv_exact(s, 2), "big"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(packet, ("127.0.0.1", port))
        return s.recv(65535)


def question(name: str, qtype: str = "A", udp_len: int | None = None) -> bytes:
    q = DNSRecord.question(name, qtype)
    if udp_len is not None:
        q.add_ar(EDNS0(udp_len=udp_len))
    return bytes(q.pack())


def ask(port: int, name: str, qtype: str = "A", *, tcp: bool = False, udp_len: int | None = None) -> DNSRecord:
    return DNSRecord.parse(exchange(port, question(name, qtype, udp_len), tcp))


def rdata(r: DNSRecord, rtype: str, section: str = "rr") -> list[str]:
    return [str(rr.rdata) for rr in getattr(r, section) if rr.rtype == getattr(QTYPE, rtype)]


def rcode(r: DNSRecord) -> str:
    return RCODE.get(r.header.rcode)


def dig(port: int, *args: str) -> str:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+tries=1", f"+time={int(TIMEOUT)}", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    return out.stdout


def short(port: int, *args: str) -> list[str]:
    return sorted(dig(port, "+short", *args).split("\n")[:-1])


# ---- agents ---------------------------------------------------------------------------------------------

@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    http: int
    dns: int
    log: Path

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def register(self, node: str, address: str, service: str | None = None, port: int = 80, *,
                 tags: tuple[str, ...] = (), service_address: str = "", status: str = "passing",
                 node_status: str | None = None, meta: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None) -> None:
        body: dict[str, Any] = {"Node": node, "Address": address, "NodeMeta": meta or {}}
        checks = []
        if node_status is not None:
            checks.append({"CheckID": f"{node}-alive", "Name": "node", "Status": node_status})
        if service is not None:
            svc: dict[str, Any] = {"ID": service, "Service": service, "Port": port, "Tags": list(tags),
                                   "Address": service_address}
            if weights:
                svc["Weights"] = weights
            body["Service"] = svc
            checks.append({"CheckID": f"{service}-check", "Name": "svc", "Status": status, "ServiceID": service})
        body["Checks"] = checks
        assert self.call("PUT", "/v1/catalog/register", body) is True

    def deregister(self, node: str) -> None:
        assert self.call("PUT", "/v1/catalog/deregister", {"Node": node}) is True


def start_agent(root: Path, name: str, config: dict[str, Any]) -> Agent:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.json").write_text(json.dumps(config))
    http, dns, raft = free_port(), free_port(), free_port()
    log = root / f"{name}.log"
    cmd = [sys.executable, "-m", "buoy", "agent", "-dev", "-node", name, "-http-port", str(http),
           "-dns-port", str(dns), "-server-port", str(raft), "-config-file", str(root / f"{name}.json")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
    agent = Agent(proc, http, dns, log)

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        return bool(agent.call("GET", "/v1/status/leader")) and rcode(ask(dns, "consul", "SOA")) == "NOERROR"

    try:
        wait_until(ready, f"agent {name} to answer DNS")
    except BaseException:
        stop(proc)
        raise
    return agent


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


class Upstream(BaseResolver):
    """The test's recursor: A 192.0.2.1 for any name, SERVFAIL for fail.example, NXDOMAIN for arpa."""

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower()
        if name == "fail.example.":
            reply.header.rcode = RCODE.SERVFAIL
        elif name.endswith(".arpa."):
            reply.header.rcode = RCODE.NXDOMAIN
        elif name == "long.example.":  # too big for UDP: the TCP path relays it whole
            for i in range(40):
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, ttl=60, rdata=TXT("x" * 100 + str(i))))
        else:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.1")))
        return reply


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    port = free_port()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    servers = [UpstreamServer(Upstream(), port=port, address="127.0.0.1", tcp=tcp, logger=quiet)
               for tcp in (False, True)]
    for s in servers:
        s.start_thread()
    yield port
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[Agent]:
    dead = free_port()  # nothing listens there: the first recursor always fails
    a = start_agent(tmp_path_factory.mktemp("dns"), "dnsagent", {
        "recursors": [f"127.0.0.1:{dead}", f"127.0.0.1:{upstream}"],
        "alt_domain": "buoy.",
        "dns_config": {
            "enable_truncate": True,
            "node_ttl": "11s",
            "service_ttl": {"*": "5s", "tt*": "7s", "ttexact": "9s"},
            "soa": {"min_ttl": 3},
        },
    })
    yield a
    stop(a.proc)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_agent(tmp_path_factory.mktemp("dns-strict"), "strict",
                    {"dns_config": {"only_passing": True, "a_record_limit": 2}})
    yield a
    stop(a.proc)


# ---- name forms and records -----------------------------------------------------------------------------

def test_service_a_aaaa_and_srv_with_additional(agent: Agent) -> None:
    agent.register("web-1", "10.0.0.10", "web", 80, tags=("v1",), meta={"rack": "r1"})
    agent.register("web-2", "10.0.0.11", "web", 81, tags=("v2",), service_address="10.1.0.11")
    agent.register("web-3", "fd00::3", "web", 82, tags=("v2",))
    assert short(agent.dns, "web.service.consul") == ["10.0.0.10", "10.1.0.11"]  # the service address wins
    assert short(agent.dns, "web.service.consul", "AAAA") == ["fd00::3"]
    r = ask(agent.dns, "web.service.consul", "SRV", tcp=True)
    assert sorted(rdata(r, "SRV")) == ["1 1 80 web-1.node.dc1.consul.", "1 1 81 0a01000b.addr.dc1.consul.",
                                       "1 1 82 web-3.node.dc1.consul."]
    extra = {(str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata)) for rr in r.ar if rr.rtype != QTYPE.OPT}
    assert extra == {("web-1.node.dc1.consul.", "A", "10.0.0.10"), ("web-1.node.dc1.consul.", "TXT", '"rack=r1"'),
                     ("0a01000b.addr.dc1.consul.", "A", "10.1.0.11"), ("web-3.node.dc1.consul.", "AAAA", "fd00::3")}
    assert r.header.aa and r.header.ra  # authoritative; recursion offered because recursors are set
    # ANY gives both families.
    assert sorted(rdata(ask(agent.dns, "web.service.consul", "ANY", tcp=True), "A")) == ["10.0.0.10", "10.1.0.11"]


def test_service_names_in_any_case(agent: Agent) -> None:
    """DNS names are case-insensitive and so is Consul's catalog: a service registered as "Mixed-Case" answers."""
    agent.register("mixed-1", "10.0.77.1", "Mixed-Case", 80)
    assert short(agent.dns, "mixed-case.service.consul") == ["10.0.77.1"]
    assert short(agent.dns, "MIXED-CASE.service.consul") == ["10.0.77.1"]


def test_tags_rfc2782_datacenter_and_alt_domain(agent: Agent) -> None:
    agent.register("tag-1", "10.0.1.1", "tagged", 81, tags=("primary", "V1.2"))
    agent.register("tag-2", "10.0.1.2", "tagged", 82, tags=("replica",))
    assert short(agent.dns, "primary.tagged.service.consul") == ["10.0.1.1"]
    assert short(agent.dns, "v1.2.tagged.service.consul") == ["10.0.1.1"]  # a tag with a dot, any case
    assert short(agent.dns, "_tagged._replica.service.consul", "SRV") == ["1 1 82 tag-2.node.dc1.consul."]
    assert len(short(agent.dns, "_tagged._tcp.service.consul", "SRV")) == 2  # _tcp: no tag filter
    assert short(agent.dns, "_tagged._primary.consul", "SRV") == ["1 1 81 tag-1.node.dc1.consul."]  # no .service
    assert short(agent.dns, "_tagged._primary.dc1.consul", "SRV") == ["1 1 81 tag-1.node.dc1.consul."]
    assert short(agent.dns, "tagged.service.dc1.consul") == ["10.0.1.1", "10.0.1.2"]
    assert short(agent.dns, "tagged.service.dc1.dc.consul") == ["10.0.1.1", "10.0.1.2"]
    assert short(agent.dns, "TaGgEd.SeRvIcE.CoNsUl") == ["10.0.1.1", "10.0.1.2"]
    assert rcode(ask(agent.dns, "tagged.service.dc2.consul")) == "NXDOMAIN"  # no path to that datacenter
    assert rcode(ask(agent.dns, "nosuchtag.tagged.service.consul")) == "NXDOMAIN"
    # The alternate domain answers the same, and names its targets under itself.
    assert short(agent.dns, "tagged.service.buoy") == ["10.0.1.1", "10.0.1.2"]
    assert short(agent.dns, "_tagged._replica.service.buoy", "SRV") == ["1 1 82 tag-2.node.dc1.buoy."]


def test_node_lookups_with_meta_txt(agent: Agent) -> None:
    agent.register("meta-node", "10.0.2.1", meta={"rack": "r=1", "rfc1035-raw": "plain text", " sp": "v"})
    r = ask(agent.dns, "meta-node.node.consul")
    assert rdata(r, "A") == ["10.0.2.1"] and r.rr[0].ttl == 11
    txt = sorted(rdata(r, "TXT", "ar"))  # in the additional section (enable_additional_node_meta_txt)
    assert txt == ['"` sp=v"', '"plain text"', '"rack=r=1"']
    r = ask(agent.dns, "META-NODE.node.dc1.consul", "TXT")
    assert sorted(rdata(r, "TXT")) == txt and not rdata(r, "A")
    assert short(agent.dns, "meta-node.node.consul") == ["10.0.2.1"]
    agent.register("v6-node", "fd00::21")
    assert short(agent.dns, "v6-node.node.consul", "AAAA") == ["fd00::21"]
    nodata = ask(agent.dns, "v6-node.node.consul", "A")
    assert rcode(nodata) == "NOERROR" and not nodata.rr and rdata(nodata, "SOA", "auth")
    assert rcode(ask(agent.dns, "meta-node.node.consul", "MX")) == "NOERROR"
    assert rcode(ask(agent.dns, "no-such-node.node.consul")) == "NXDOMAIN"


def test_addr_ptr_soa_and_ns(agent: Agent, strict: Agent) -> None:
    assert short(agent.dns, "0a000001.addr.consul") == ["10.0.0.1"]
    assert short(agent.dns, "fd000000000000000000000000000001.addr.dc1.consul", "AAAA") == ["fd00::1"]
    assert rcode(ask(agent.dns, "0a0000.addr.consul")) == "NXDOMAIN"
    agent.register("ptr-node", "10.0.3.1", "ptrsvc", 80, service_address="10.0.3.99")
    assert short(agent.dns, "ptrsvc.service.consul") == ["10.0.3.99"]  # the service's view is now open
    assert short(agent.dns, "-x", "10.0.3.1") == ["ptr-node.node.dc1.consul."]
    assert short(agent.dns, "-x", "10.0.3.99") == ["ptrsvc.service.dc1.consul."]
    r = ask(agent.dns, "1.3.0.10.in-addr.arpa", "PTR")
    assert r.rr[0].ttl == 0 and r.header.aa
    # Unknown addresses go to the recursors (which say NXDOMAIN here), or get NXDOMAIN without them.
    assert rcode(ask(agent.dns, "9.9.9.10.in-addr.arpa", "PTR")) == "NXDOMAIN"
    r = ask(strict.dns, "9.9.9.10.in-addr.arpa", "PTR")
    assert rcode(r) == "NXDOMAIN" and rdata(r, "SOA", "auth")

    soa = ask(agent.dns, "consul", "SOA")
    assert rcode(soa) == "NOERROR" and soa.rr[0].ttl == 3
    assert str(soa.rr[0].rdata).split()[:2] == ["ns.consul.", "hostmaster.consul."]
    assert str(soa.rr[0].rdata).split()[3:] == ["3600", "600", "86400", "3"]
    assert rdata(soa, "NS", "auth") == ["dnsagent.node.dc1.consul."]
    assert rdata(soa, "A", "ar") == ["127.0.0.1"]
    ns = ask(agent.dns, "consul", "NS")
    assert rdata(ns, "NS") == ["dnsagent.node.dc1.consul."] and rdata(ns, "A", "ar") == ["127.0.0.1"]
    assert short(agent.dns, "buoy", "NS") == ["dnsagent.node.dc1.buoy."]


def test_nxdomain_and_nodata_carry_the_soa(agent: Agent) -> None:
    agent.register("v4-only", "10.0.4.1", "v4svc", 80)
    for name in ("missing.service.consul", "no-kind.consul", "a.b.c.service.x.y.consul"):
        r = ask(agent.dns, name)
        assert rcode(r) == "NXDOMAIN" and not r.rr, name
        assert [str(rr.rname) for rr in r.auth] == ["consul."] and r.auth[0].rtype == QTYPE.SOA and r.auth[0].ttl == 3
    nodata = ask(agent.dns, "v4svc.service.consul", "AAAA")
    assert rcode(nodata) == "NOERROR" and not nodata.rr and rdata(nodata, "SOA", "auth")
    assert rcode(ask(agent.dns, "v4svc.service.consul", "MX")) == "NOERROR"
    # No mesh-capable instance (no sidecar, not Connect-native): nothing under .connect.
    assert rcode(ask(agent.dns, "v4svc.connect.consul")) == "NXDOMAIN"
    assert rcode(ask(agent.dns, "v4svc.virtual.consul")) == "NXDOMAIN"
    assert "status: NXDOMAIN" in dig(agent.dns, "missing.service.consul")
    assert "AUTHORITY: 1" in dig(agent.dns, "v4svc.service.consul", "AAAA")


def test_health_filtering(agent: Agent, strict: Agent) -> None:
    for a in (agent, strict):
        a.register("hf-1", "10.0.5.1", "hf", 80, weights={"Passing": 10, "Warning": 3})
        a.register("hf-2", "10.0.5.2", "hf", 80, status="warning", weights={"Passing": 10, "Warning": 3})
        a.register("hf-3", "10.0.5.3", "hf", 80, status="critical")
        a.register("hf-4", "10.0.5.4", "hf", 80, node_status="critical")  # the node's own check counts
        a.register("hf-5", "10.0.5.5", "hfdead", 80, status="critical")
    assert short(agent.dns, "hf.service.consul") == ["10.0.5.1", "10.0.5.2"]  # warning is in by default
    assert short(agent.dns, "hf.service.consul", "SRV") == ["1 10 80 hf-1.node.dc1.consul.",
                                                            "1 3 80 hf-2.node.dc1.consul."]
    assert short(strict.dns, "hf.service.consul") == ["10.0.5.1"]  # only_passing
    for a in (agent, strict):
        assert rcode(ask(a.dns, "hfdead.service.consul")) == "NXDOMAIN"  # a service with nothing healthy


def test_ttls(agent: Agent) -> None:
    for svc in ("other", "ttprefix", "ttexact"):
        agent.register(f"{svc}-node", "10.0.6.1", svc, 80)
    assert [ask(agent.dns, f"{svc}.service.consul").rr[0].ttl for svc in ("other", "ttprefix", "ttexact")] == [5, 7, 9]
    r = ask(agent.dns, "ttexact.service.consul", "SRV")
    assert {rr.ttl for rr in r.rr + [rr for rr in r.ar if rr.rtype != QTYPE.OPT]} == {9}


def test_shuffled_answers(agent: Agent) -> None:
    for i in range(3):
        agent.register(f"shuf-{i}", f"10.0.7.{i}", "shuf", 80)
    for tcp in (False, True):
        orders = {tuple(rdata(ask(agent.dns, "shuf.service.consul", tcp=tcp), "A")) for _ in range(12)}
        assert len(orders) > 1 and {frozenset(o) for o in orders} == {frozenset(f"10.0.7.{i}" for i in range(3))}


def test_udp_limits_truncation_edns_and_tcp(agent: Agent, strict: Agent) -> None:
    for a in (agent, strict):
        for i in range(40):
            a.register(f"big-{i}", f"10.0.8.{i}", "big", 80)
    everyone = {f"10.0.8.{i}" for i in range(40)}
    plain = DNSRecord.parse(exchange(agent.dns, question("big.service.consul")))
    assert len(plain.rr) == 3 and plain.header.tc  # udp_answer_limit, and the TC bit (enable_truncate)
    assert set(rdata(ask(agent.dns, "big.service.consul", tcp=True), "A")) == everyone
    small_edns = ask(agent.dns, "big.service.consul", udp_len=512)
    assert len(small_edns.rr) == 3 and small_edns.header.tc
    big_edns = ask(agent.dns, "big.service.consul", udp_len=4096)
    assert set(rdata(big_edns, "A")) == everyone and not big_edns.header.tc
    assert [rr.rclass for rr in big_edns.ar if rr.rtype == QTYPE.OPT] == [4096]  # the client's size echoed
    # SRV with its additional records does not fit 1232 bytes: as many as fit, with their targets' addresses.
    packet = exchange(agent.dns, question("big.service.consul", "SRV", udp_len=1232))
    srv = DNSRecord.parse(packet)
    assert len(packet) <= 1232 and srv.header.tc and 3 < len(srv.rr) < 40
    targets = {str(rr.rdata.target) for rr in srv.rr}
    assert {str(rr.rname) for rr in srv.ar if rr.rtype == QTYPE.A} == targets
    assert len(ask(agent.dns, "big.service.consul", "SRV", tcp=True).rr) == 40
    # dig retries over TCP when it sees TC, and gets everything.
    assert len(short(agent.dns, "+noedns", "big.service.consul")) == 40
    assert "flags: qr aa tc rd" in dig(agent.dns, "+noedns", "+ignore", "big.service.consul")
    # Without enable_truncate the answer is cut silently; a_record_limit caps A answers on any transport.
    cut = ask(strict.dns, "big.service.consul", "SRV")
    assert len(cut.rr) == 3 and not cut.header.tc
    assert len(ask(strict.dns, "big.service.consul", tcp=True).rr) == 2
    assert len(ask(strict.dns, "big.service.consul", "SRV", tcp=True).rr) == 40


def test_edns_client_subnet_is_echoed_with_scope_zero(agent: Agent) -> None:
    agent.register("ecs-node", "10.0.9.1", "ecs", 80)
    q = DNSRecord.question("ecs.service.consul")
    q.add_ar(EDNS0(udp_len=1400, opts=[EDNSOption(8, bytes([0, 1, 24, 0, 192, 0, 2]))]))
    r = DNSRecord.parse(exchange(agent.dns, bytes(q.pack())))
    opt = next(rr for rr in r.ar if rr.rtype == QTYPE.OPT)
    assert opt.rclass == 1400 and [(o.code, o.data) for o in opt.rdata] == [(8, bytes([0, 1, 24, 0, 192, 0, 2]))]


def test_question_spelling_is_echoed_from_the_cache(agent: Agent) -> None:
    """Resolvers that randomise the case of names (0x20) check that the answer repeats their spelling."""
    agent.register("case-node", "10.0.10.1", "casesvc", 80)
    for name in ("casesvc.service.consul", "CaseSvc.Service.Consul", "CASESVC.SERVICE.CONSUL"):
        q = DNSRecord.question(name)
        r = DNSRecord.parse(exchange(agent.dns, bytes(q.pack())))
        assert r.header.id == q.header.id and str(r.q.qname) == name + "." and rdata(r, "A") == ["10.0.10.1"]


# ---- recursors and prepared queries ---------------------------------------------------------------------

def test_recursors(agent: Agent, strict: Agent) -> None:
    for transport in ("+notcp", "+tcp"):
        out = dig(agent.dns, transport, "www.example")
        assert "status: NOERROR" in out and "192.0.2.1" in out and " ra" in out.split("flags:")[1].split(";")[0]
    long = ask(agent.dns, "long.example", "TXT", tcp=True)  # relayed whole over TCP
    assert len(long.rr) == 40
    assert rcode(ask(agent.dns, "fail.example")) == "SERVFAIL"  # every recursor failed
    refused = ask(strict.dns, "www.example")
    assert rcode(refused) == "REFUSED" and not refused.header.ra and not refused.header.aa


def test_prepared_query_through_dns(agent: Agent) -> None:
    agent.register("pq-1", "10.0.11.1", "pqsvc", 80, tags=("blue",))
    agent.register("pq-2", "10.0.11.2", "pqsvc", 81, tags=("green",))
    body = {"Name": "pq-blue", "Service": {"Service": "pqsvc", "Tags": ["blue"]}, "DNS": {"TTL": "13s"}}
    agent.call("POST", "/v1/query", body)
    r = ask(agent.dns, "pq-blue.query.consul")
    assert rdata(r, "A") == ["10.0.11.1"] and r.rr[0].ttl == 13
    assert short(agent.dns, "_pq-blue._tcp.query.consul", "SRV") == ["1 1 80 pq-1.node.dc1.consul."]
    assert rcode(ask(agent.dns, "no-such-query.query.consul")) == "NXDOMAIN"


# ---- the live view --------------------------------------------------------------------------------------

def test_view_follows_catalog_changes(agent: Agent) -> None:
    agent.register("live-1", "10.0.12.1", "live", 80)
    assert short(agent.dns, "live.service.consul") == ["10.0.12.1"]  # cached from here on
    agent.register("live-2", "10.0.12.2", "live", 80)
    wait_until(lambda: short(agent.dns, "live.service.consul") == ["10.0.12.1", "10.0.12.2"], "a new instance", 5)
    agent.register("live-1", "10.0.12.1", "live", 80, status="critical")
    wait_until(lambda: short(agent.dns, "live.service.consul") == ["10.0.12.2"], "a critical instance to go", 5)
    agent.deregister("live-2")
    wait_until(lambda: rcode(ask(agent.dns, "live.service.consul")) == "NXDOMAIN", "the last one to go", 5)
    # A name asked about before it existed is watched too.
    assert rcode(ask(agent.dns, "later.service.consul")) == "NXDOMAIN"
    agent.register("later-1", "10.0.12.3", "later", 80)
    wait_until(lambda: short(agent.dns, "later.service.consul") == ["10.0.12.3"], "a new service", 5)
    agent.register("later-1", "10.0.12.4")  # the node moves: its address is the instance's
    wait_until(lambda: short(agent.dns, "later-1.node.consul") == ["10.0.12.4"], "a node's new address", 5)
    wait_until(lambda: short(agent.dns, "later.service.consul") == ["10.0.12.4"], "the service to follow", 5)


def test_catalog_cli_and_dig_agree(strict: Agent, buoy_cli: Callable[..., Run]) -> None:
    for i in range(4):
        strict.register(f"agree-{i}", f"10.0.13.{i}", f"agree{i % 2}", 8000 + i)
    env = {"BUOY_HTTP_ADDR": f"127.0.0.1:{strict.http}"}
    listing = buoy_cli("catalog", "services", env=env)
    assert listing.code == 0, listing
    services = [s for s in listing.lines() if s.startswith("agree")]
    assert services == ["agree0", "agree1"]
    for svc in services:
        nodes = buoy_cli("catalog", "nodes", "-service", svc, env=env)
        assert nodes.code == 0, nodes
        from_cli = sorted((row.split()[0], row.split()[-2]) for row in nodes.lines()[1:])
        srv = short(strict.dns, "+tcp", f"{svc}.service.consul", "SRV")
        from_dig = sorted((line.split()[3].split(".")[0], short(strict.dns, line.split()[3])[0]) for line in srv)
        assert from_cli == from_dig and len(from_cli) == 2


# ---- configuration --------------------------------------------------------------------------------------

AGENT_HCL = 'data_dir = "/tmp/unused"\nencrypt = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="\n'
DNS_HCL = """
recursors  = ["10.0.0.2", "[::1]:5353"]
alt_domain = "buoy."
dns_config {
  allow_stale      = false
  max_stale        = "10s"
  node_ttl         = "10s"
  service_ttl      = { "*" = "5s", "db*" = "30s" }
  enable_truncate  = true
  only_passing     = true
  a_record_limit   = 2
  udp_answer_limit = 5
  enable_additional_node_meta_txt = false
  recursor_timeout  = "1s"
  recursor_strategy = "random"
  soa {
    expire  = 100
    min_ttl = 5
    refresh = 60
    retry   = 30
  }
}
"""


@pytest.mark.parametrize(("text", "error"), [
    (DNS_HCL, None),
    ('dns_config { bogus = 1 }', "dns.hcl: unknown key 'dns_config.bogus'"),
    ('dns_config { service_ttl = { "*" = "soon" } }', "dns.hcl: dns_config.service_ttl: invalid duration 'soon'"),
    ('dns_config { soa { retry = -1 } }', "dns_config.soa.retry: must not be negative"),
    ('dns_config { recursor_strategy = "loud" }', "dns_config.recursor_strategy: 'loud' is not sequential or random"),
    ('recursors = ["dns.example"]', "recursors: 'dns.example' is not an IP address or ip:port"),
])
def test_dns_config_files(tmp_path: Path, buoy_cli: Callable[..., Run], text: str, error: str | None) -> None:
    (tmp_path / "dns.hcl").write_text(AGENT_HCL + text)
    run = buoy_cli("validate", str(tmp_path / "dns.hcl"))
    if error is None:
        assert run.code == 0, run
    else:
        assert run.code == 1 and run.stderr.strip().endswith(error), run


# ---- bad input ------------------------------------------------------------------------------------------

def _header(qid: int, flags: int, qd: int, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def _still_serving(agent: Agent) -> None:
    assert rcode(ask(agent.dns, "consul", "SOA")) == "NOERROR"


def _no_reply(port: int, packet: bytes) -> None:
    """Nothing comes back for ``packet``: a later query's answer is the first thing the socket reads."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(packet, ("127.0.0.1", port))
        probe = question("consul", "SOA")
        s.sendto(probe, ("127.0.0.1", port))
        assert s.recv(65535)[:2] == probe[:2]


def test_bad_packets(strict: Agent) -> None:
    good = question("consul", "SOA")
    name = good[12:]
    cases = {
        "garbage": (_header(7, 0x0100, 1) + b"\xff\xfe\xfd", "FORMERR"),
        "no question": (_header(7, 0x0100, 0), "FORMERR"),
        "two questions": (_header(7, 0x0100, 2) + name + name, "FORMERR"),
        "a label of 64 bytes": (_header(7, 0x0100, 1) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", "FORMERR"),
        "a name of 301 bytes": (_header(7, 0x0100, 1) + (b"\x09" + b"a" * 9) * 30 + b"\x00\x00\x01\x00\x01", "FORMERR"),
        "opcode STATUS": (_header(7, 2 << 11, 1) + name, "NOTIMP"),
        "opcode NOTIFY": (_header(7, 4 << 11, 1) + name, "NOTIMP"),
        "class CHAOS": (_header(7, 0x0100, 1) + b"\x03web\x07service\x06consul\x00\x00\x01\x00\x03", "NOTIMP"),
        "unknown class": (_header(7, 0x0100, 1) + b"\x06consul\x00\x00\x06\x01\x2c", "NOTIMP"),
    }
    for what, (packet, expected) in cases.items():
        for tcp in (False, True):
            reply = DNSRecord.parse(exchange(strict.dns, packet, tcp))
            assert (rcode(reply), reply.header.id) == (expected, 7), (what, tcp)
            assert reply.header.qr
        _still_serving(strict)
    _no_reply(strict.dns, b"\x00\x07\x01")  # shorter than a header
    _no_reply(strict.dns, _header(7, 0x8100, 1) + name)  # a response, not a query
    # A class-ANY question is answered like IN.
    any_class = _header(8, 0x0100, 1) + b"\x06consul\x00\x00\x06\x00\xff"
    assert rcode(DNSRecord.parse(exchange(strict.dns, any_class))) == "NOERROR"


def test_tcp_client_that_stalls_is_closed(strict: Agent) -> None:
    with socket.create_connection(("127.0.0.1", strict.dns), timeout=30) as stalled:
        stalled.sendall(b"\x00\x28")  # a length prefix, and then nothing
        _still_serving(strict)  # others are answered meanwhile, over UDP and TCP
        assert rcode(ask(strict.dns, "consul", "SOA", tcp=True)) == "NOERROR"
        assert stalled.recv(10) == b""  # closed by the server (TCP_READ), well within the socket timeout
    with socket.create_connection(("127.0.0.1", strict.dns), timeout=30) as idle:
        assert idle.recv(10) == b""  # an idle connection is closed too (TCP_IDLE)


@settings(max_examples=300, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda q, i, b: q[:i] + bytes([b]) + q[i + 1:],
              st.sampled_from([question("web.service.consul", t) for t in ("A", "SRV", "TXT")]
                              + [question("consul", "SOA", 1232)]),
              st.integers(0, 40), st.integers(0, 255)),
))
def test_fuzz_random_packets(strict: Agent, data: bytes) -> None:
    """Random bytes and single-byte mutations of good queries: a well-formed reply with the query's ID, or
    no reply for what is not a query at all; the server keeps serving."""
    expect_reply = len(data) >= 12 and not data[2] & 0x80
    if not expect_reply:
        _no_reply(strict.dns, data)
        return
    reply = exchange(strict.dns, data)
    assert reply[:2] == data[:2] and reply[2] & 0x80
    DNSRecord.parse(reply)


def test_still_serving_after_fuzz(strict: Agent) -> None:
    _still_serving(strict)
    assert strict.proc.poll() is None


# ---- servers down ---------------------------------------------------------------------------------------

MAX_STALE = 6

def test_client_agent_answers_while_its_servers_are_down(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, size=1, config={"dns_config": {"max_stale": f"{MAX_STALE}s"}})
    cluster.start_all()
    try:
        cluster.wait_leader()
        c = cluster.add_client([0], dns=True)
        port = cluster.dns[c]
        wait_until(lambda: cluster.get(c, "/v1/status/leader"), "the client agent")
        register = urllib.request.Request(
            f"http://127.0.0.1:{cluster.http[c]}/v1/catalog/register", method="PUT",
            data=json.dumps({"Node": "far-1", "Address": "10.0.14.1",
                             "Service": {"Service": "far", "Port": 80}}).encode())
        with urllib.request.urlopen(register, timeout=10) as resp:
            assert json.loads(resp.read()) is True
        wait_until(lambda: short(port, "far.service.consul") == ["10.0.14.1"], "the client agent's DNS")
        cluster.kill(0)
        # The cached answer, and answers built anew from the view's last data (SRV was never asked).
        assert short(port, "far.service.consul") == ["10.0.14.1"]
        assert short(port, "far.service.consul", "SRV") == ["1 1 80 far-1.node.dc1.consul."]
        # A name the view never loaded cannot be answered.
        assert rcode(ask(port, "never-asked.service.consul")) == "SERVFAIL"
        # Once the servers have been gone for longer than max_stale, neither can the others.
        wait_until(lambda: rcode(ask(port, "far.service.consul")) == "SERVFAIL", "max_stale to pass", 3 * MAX_STALE)
    finally:
        cluster.stop_all()
