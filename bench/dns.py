"""DNS benchmark: Buoy's DNS interface against unbound, on one machine, in one run.

    python -m bench.dns [--seconds 10] [--runs 3] [--clients 4] [--outstanding 200] [--rate 2000] [--keep]

A `buoy agent -dev` answers `web.service.consul A` (three registered instances) on its DNS port; unbound, with
one and with two threads, answers the same records as local data. dnsperf loads each server in turn with the
same query and client settings, then paces each at a fixed rate for per-query latency. Needs the Debian
packages dnsperf and unbound. See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import QTYPE, DNSRecord

from bench import cluster
from bench.checks import pct
from bench.cluster import Proc
from bench.kv import BenchError, add_run_options, fmt, int_list, log, ratio, run_bench, table

QNAME = "web.service.consul."
ADDRESSES = ("192.0.2.1", "192.0.2.2", "192.0.2.3")  # TEST-NET-1: answered, never contacted
INSTALL = "apt-get install -y dnsperf unbound"
QPS_RATIO_TARGET = 0.8
P99_TARGET_MS = 1.0
QUERY_TIMEOUT = 2  # dnsperf -t: an answer later than this is lost; far above any target, and it bounds each run
RUN_MARGIN = 15.0  # s past -l and -t that a dnsperf run may take before the bench gives up on it
# Buoy asks the kernel for a 4 MiB UDP receive buffer (buoy.dns.server.UDP_RCVBUF). Unbound gets the same:
# with the default (about 200 KiB) 200 outstanding queries overflow it and dnsperf counts them as lost.
UNBOUND_RCVBUF = "4m"


@dataclass
class Server:
    name: str
    port: int
    proc: Proc


@dataclass
class Result:
    """One dnsperf run, parsed, with the CPU used meanwhile."""

    qps: float
    sent: int
    lost: int
    rcodes: str
    response_bytes: int
    avg_ms: float
    max_ms: float
    latencies_ms: list[float]  # per query, from -v (paced runs only)
    server_cores: float
    client_cores: float
    other_cores: float  # the rest of the machine


@dataclass
class Tally:
    throughput: list[Result] = field(default_factory=list)
    paced: Result | None = None

    def median_qps(self) -> float | None:
        return statistics.median(r.qps for r in self.throughput) if self.throughput else None

    def summary(self) -> tuple[float | None, float | None, float | None]:
        """Median q/s of the throughput runs; p50 and p99 ms of the paced run."""
        lat = self.paced.latencies_ms if self.paced else []
        return self.median_qps(), pct(lat, 0.5), pct(lat, 0.99)

    def lost(self) -> int:
        return sum(r.lost for r in self.throughput) + (self.paced.lost if self.paced else 0)

    def errors(self) -> list[str]:
        """dnsperf's response-code summary of every run whose answers were not all NOERROR."""
        runs = self.throughput + ([self.paced] if self.paced else [])
        return sorted({r.rcodes for r in runs if not re.fullmatch(r"NOERROR \d+ \(100\.00%\)", r.rcodes)})


def find_tools() -> dict[str, str] | None:
    """Paths of dnsperf and unbound; unbound lives in /usr/sbin, which a user's PATH may lack."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = {name: shutil.which(name, path=path) for name in ("dnsperf", "unbound")}
    return {k: v for k, v in found.items() if v} if all(found.values()) else None


def ask(port: int) -> list[tuple[int, str]]:
    """(TTL, address) of each A record the server at port answers for QNAME, sorted; empty if it is not NOERROR."""
    reply = DNSRecord.parse(DNSRecord.question(QNAME, "A").send("127.0.0.1", port, timeout=1.0))
    if reply.header.rcode != 0:
        return []
    return sorted((rr.ttl, str(rr.rdata)) for rr in reply.rr if rr.rtype == QTYPE.A)


def start_buoy(workdir: Path, python: Path, timeout: float) -> Server:
    dns, http, server = cluster.free_ports(3)
    # -dev keeps everything in memory: the data dir buoy_agent_argv names stays empty.
    role = ["-dev", "-server-port", str(server)]
    argv = cluster.buoy_agent_argv(python, workdir, "dns", http, cluster.buoy_key(python), role, dns_port=dns)
    proc = cluster.spawn("buoy", argv, workdir / "logs" / "buoy.log")
    api = f"http://127.0.0.1:{http}"
    cluster.wait_until("buoy leader", [proc], timeout, lambda: cluster.http_json("GET", f"{api}/v1/status/leader"))
    for i, address in enumerate(ADDRESSES, 1):
        service = {"ID": f"web-{i}", "Name": "web", "Address": address, "Port": 80}
        cluster.http_json("PUT", f"{api}/v1/agent/service/register", service)
    # The first question opens the view; asking until all three instances are there also warms it.
    cluster.wait_until("buoy DNS answer", [proc], timeout, lambda: len(ask(dns)) == len(ADDRESSES))
    return Server("buoy", dns, proc)


def unbound_conf(directory: Path, port: int, threads: int, records: list[tuple[int, str]]) -> str:
    lines = [
        "server:",
        "    do-daemonize: no",
        '    username: ""',
        '    chroot: ""',
        f'    directory: "{directory}"',
        '    pidfile: ""',
        "    use-syslog: no",
        '    logfile: ""',
        "    verbosity: 1",
        f"    interface: 127.0.0.1@{port}",
        "    do-ip6: no",
        f"    num-threads: {threads}",
        "    so-reuseport: yes",  # one socket per thread, so that the kernel spreads queries over the threads
        f"    so-rcvbuf: {UNBOUND_RCVBUF}",
        "    access-control: 127.0.0.0/8 allow",
        '    module-config: "iterator"',  # no validator: nothing to load, and local data never reaches it
        '    local-zone: "consul." static',
        *(f'    local-data: "{QNAME} {ttl} IN A {address}"' for ttl, address in records),
        "remote-control:",
        "    control-enable: no",
    ]
    return "\n".join(lines) + "\n"


def start_unbound(workdir: Path, unbound: str, threads: int, records: list[tuple[int, str]], timeout: float) -> Server:
    (port,) = cluster.free_ports(1)
    name = f"unbound-{threads}t"
    directory = workdir / name
    directory.mkdir()
    conf = directory / "unbound.conf"
    conf.write_text(unbound_conf(directory, port, threads, records))
    proc = cluster.spawn(name, [unbound, "-d", "-c", str(conf)], workdir / "logs" / f"{name}.log")
    cluster.wait_until(f"{name} answer", [proc], timeout, lambda: ask(port) == records)
    return Server(name, port, proc)


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    if m is None:
        raise BenchError(f"dnsperf output has no match for {pattern!r}:\n{text}")
    return float(m.group(1))


def dnsperf(dnsperf_bin: str, server: Server, queries: Path, workdir: Path, flags: list[str], seconds: float,
            verbose: bool = False) -> Result:  # fmt: skip
    argv = [dnsperf_bin, "-s", "127.0.0.1", "-p", str(server.port), "-d", str(queries), "-t", str(QUERY_TIMEOUT),
            *flags, *(["-v"] if verbose else [])]  # fmt: skip
    gen = cluster.spawn("dnsperf", argv, workdir / "logs" / "dnsperf.log", pipe_stdout=True)
    try:
        start = time.monotonic()
        cpu0, machine0 = cluster.cpu_seconds([server.proc.pid, gen.pid]), cluster.machine_cpu()
        deadline = start + seconds + QUERY_TIMEOUT + RUN_MARGIN
        lines: list[str] = []
        # Drained as it comes: with -v a paced run prints a line per query, more than a pipe holds.
        while (line := gen.readline(deadline)) is not None:
            lines.append(line)
        # At end of output dnsperf has exited or is exiting; it is not reaped yet, so /proc still has its times.
        cpu1, machine1 = cluster.cpu_seconds([server.proc.pid, gen.pid]), cluster.machine_cpu()
        wall = max(1e-9, time.monotonic() - start)
        code = gen.popen.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise BenchError(f"dnsperf against {server.name} did not finish in time\n{gen.tail()}") from None
    finally:
        cluster.stop(gen)
    text = "\n".join(lines)
    if code != 0 or "Statistics:" not in text:
        raise BenchError(f"dnsperf against {server.name} exited with code {code}\n{text[-2000:]}\n{gen.tail()}")
    # An answer's verbose line is "> NOERROR web.service.consul A 0.000123": its code, the query, the seconds.
    answered = (re.fullmatch(r"> \S+ .* (\d+\.\d+)", ln) for ln in lines)
    latencies = [1000 * float(m.group(1)) for m in answered if m]
    rcodes = re.search(r"Response codes:\s+(.*)", text)
    server_cores = (cpu1[server.proc.pid] - cpu0[server.proc.pid]) / wall
    client_cores = (cpu1[gen.pid] - cpu0[gen.pid]) / wall
    return Result(
        qps=number(r"Queries per second:\s+([\d.]+)", text),
        sent=int(number(r"Queries sent:\s+(\d+)", text)),
        lost=int(number(r"Queries lost:\s+(\d+)", text)),
        rcodes=rcodes.group(1).strip() if rcodes else "none",
        response_bytes=int(number(r"Average packet size:\s+request \d+, response (\d+)", text)),
        avg_ms=1000 * number(r"Average Latency \(s\):\s+([\d.]+)", text),
        max_ms=1000 * number(r"Average Latency \(s\):.*max ([\d.]+)", text),
        latencies_ms=latencies,
        server_cores=server_cores,
        client_cores=client_cores,
        other_cores=max(0.0, (machine1[0] - machine0[0]) / wall - server_cores - client_cores),
    )


def describe(server: Server, what: str, r: Result) -> str:
    lat = f", p50 {pct(r.latencies_ms, 0.5):.3f} ms p99 {pct(r.latencies_ms, 0.99):.3f} ms" if r.latencies_ms else ""
    return (f"  {server.name:10} {what:10} {r.qps:9,.0f} q/s  sent {r.sent:,} lost {r.lost}  avg {r.avg_ms:.3f} ms"
            f"{lat}  cores: server {r.server_cores:.2f} dnsperf {r.client_cores:.2f} other {r.other_cores:.2f}"
            f"  [{r.rcodes}]")  # fmt: skip


def version(argv: list[str]) -> str:
    """The "Version x.y.z" that dnsperf -h and unbound -V both print."""
    try:
        out = subprocess.run(argv, capture_output=True, timeout=10, text=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    m = re.search(r"Version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


def report(args: argparse.Namespace, tools: dict[str, str], servers: list[Server], tallies: dict[str, Tally],
           records: list[tuple[int, str]]) -> str:  # fmt: skip
    unbounds = [s for s in servers if s.name != "buoy" and tallies[s.name].median_qps() is not None]
    best = max(unbounds, key=lambda s: tallies[s.name].median_qps() or 0.0, default=None)
    sizes = {r.response_bytes for t in tallies.values() for r in t.throughput}
    client = f"-c {args.clients} -q {args.outstanding} -t {QUERY_TIMEOUT}"
    out = [
        f"DNS benchmark: {QNAME} A over UDP on 127.0.0.1, {len(records)} A records with TTL "
        f"{','.join(sorted({str(t) for t, _ in records}))}, answers of {'/'.join(map(str, sorted(sizes)))} bytes",
        f"throughput: dnsperf {client} -l {args.seconds:g}, {args.runs} runs per server, servers alternating; "
        f"latency: dnsperf {client} -l {args.paced_seconds:g} -Q {args.rate} -v (per-query times; this dnsperf "
        "has no latency histogram)",
        f"machine: {len(os.sched_getaffinity(0))} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}, dnsperf {version([tools['dnsperf'], '-h'])}, "
        f"unbound {version([tools['unbound'], '-V'])}",
        "",
    ]
    buoy = tallies["buoy"]
    peer = tallies[best.name] if best else None
    at = f"@{args.rate:,} q/s"
    rows = [["server", f"q/s (median of {args.runs})", "lost", f"p50 ms {at}", f"p99 ms {at}"]]
    for s in servers:
        qps, p50, p99 = tallies[s.name].summary()
        rows.append([s.name + (" *" if s is best else ""), fmt(qps, ",.0f"), str(tallies[s.name].lost()),
                     fmt(p50, ".3f"), fmt(p99, ".3f")])  # fmt: skip
    qps_r, p50_r, p99_r = (ratio(b, u) for b, u in zip(buoy.summary(), peer.summary() if peer else [None] * 3,
                                                        strict=True))  # fmt: skip
    if best is not None:
        rows.append([f"buoy/{best.name}", fmt(qps_r, ".2f"), "-", fmt(p50_r, ".2f"), fmt(p99_r, ".2f")])
    out.append(table(rows, right={1, 2, 3, 4}))
    out.append("* the better unbound (higher median q/s), the peer of the ratios and targets. lost: every run, "
               "throughput and paced. Ratios: above 1 Buoy has more q/s, or longer latencies.")  # fmt: skip
    detail = [["server", "runs (q/s)", "server cores", "server µs/query", "dnsperf cores", "other cores",
               f"lost {at}", f"avg ms {at}", f"max ms {at}"]]  # fmt: skip
    for s in servers:
        runs, paced = tallies[s.name].throughput, tallies[s.name].paced
        cores = [statistics.median(getattr(r, a) for r in runs) if runs else None
                 for a in ("server_cores", "client_cores", "other_cores")]  # fmt: skip
        per_query = statistics.median(1e6 * r.server_cores / r.qps for r in runs if r.qps) if runs else None
        detail.append([
            s.name, " ".join(f"{r.qps:,.0f}" for r in runs) or "-", fmt(cores[0], ".2f"), fmt(per_query, ".1f"),
            fmt(cores[1], ".2f"), fmt(cores[2], ".2f"), str(paced.lost) if paced else "-",
            fmt(paced.avg_ms if paced else None, ".3f"), fmt(paced.max_ms if paced else None, ".3f"),
        ])  # fmt: skip
    out += ["", table(detail, right=set(range(1, 9)))]
    out.append(f"cores: CPU seconds per wall second during the throughput runs, median ({len(os.sched_getaffinity(0))} "
               "CPUs shared by all); other: the rest of the machine, including kernel work on the packets that is "
               "charged to no process. When server + dnsperf + other is near the CPU count, the machine, not the "
               "server, is the limit: compare µs/query.")  # fmt: skip
    p99 = buoy.summary()[2]
    complete = len(buoy.throughput) == args.runs and buoy.paced is not None
    errors = buoy.errors()

    def verdict(measured: bool, ok: bool) -> str:
        return "PASS" if measured and ok else "MISS" if measured else "-"

    targets = [
        ["target", "buoy", "result"],
        [f"q/s ratio buoy/{best.name if best else 'unbound'} >= {QPS_RATIO_TARGET:g}", fmt(qps_r, ".2f"),
         verdict(qps_r is not None, qps_r is not None and qps_r >= QPS_RATIO_TARGET)],
        [f"p99 ms at {args.rate:,} q/s < {P99_TARGET_MS:g}", fmt(p99, ".3f"),
         verdict(p99 is not None, p99 is not None and p99 < P99_TARGET_MS)],
        ["lost answers = 0, all NOERROR (every run)", str(buoy.lost()) + (f", {errors}" if errors else ""),
         verdict(complete, buoy.lost() == 0 and not errors)],
    ]  # fmt: skip
    out += ["", table(targets, right=set())]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.dns", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput run, dnsperf -l (default 10)")
    p.add_argument("--runs", type=int, default=3, help="throughput runs per server, alternating (default 3)")
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c, client sockets (default 4)")
    p.add_argument("--outstanding", type=int, default=200, help="dnsperf -q, queries in flight (default 200)")
    p.add_argument("--rate", type=int, default=2000, help="dnsperf -Q of the latency run, q/s (default 2000)")
    p.add_argument("--paced-seconds", type=float, default=5.0, help="seconds of the latency run (default 5)")
    p.add_argument(
        "--unbound-threads", type=int_list, default=[1, 2],
        help="unbound num-threads settings to measure; the best is the peer (default 1,2)",
    )  # fmt: skip
    add_run_options(p, 30.0, "each server to answer")
    args = p.parse_args(argv)
    if not 0 < args.seconds <= 120 or not 0 < args.paced_seconds <= 120:
        p.error("--seconds and --paced-seconds must be in (0, 120]")
    if not 1 <= args.runs <= 9:
        p.error("--runs must be between 1 and 9")
    if not 1 <= args.clients <= 64 or not 1 <= args.outstanding <= 10_000:
        p.error("--clients must be between 1 and 64, --outstanding between 1 and 10000")
    if not 1 <= args.rate <= 100_000:
        p.error("--rate must be between 1 and 100000")
    if not args.unbound_threads or any(not 1 <= n <= 16 for n in args.unbound_threads):
        p.error("--unbound-threads takes thread counts between 1 and 16")
    if not 1 <= args.start_timeout <= 300:
        p.error("--start-timeout must be between 1 and 300 seconds")
    args.unbound_threads = sorted(set(args.unbound_threads))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools = find_tools()
    if tools is None:
        log(f"dnsperf and unbound are needed; install them with:\n  {INSTALL}")
        return 2
    python = cluster.VENV_PYTHON if cluster.VENV_PYTHON.exists() else Path(sys.executable)
    servers: list[Server] = []
    tallies: dict[str, Tally] = {}
    records: list[tuple[int, str]] = []

    def body(workdir: Path) -> int:
        nonlocal records, tallies
        log("starting buoy ...")
        servers.append(start_buoy(workdir, python, args.start_timeout))
        # Unbound serves exactly what Buoy answers, TTL included, so both send the same bytes back.
        records = ask(servers[0].port)
        log(f"  buoy answers {records} (TTL, address) on :{servers[0].port}")
        for threads in args.unbound_threads:
            servers.append(start_unbound(workdir, tools["unbound"], threads, records, args.start_timeout))
            log(f"  {servers[-1].name} answers the same on :{servers[-1].port}")
        tallies = {s.name: Tally() for s in servers}
        queries = workdir / "queries.txt"
        queries.write_text(f"{QNAME.rstrip('.')} A\n")
        client = ["-c", str(args.clients), "-q", str(args.outstanding)]
        for s in servers:  # one query in dnsperf's own form, so that Buoy's kept answer for it exists
            dnsperf(tools["dnsperf"], s, queries, workdir, ["-n", "1"], 0)
        for run in range(args.runs):
            log(f"throughput run {run + 1} of {args.runs}")
            for s in servers:
                r = dnsperf(tools["dnsperf"], s, queries, workdir, [*client, "-l", f"{args.seconds:g}"], args.seconds)
                tallies[s.name].throughput.append(r)
                log(describe(s, "throughput", r))
        log(f"latency at {args.rate} q/s")
        for s in servers:
            flags = [*client, "-l", f"{args.paced_seconds:g}", "-Q", str(args.rate)]
            r = dnsperf(tools["dnsperf"], s, queries, workdir, flags, args.paced_seconds, verbose=True)
            tallies[s.name].paced = r
            log(describe(s, "paced", r))
        print(report(args, tools, servers, tallies, records))
        return 0

    def partial() -> None:
        if tallies:
            print(report(args, tools, servers, tallies, records))

    return run_bench("buoy-bench-dns-", args.workdir, args.keep, body, failures=(OSError,), on_failure=partial)

if __name__ == "__main__":
    sys.exit(main())
