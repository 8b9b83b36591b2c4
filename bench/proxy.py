"""Proxy benchmark: Buoy's built-in mTLS sidecar proxy against HAProxy, on one machine, in one run.

    python -m bench.proxy [--seconds 10] [--runs 3] [--threads 1] [--connections 32] [--keep]

nginx serves a 1 KiB file and a 100 MiB file on 127.0.0.1. wrk fetches the small one over HTTP/1.1 keep-alive
through each path in turn (direct; a HAProxy pair; a Buoy pair; a HAProxy client hop in front of Buoy's public
listener), curl the big one. Both proxies present leaf certificates of the same `buoy agent -dev` CA and
verify their peer's. Needs the Debian packages nginx-light, haproxy and wrk. See bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench import cluster
from bench.cluster import Proc
from bench.kv import BenchError, add_run_options, fmt, log, ratio, run_bench, table

INSTALL = "apt-get install -y nginx-light haproxy wrk"
SMALL = "/1k"  # the 1 KiB body every request fetches
BULK = "/bulk"  # the 100 MiB file of the bulk transfers
SMALL_BYTES = 1024
BULK_BYTES = 100 * 2**20
WRK_TIMEOUT = 5  # s: wrk counts a slower response as a timeout error; far above any latency here
BULK_TIMEOUT = 120  # s: curl --max-time; 100 MiB at under 1 MiB/s is a failure anyway
RUN_MARGIN = 15.0  # s past -d that a wrk run may take before the bench gives up on it
PUBLIC_RPS_TARGET = 1.0  # Buoy public listener req/s >= this x HAProxy server side's
PUBLIC_P99_TARGET = 1.2  # ... and its p99 <= this x HAProxy's
PAIR_RPS_TARGET = 1.0  # Buoy pair req/s >= this x the HAProxy pair's
BULK_TARGET = 1.0  # Buoy pair MiB/s >= this x the HAProxy pair's


@dataclass
class Route:
    """One way through to nginx: where the load generator connects and which proxies the bytes cross."""

    name: str
    port: int
    hops: str  # for the report
    proxies: list[Proc]
    extra: bool = False  # context only: not part of a target


@dataclass
class Run:
    """One wrk run, parsed, with the CPU each process used meanwhile."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str  # wrk's socket errors and non-2xx count, "" if none
    cores: dict[str, float]  # process name -> CPU seconds per wall second
    wrk_cores: float
    other_cores: float  # the rest of the machine


@dataclass
class Transfer:
    """One curl download of the bulk file."""

    mib_s: float
    cpu_s: dict[str, float]  # process name -> CPU seconds used by the transfer


@dataclass
class Tally:
    runs: list[Run] = field(default_factory=list)
    bulk: list[Transfer] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        return statistics.median(getattr(r, attr) for r in self.runs) if self.runs else None

    def bulk_mib_s(self) -> float | None:
        return statistics.median(t.mib_s for t in self.bulk) if self.bulk else None


# -- tools and processes ---------------------------------------------------------------------------------


def find_tools() -> dict[str, str] | None:
    """Paths of nginx, haproxy, wrk and curl; the first two live in /usr/sbin, which a user's PATH may lack."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = {name: shutil.which(name, path=path) for name in ("nginx", "haproxy", "wrk", "curl")}
    return {k: v for k, v in found.items() if v} if all(found.values()) else None


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def serves_small(port: int) -> bool:
    """Whether a GET of the 1 KiB file through port returns it whole: the readiness check of every path."""
    return len(http_get(f"http://127.0.0.1:{port}{SMALL}")) == SMALL_BYTES


def nginx_conf(directory: Path, port: int) -> str:
    # One process without a master (so no worker changes user and loses access to the private work dir),
    # no access log, and keep-alive connections that outlive a run: a connection closed every
    # keepalive_requests (nginx's default 1000) would make every run pay new TLS handshakes through the proxies.
    temp = "\n".join(f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                                "uwsgi", "scgi"))
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    sendfile on;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {directory}/www;
    }}
}}
"""


def start_nginx(workdir: Path, nginx: str, timeout: float) -> tuple[Proc, int]:
    (port,) = cluster.free_ports(1)
    directory = workdir / "nginx"
    www = directory / "www"
    www.mkdir(parents=True)
    (www / SMALL.lstrip("/")).write_bytes(b"x" * (SMALL_BYTES - 1) + b"\n")
    # Random bytes, so that nothing on the way can compress them; 1 MiB written 100 times.
    block = os.urandom(2**20)
    with open(www / BULK.lstrip("/"), "wb") as f:
        for _ in range(BULK_BYTES // len(block)):
            f.write(block)
    conf = directory / "nginx.conf"
    conf.write_text(nginx_conf(directory, port))
    argv = [nginx, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
    proc = cluster.spawn("nginx", argv, workdir / "logs" / "nginx.log")
    cluster.wait_until("nginx", [proc], timeout, lambda: serves_small(port))
    return proc, port


@dataclass
class Certs:
    """PEM files of the agent's CA: each leaf with its key (HAProxy's `crt`), and the roots (`ca-file`)."""

    backend: Path
    client: Path
    roots: Path
    key_type: str


def describe_key(pem_file: Path, key_pem: str) -> str:
    """ "EC P-256" from openssl, else the key's PEM label."""
    try:
        text = subprocess.run(["openssl", "pkey", "-in", str(pem_file), "-noout", "-text"], capture_output=True,
                              text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        text = ""
    m = re.search(r"NIST CURVE: (\S+)", text)
    return f"EC {m.group(1)}" if m else key_pem.split("\n", 1)[0].strip("- ").removeprefix("BEGIN ")


def write_certs(workdir: Path, api: str) -> Certs:
    directory = workdir / "certs"
    directory.mkdir(mode=0o700)
    paths: dict[str, Path] = {}
    key_type = ""
    for service in ("backend", "client"):
        leaf = cluster.http_json("GET", f"{api}/v1/agent/connect/ca/leaf/{service}")
        paths[service] = directory / f"{service}.pem"
        paths[service].write_text(leaf["CertPEM"].rstrip() + "\n" + leaf["PrivateKeyPEM"].rstrip() + "\n")
        paths[service].chmod(0o600)
        key_type = describe_key(paths[service], leaf["PrivateKeyPEM"])
    roots = cluster.http_json("GET", f"{api}/v1/agent/connect/ca/roots")
    pems = [r["RootCert"].rstrip() for r in roots["Roots"]]
    (directory / "roots.pem").write_text("\n".join(pems) + "\n")
    return Certs(paths["backend"], paths["client"], directory / "roots.pem", key_type)


@dataclass
class Buoy:
    agent: Proc
    api: str
    backend: Proc  # the backend's sidecar: its public listener
    client: Proc  # the client's sidecar: its upstream listener
    public_port: int
    upstream_port: int
    metrics: dict[str, int]  # proxy name -> metrics port


def register(api: str, nginx_port: int, public_port: int, client_port: int, upstream_port: int) -> None:
    bind = {"bind_address": "127.0.0.1"}
    backend = {"Name": "backend", "Port": nginx_port,
               "Connect": {"SidecarService": {"Port": public_port, "Proxy": {"Config": bind}}}}
    upstream = {"DestinationName": "backend", "LocalBindPort": upstream_port}
    client = {"Name": "client", "Port": 1,
              "Connect": {"SidecarService": {"Port": client_port, "Proxy": {"Config": bind, "Upstreams": [upstream]}}}}
    for service in (backend, client):
        cluster.http_json("PUT", f"{api}/v1/agent/service/register", service)
    got = cluster.http_json("GET", f"{api}/v1/agent/service/backend-sidecar-proxy")
    if got.get("Port") != public_port:
        raise BenchError(f"the backend's sidecar was registered on port {got.get('Port')}, not {public_port}")


def start_proxy(workdir: Path, python: Path, api: str, service: str, metrics_port: int, timeout: float) -> Proc:
    name = f"buoy-{service}"
    argv = [str(python), "-m", "buoy", "connect", "proxy", "-sidecar-for", service,
            "-http-addr", api.removeprefix("http://"), "-metrics-addr", f"127.0.0.1:{metrics_port}"]  # fmt: skip
    proc = cluster.spawn(name, argv, workdir / "logs" / f"{name}.log")
    # The metrics endpoint opens after the listeners (Proxy.start), so its answer means they are up; polling
    # it rather than the public port leaves no refused handshake in the proxy's counters and log.
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    cluster.wait_until(f"{name} metrics", [proc], timeout, lambda: b"buoy_proxy_connections" in http_get(url))
    return proc


def start_buoy(workdir: Path, python: Path, nginx_port: int, timeout: float) -> Buoy:
    http, server, public, client, upstream, m_backend, m_client = cluster.free_ports(7)
    # -dev keeps everything in memory and allows every connection by default: authorization still runs
    # on each one (intentions are asked), and simply says yes.
    role = ["-dev", "-server-port", str(server)]
    argv = cluster.buoy_agent_argv(python, workdir, "proxy", http, cluster.buoy_key(python), role)
    agent = cluster.spawn("buoy-agent", argv, workdir / "logs" / "buoy-agent.log")
    api = f"http://127.0.0.1:{http}"
    cluster.wait_until("buoy leader", [agent], timeout, lambda: cluster.http_json("GET", f"{api}/v1/status/leader"))
    register(api, nginx_port, public, client, upstream)
    backend = start_proxy(workdir, python, api, "backend", m_backend, timeout)
    # The client's upstream listener only uses instances whose checks pass (the sidecar's own TCP check
    # among them): wait for that, so that the readiness checks below do not count as refused connections.
    passing = f"{api}/v1/health/connect/backend?passing=1"
    cluster.wait_until("backend sidecar passing", [agent, backend], timeout, lambda: cluster.http_json("GET", passing))
    client_proxy = start_proxy(workdir, python, api, "client", m_client, timeout)
    return Buoy(agent, api, backend, client_proxy, public, upstream, {backend.name: m_backend,
                                                                     client_proxy.name: m_client})


def haproxy_conf(threads: int, listens: list[str]) -> str:
    # nbthread is explicit: HAProxy otherwise starts a thread per CPU, and the Buoy proxy is one thread.
    # mode tcp, as Buoy's proxy: bytes are relayed, HTTP is not parsed.
    head = f"""global
    nbthread {threads}
    maxconn 8192
defaults
    mode tcp
    timeout connect 5s
    timeout client 600s
    timeout server 600s
"""
    return head + "".join(listens)


def start_haproxy(workdir: Path, haproxy: str, name: str, threads: int, listens: list[str], timeout: float) -> Proc:
    conf = workdir / "haproxy" / f"{name}.cfg"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(haproxy_conf(threads, listens))
    check = subprocess.run([haproxy, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=timeout)
    if check.returncode != 0:
        raise BenchError(f"{name}: haproxy -c refused {conf}:\n{check.stdout}{check.stderr}")
    return cluster.spawn(name, [haproxy, "-db", "-f", str(conf)], workdir / "logs" / f"{name}.log")


def server_side(port: int, certs: Certs, nginx_port: int) -> str:
    """The HAProxy peer of Buoy's public listener: mutual TLS in, plain TCP to nginx."""
    return (f"listen public\n    bind 127.0.0.1:{port} ssl crt {certs.backend} ca-file {certs.roots} verify required"
            f" ssl-min-ver TLSv1.3\n    server nginx 127.0.0.1:{nginx_port}\n")


def client_side(name: str, port: int, certs: Certs, target: int) -> str:
    """The HAProxy peer of Buoy's upstream listener: plain TCP in, mutual TLS out with the client's leaf."""
    return (f"listen {name}\n    bind 127.0.0.1:{port}\n    server next 127.0.0.1:{target} ssl crt {certs.client}"
            f" ca-file {certs.roots} verify required ssl-min-ver TLSv1.3\n")


@dataclass
class Setup:
    """Everything under test: the routes through it, and what the report needs to know about it."""

    routes: list[Route]
    nginx: Proc
    certs: Certs
    tls_ports: dict[str, int]  # server-side proxy name -> its mutual TLS port
    metrics: dict[str, int]  # Buoy proxy name -> its metrics port

    def watched(self) -> list[Proc]:
        """nginx and every proxy, each once: the processes whose CPU each run records."""
        return [self.nginx, *{p.pid: p for r in self.routes for p in r.proxies}.values()]


def start_all(workdir: Path, tools: dict[str, str], python: Path, args: argparse.Namespace) -> Setup:
    """Every process under test, and the routes through them, each checked to return the 1 KiB file."""
    nginx, nginx_port = start_nginx(workdir, tools["nginx"], args.start_timeout)
    log(f"  nginx on :{nginx_port}")
    buoy = start_buoy(workdir, python, nginx_port, args.start_timeout)
    log(f"  buoy agent at {buoy.api}, public listener :{buoy.public_port}, upstream listener :{buoy.upstream_port}")
    certs = write_certs(workdir, buoy.api)
    hs1, hc_hs1, hc_buoy, hs2, hc_hs2, hc2_hs2 = cluster.free_ports(6)
    hap, t = tools["haproxy"], args.start_timeout
    server1 = start_haproxy(workdir, hap, "hap-server", 1, [server_side(hs1, certs, nginx_port)], t)
    client1 = start_haproxy(workdir, hap, "hap-client", 1, [client_side("to_hap", hc_hs1, certs, hs1),
                                                            client_side("to_buoy", hc_buoy, certs, buoy.public_port),
                                                            client_side("to_hap2t", hc_hs2, certs, hs2)], t)
    routes = [
        Route("direct", nginx_port, "wrk > nginx", []),
        Route("haproxy", hc_hs1, "wrk > hap-client > hap-server > nginx", [client1, server1]),
        Route("buoy", buoy.upstream_port, "wrk > buoy-client > buoy-backend > nginx", [buoy.client, buoy.backend]),
        Route("hap>buoy", hc_buoy, "wrk > hap-client > buoy-backend > nginx", [client1, buoy.backend]),
    ]
    if args.two_threads:  # context only: HAProxy with a thread per CPU
        server2 = start_haproxy(workdir, hap, "hap-server-2t", 2, [server_side(hs2, certs, nginx_port)], t)
        client2 = start_haproxy(workdir, hap, "hap-client-2t", 2, [client_side("to_hap2t", hc2_hs2, certs, hs2)], t)
        routes += [
            Route("haproxy-2t", hc2_hs2, "wrk > hap-client-2t > hap-server-2t > nginx", [client2, server2], True),
            Route("hap>hap-2t", hc_hs2, "wrk > hap-client > hap-server-2t > nginx", [client1, server2], True),
        ]
    setup = Setup(routes, nginx, certs, {"hap-server": hs1, "buoy-backend": buoy.public_port}, buoy.metrics)
    everything = [*setup.watched(), buoy.agent]
    for r in routes:
        cluster.wait_until(f"route {r.name} ({r.hops})", everything, t, functools.partial(serves_small, r.port))
    return setup


def handshake(port: int, certs: Certs) -> str:
    """TLS version and cipher that a client presenting the client leaf gets from the listener at port."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(certs.roots))
    ctx.load_cert_chain(str(certs.client))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            cipher = tls.cipher()
            return f"{tls.version()} {cipher[0] if cipher else '?'}"
    except (OSError, ssl.SSLError) as e:  # reported, not fatal: the runs show whether the listener works
        return f"handshake FAILED ({type(e).__name__}: {e})"


# -- measuring -----------------------------------------------------------------------------------------


def latency_ms(text: str, label: str) -> float:
    """A figure of wrk's "Latency Distribution", e.g. "     99%    1.23ms", in milliseconds."""
    m = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if m is None:
        raise BenchError(f"wrk output has no {label} latency:\n{text}")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def wrk_errors(text: str) -> str:
    errors = []
    m = re.search(r"Socket errors: (.*)", text)
    if m:
        errors.append(f"socket errors: {m.group(1).strip()}")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors.append(f"{m.group(1)} non-2xx")
    return "; ".join(errors)


def measure(argv: list[str], name: str, workdir: Path, watched: list[Proc], budget: float
            ) -> tuple[str, dict[str, float], float, float, float]:  # fmt: skip
    """Run a load generator to its end (at most budget seconds) and return its output, the CPU seconds each
    watched process used meanwhile, its own, the rest of the machine's, and the wall seconds."""
    gen = cluster.spawn(name, argv, workdir / "logs" / f"{name}.log", pipe_stdout=True)
    try:
        pids = [p.pid for p in watched] + [gen.pid]
        start = time.monotonic()
        cpu0, machine0 = cluster.cpu_seconds(pids), cluster.machine_cpu()
        deadline = start + budget
        lines = []
        while (line := gen.readline(deadline)) is not None:
            lines.append(line)
        # At end of output the generator has exited or is exiting; not yet reaped, /proc still has its times.
        cpu1, machine1 = cluster.cpu_seconds(pids), cluster.machine_cpu()
        wall = max(1e-9, time.monotonic() - start)
        code = gen.popen.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} did not finish within {budget:.0f} s\n{gen.tail()}") from None
    finally:
        cluster.stop(gen)
    text = "\n".join(lines)
    if code != 0:
        raise BenchError(f"{name} exited with code {code}\n{text[-2000:]}\n{gen.tail()}")
    used = {p.name: cpu1[p.pid] - cpu0[p.pid] for p in watched}
    own = cpu1[gen.pid] - cpu0[gen.pid]
    other = max(0.0, machine1[0] - machine0[0] - sum(used.values()) - own)
    return text, used, own, other, wall


def wrk(tools: dict[str, str], route: Route, workdir: Path, args: argparse.Namespace, seconds: float,
        watched: list[Proc]) -> Run:  # fmt: skip
    argv = [tools["wrk"], "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds:g}s",
            "--timeout", f"{WRK_TIMEOUT}s", "--latency", f"http://127.0.0.1:{route.port}{SMALL}"]  # fmt: skip
    text, used, own, other, wall = measure(argv, "wrk", workdir, watched, seconds + WRK_TIMEOUT + RUN_MARGIN)
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m is None or rps is None:
        raise BenchError(f"wrk through {route.name}: no request count in its output:\n{text}")
    return Run(
        rps=float(rps.group(1)),
        p50_ms=latency_ms(text, "50%"),
        p99_ms=latency_ms(text, "99%"),
        requests=int(m.group(1)),
        errors=wrk_errors(text),
        cores={name: s / wall for name, s in used.items()},
        wrk_cores=own / wall,
        other_cores=other / wall,
    )


def bulk(tools: dict[str, str], route: Route, workdir: Path) -> Transfer:
    argv = [tools["curl"], "-sS", "-o", "/dev/null", "--max-time", str(BULK_TIMEOUT), "-w",
            "%{http_code} %{size_download} %{speed_download}\n", f"http://127.0.0.1:{route.port}{BULK}"]  # fmt: skip
    text, used, _, _, _ = measure(argv, "curl", workdir, route.proxies, BULK_TIMEOUT + RUN_MARGIN)
    fields = text.split()
    if len(fields) != 3 or fields[0] != "200" or int(fields[1]) != BULK_BYTES:
        raise BenchError(f"curl through {route.name}: expected '200 {BULK_BYTES} <speed>', got {text!r}")
    return Transfer(float(fields[2]) / 2**20, used)


def describe(route: Route, r: Run) -> str:
    cores = " ".join(f"{k} {v:.2f}" for k, v in r.cores.items() if k in {p.name for p in route.proxies})
    return (f"  {route.name:11} {r.rps:9,.0f} req/s  p50 {r.p50_ms:6.3f} ms  p99 {r.p99_ms:6.3f} ms"
            f"  cores: [{cores}] nginx {r.cores['nginx']:.2f} wrk {r.wrk_cores:.2f} other {r.other_cores:.2f}"
            f"{'  ' + r.errors if r.errors else ''}")  # fmt: skip


# -- report --------------------------------------------------------------------------------------------


def version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, timeout=10, text=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


def latency_rows(routes: list[Route], tallies: dict[str, Tally], runs: int) -> list[list[str]]:
    direct = tallies["direct"]
    rows = [["path", "hops", f"req/s (median of {runs})", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "errors"]]
    for r in routes:
        t = tallies[r.name]
        p50, p99 = t.median("p50_ms"), t.median("p99_ms")
        added = [None if r.name == "direct" or x is None or d is None else x - d
                 for x, d in ((p50, direct.median("p50_ms")), (p99, direct.median("p99_ms")))]  # fmt: skip
        errors = "; ".join(sorted({run.errors for run in t.runs if run.errors})) or "0"
        rows.append([r.name + (" (extra)" if r.extra else ""), r.hops, fmt(t.median("rps"), ",.0f"), fmt(p50, ".3f"),
                     fmt(p99, ".3f"), fmt(added[0], ".3f"), fmt(added[1], ".3f"), errors])  # fmt: skip
    return rows


def ratio_rows(tallies: dict[str, Tally]) -> list[list[str]]:
    rows = [["buoy / haproxy", "req/s", "p50", "p99", "+p50", "+p99", "bulk MiB/s"]]
    d50, d99 = tallies["direct"].median("p50_ms"), tallies["direct"].median("p99_ms")

    def added(x: float | None, d: float | None) -> float | None:
        return None if x is None or d is None else x - d

    for label, b, h in (("pair: buoy / haproxy", "buoy", "haproxy"),
                        ("public listener: hap>buoy / haproxy", "hap>buoy", "haproxy")):  # fmt: skip
        tb, th = tallies[b], tallies[h]
        rows.append([label, fmt(ratio(tb.median("rps"), th.median("rps")), ".2f"),
                     fmt(ratio(tb.median("p50_ms"), th.median("p50_ms")), ".2f"),
                     fmt(ratio(tb.median("p99_ms"), th.median("p99_ms")), ".2f"),
                     fmt(ratio(added(tb.median("p50_ms"), d50), added(th.median("p50_ms"), d50)), ".2f"),
                     fmt(ratio(added(tb.median("p99_ms"), d99), added(th.median("p99_ms"), d99)), ".2f"),
                     fmt(ratio(tb.bulk_mib_s(), th.bulk_mib_s()), ".2f")])  # fmt: skip
    return rows


def cpu_rows(routes: list[Route], tallies: dict[str, Tally]) -> list[list[str]]:
    rows = [["path", "runs (req/s)", "proxy cores (CPU per request)", "proxy µs/req", "nginx cores", "wrk cores",
             "other cores", "bulk proxy CPU s / 100 MiB"]]  # fmt: skip
    for r in routes:
        runs = tallies[r.name].runs
        if not runs:
            continue
        names = [p.name for p in r.proxies]
        cores = "  ".join(f"{n} {statistics.median(run.cores[n] for run in runs):.2f} "
                          f"({statistics.median(1e6 * run.cores[n] / run.rps for run in runs if run.rps):.1f} µs/req)"
                          for n in names) or "-"  # fmt: skip
        per_req = statistics.median(1e6 * sum(run.cores[n] for n in names) / run.rps for run in runs if run.rps)
        bulk_cpu = "  ".join(f"{n} {statistics.median(t.cpu_s[n] for t in tallies[r.name].bulk):.2f}"
                             for n in names if tallies[r.name].bulk) or "-"  # fmt: skip
        rows.append([r.name, " ".join(f"{run.rps:,.0f}" for run in runs), cores, fmt(per_req if names else None, ".1f"),
                     f"{statistics.median(run.cores['nginx'] for run in runs):.2f}",
                     f"{statistics.median(run.wrk_cores for run in runs):.2f}",
                     f"{statistics.median(run.other_cores for run in runs):.2f}", bulk_cpu])  # fmt: skip
    return rows


def bulk_rows(routes: list[Route], tallies: dict[str, Tally]) -> list[list[str]]:
    rows = [["path", "MiB/s (median)", "runs (MiB/s)"]]
    for r in routes:
        t = tallies[r.name]
        if t.bulk:
            rows.append([r.name, fmt(t.bulk_mib_s(), ",.0f"), " ".join(f"{x.mib_s:,.0f}" for x in t.bulk)])
    return rows


def target_rows(tallies: dict[str, Tally]) -> list[list[str]]:
    buoy, public, hap = tallies["buoy"], tallies["hap>buoy"], tallies["haproxy"]

    def check(label: str, value: float | None, ok: bool) -> list[str]:
        # Three decimals: a ratio just under the target must not print as the target itself.
        return [label, fmt(value, ".3f"), "-" if value is None else "met" if ok else "NOT met"]

    rows = [["target", "ratio", "result"]]
    r = ratio(public.median("rps"), hap.median("rps"))
    rows.append(check(f"public listener req/s >= {PUBLIC_RPS_TARGET:g}x HAProxy server side", r,
                      r is not None and r >= PUBLIC_RPS_TARGET))
    r = ratio(public.median("p99_ms"), hap.median("p99_ms"))
    rows.append(check(f"public listener p99 <= {PUBLIC_P99_TARGET:g}x HAProxy server side", r,
                      r is not None and r <= PUBLIC_P99_TARGET))
    r = ratio(buoy.median("rps"), hap.median("rps"))
    rows.append(check(f"pair req/s >= {PAIR_RPS_TARGET:g}x HAProxy pair", r, r is not None and r >= PAIR_RPS_TARGET))
    r = ratio(buoy.bulk_mib_s(), hap.bulk_mib_s())
    rows.append(check(f"pair bulk MiB/s >= {BULK_TARGET:g}x HAProxy pair", r, r is not None and r >= BULK_TARGET))
    return rows


def report(args: argparse.Namespace, tools: dict[str, str], routes: list[Route], tallies: dict[str, Tally],
           notes: list[str]) -> str:  # fmt: skip
    cpus = len(os.sched_getaffinity(0))
    nginx = version([tools["nginx"], "-v"], r"nginx/(\S+)")
    haproxy = version([tools["haproxy"], "-v"], r"version (\S+)")
    wrk_version = version([tools["wrk"], "-v"], r"wrk (\S+)")
    versions = f"nginx {nginx}, HAProxy {haproxy} (nbthread 1 unless -2t), wrk {wrk_version}"
    out = [
        f"Proxy benchmark: HTTP/1.1 keep-alive GET of a {SMALL_BYTES}-byte body from nginx, wrk -t{args.threads} "
        f"-c{args.connections} --latency, {args.seconds:g} s per run after {args.warmup:g} s warm-up, {args.runs} runs "
        f"per path, paths alternating; bulk: {BULK_BYTES // 2**20} MiB by curl, {args.bulk_runs} runs per path",
        f"machine: {cpus} CPUs, Linux {platform.release()}, Python {platform.python_version()}, {versions}",
        *notes,
        "",
        table(latency_rows(routes, tallies, args.runs), right={2, 3, 4, 5, 6}),
        "+p50/+p99: added latency, the path's median minus the direct path's. 'haproxy' is both the HAProxy pair "
        "and the HAProxy server side of the public-listener comparison: 'hap>buoy' has the same client hop.",
        "",
        table(ratio_rows(tallies), right=set(range(1, 7))),
        "ratios above 1: Buoy has more req/s or MiB/s, or longer latencies.",
        "",
        table(bulk_rows(routes, tallies), right={1, 2}),
        "",
        table(cpu_rows(routes, tallies), right={4, 5, 6}),
        f"cores: CPU seconds per wall second during the wrk runs, median ({cpus} CPUs shared by all); "
        "proxy µs/req: the proxies' CPU per request, summed over the path's proxies; other: the rest of the "
        "machine, including loopback work charged to no process.",
        "",
        table(target_rows(tallies), right={1}),
    ]
    return "\n".join(out)


def log_problems(workdir: Path, routes: list[Route]) -> list[str]:
    """Warning and error lines in the proxies' logs, counted, with the first of each log."""
    names = sorted({p.name for r in routes for p in r.proxies} | {"nginx"})
    out = []
    for name in names:
        path = workdir / "logs" / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        bad = [ln for ln in lines if re.search(r"warn|error|alert|traceback|emerg", ln, re.I)]
        if bad:
            out.append(f"log {name}: {len(bad)} warning/error lines since start, first: {bad[0][:200]}")
    return out or ["proxy and nginx logs: no warning or error lines"]


def buoy_counters(metrics: dict[str, int]) -> dict[str, float]:
    """Every counter sample of the Buoy proxies, keyed by proxy name and sample; a proxy that does not answer
    is left out."""
    out: dict[str, float] = {}
    for name, port in metrics.items():
        try:
            text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("buoy_proxy_") and "_total" in line:
                sample, _, value = line.rpartition(" ")
                out[f"{name} {sample}"] = float(value)
    return out


def counter_notes(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """What the Buoy proxies counted during the measured runs: connections accepted and failures, if any."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    accepted = {k.replace("buoy_proxy_connections_total", ""): v for k, v in delta.items()
                if "buoy_proxy_connections_total" in k and v}  # fmt: skip
    failures = [f"{k} +{v:g}" for k, v in delta.items()
                if v and re.search(r"buoy_proxy_\w*(failures|denied|rejected|timeouts)_total", k)]  # fmt: skip
    if not after:
        return ["buoy proxy counters: metrics unavailable"]
    return [f"buoy proxy counters during the runs: connections accepted "
            f"{', '.join(f'{k} +{v:g}' for k, v in accepted.items()) or 'none'}; failures: "
            f"{'; '.join(failures) or 'none'}"]


def idle_load(seconds: float = 2.0) -> float:
    """Cores the machine uses before the bench starts anything: what every run's "other" starts from."""
    busy0 = cluster.machine_cpu()[0]
    time.sleep(seconds)
    return (cluster.machine_cpu()[0] - busy0) / seconds


# -- driver --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--runs", type=int, default=3, help="wrk runs per path, paths alternating (default 3)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured wrk seconds per path first (default 2)")
    p.add_argument("--bulk-runs", type=int, default=3, help="100 MiB downloads per path (default 3; 0: none)")
    # One wrk thread keeps the generator to one core of the two this bench was written for, leaving the other
    # to the proxies and nginx; 32 connections keep every hop of a path busy without turning the latency into
    # mostly queueing. Every path gets the same settings.
    p.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    p.add_argument("--no-2t", dest="two_threads", action="store_false",
                   help="skip the extra HAProxy nbthread 2 paths")
    add_run_options(p, 30.0, "each process to be ready")
    args = p.parse_args(argv)
    if not 0 < args.seconds <= 120 or not 0 <= args.warmup <= 60:
        p.error("--seconds must be in (0, 120] and --warmup in [0, 60]")
    if not 1 <= args.runs <= 9 or not 0 <= args.bulk_runs <= 9:
        p.error("--runs must be between 1 and 9, --bulk-runs between 0 and 9")
    if not 1 <= args.threads <= 16 or not args.threads <= args.connections <= 1024:
        p.error("--threads must be between 1 and 16, --connections between --threads and 1024")
    if not 1 <= args.start_timeout <= 300:
        p.error("--start-timeout must be between 1 and 300 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools = find_tools()
    if tools is None:
        curl = "" if shutil.which("curl") else " curl"  # nearly always there; named only when missing
        log(f"nginx, haproxy, wrk and curl are needed; install them with:\n  {INSTALL}{curl}")
        return 1
    python = cluster.VENV_PYTHON if cluster.VENV_PYTHON.exists() else Path(sys.executable)
    routes: list[Route] = []
    tallies: dict[str, Tally] = {}
    notes: list[str] = []

    def body(workdir: Path) -> int:
        nonlocal routes, tallies
        before = idle_load()
        notes.append(f"machine load before the bench started anything: {before:.2f} cores"
                     + (" -- something else is running; expect lower, noisier figures" if before > 0.2 else ""))
        log(notes[-1])
        log("starting nginx, buoy, haproxy ...")
        setup = start_all(workdir, tools, python, args)
        routes = setup.routes
        tallies = {r.name: Tally() for r in routes}
        # The same client leaf against both server sides: they must agree on protocol and cipher to compare.
        tls = ", ".join(f"{name} {handshake(port, setup.certs)}" for name, port in setup.tls_ports.items())
        notes.append(f"TLS, client leaf to each server side: {tls}; leaf keys: {setup.certs.key_type}")
        watched = setup.watched()
        counters = buoy_counters(setup.metrics)  # after the readiness checks, which may count refusals
        if args.warmup:
            log("warm-up")
            for r in routes:
                wrk(tools, r, workdir, args, args.warmup, watched)
        for run in range(args.runs):
            log(f"wrk run {run + 1} of {args.runs}")
            for r in routes:
                result = wrk(tools, r, workdir, args, args.seconds, watched)
                tallies[r.name].runs.append(result)
                log(describe(r, result))
        for run in range(args.bulk_runs):
            log(f"bulk run {run + 1} of {args.bulk_runs}")
            for r in routes:
                t = bulk(tools, r, workdir)
                tallies[r.name].bulk.append(t)
                log(f"  {r.name:11} {t.mib_s:8,.0f} MiB/s  proxy CPU s: "
                    + " ".join(f"{k} {v:.2f}" for k, v in t.cpu_s.items()))
        notes.extend(counter_notes(counters, buoy_counters(setup.metrics)) + log_problems(workdir, routes))
        print(report(args, tools, routes, tallies, notes))
        return 0

    def partial() -> None:
        if tallies and any(t.runs for t in tallies.values()):
            print(report(args, tools, routes, tallies, notes))

    return run_bench("buoy-bench-proxy-", args.workdir, args.keep, body, failures=(OSError,), on_failure=partial)


if __name__ == "__main__":
    sys.exit(main())
