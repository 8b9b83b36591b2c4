"""Health-check benchmark: one agent running 1,000 HTTP checks.

    python -m bench.checks [--checks 1000] [--interval 10] [--window 60] [--samples 50] [--clients] [--keep]

An endpoint server (its own process) answers the probes; the checks agent of a Buoy cluster runs one HTTP
check per endpoint. The bench measures that agent's CPU and memory while it only probes, then fails one
endpoint at a time and times how long an observer agent keeps the instance in its `?passing` answer.
See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from bench import cluster
from bench.bare import use_uvloop
from bench.cluster import Proc
from bench.kv import BenchError, add_run_options, fmt, log, machine, run_bench, table

CPU_TARGET = 10.0  # % of one core
RSS_TARGET = 80.0  # MB
PROPAGATION_SLACK = 1.0  # s on top of one interval
TARGET_SHAPE = (1000, 10.0)  # checks, interval: the configuration the CPU and RSS targets are stated for
CHECK_TIMEOUT = 1.0
REGISTER_WORKERS = 8
POLL = 0.05  # s between reads of the checks agent's own check status
WAIT_MARGIN = 30.0  # s past one interval that any single wait of the propagation phase may take


# ---- endpoint server (its own process: `python -m bench.checks --serve-endpoints PORT`) ----------------


def serve_endpoints(port: int) -> None:
    """GET /health/<n> is 200, or 500 after POST /flip/<n> until DELETE /flip/<n>; bodies never change, so a
    check's output only changes with its status and the agent has no output-only updates to push."""
    failing: set[int] = set()

    async def health(request: web.Request) -> web.Response:
        if int(request.match_info["n"]) in failing:
            return web.json_response({"healthy": False}, status=500)
        return web.json_response({"healthy": True})

    async def flip(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if request.method == "POST":
            failing.add(n)
        else:
            failing.discard(n)
        return web.Response()

    app = web.Application()
    app.router.add_get(r"/health/{n:\d+}", health)
    app.router.add_post(r"/flip/{n:\d+}", flip)
    app.router.add_delete(r"/flip/{n:\d+}", flip)
    use_uvloop()
    # Every probe is a new connection (the agent does not keep them alive): a deep backlog absorbs bursts.
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024)


def start_endpoints(workdir: Path, python: Path, timeout: float) -> tuple[int, Proc]:
    (port,) = cluster.free_ports(1)
    argv = [str(python), "-m", "bench.checks", "--serve-endpoints", str(port)]
    proc = cluster.spawn("endpoints", argv, workdir / "logs" / "endpoints.log")
    cluster.wait_until("endpoint server", [proc], timeout,
                       lambda: cluster.http_json("GET", f"http://127.0.0.1:{port}/health/0"))  # fmt: skip
    return port, proc


# ---- agents ---------------------------------------------------------------------------------------------


@dataclass
class Agent:
    name: str
    port: int  # HTTP
    proc: Proc

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start_agents(workdir: Path, python: Path, clients: bool, timeout: float) -> tuple[Agent, Agent, list[Proc]]:
    """The topology, decided here only: (agent that runs the checks, agent that observes, every process)."""
    key = cluster.buoy_key(python)
    servers = cluster.start_buoy(workdir, python, timeout, key=key)
    log(f"  servers up: {servers.info}")
    by_name = {p.name: p for p in servers.procs}
    if not clients:
        # Followers, as most agents are: the checks' updates and the observer's reads both go through the
        # leader, which is the path a cluster's agents take.
        checks, observer = (Agent(n, servers.http[n], by_name[n]) for n in by_name if n != servers.leader)
        return checks, observer, servers.procs
    joins = [arg for port in servers.http.values() for arg in ("-retry-join", f"127.0.0.1:{port}")]
    agents = []
    for name, port in zip(("c1", "c2"), cluster.free_ports(2), strict=True):
        argv = cluster.buoy_agent_argv(python, workdir, name, port, key, joins)
        agents.append(Agent(name, port, cluster.spawn(name, argv, workdir / "logs" / f"{name}.log")))
    procs = [*servers.procs, *(a.proc for a in agents)]
    for a in agents:
        leader = functools.partial(cluster.http_json, "GET", a.url("/v1/status/leader"))
        cluster.wait_until(f"client agent {a.name} knows the leader", procs, timeout, leader)
    return agents[0], agents[1], procs


# ---- measurement ----------------------------------------------------------------------------------------


@dataclass
class Results:
    topology: str = ""
    register_s: float | None = None
    ready_s: float | None = None  # registration done -> every check passing in the catalog
    passing: int | None = None  # checks passing in the catalog when the wait for all of them ended
    cpu: dict[str, list[float]] = field(default_factory=dict)  # agent name -> % of one core per window
    rss_mb: list[float] = field(default_factory=list)
    other: list[float] = field(default_factory=list)  # cores used by processes the bench did not start, per window
    steal: list[float] = field(default_factory=list)  # cores the hypervisor took, per window
    gone_s: list[float] = field(default_factory=list)  # flip -> gone from the observer's ?passing answer
    critical_s: list[float] = field(default_factory=list)  # flip -> critical in the checks agent's view
    poll_ms: list[float] = field(default_factory=list)  # answer times of the checks agent's /v1/agent/checks
    timeouts: int = 0


def service(n: int) -> str:
    return f"svc-{n}"


def check_id(n: int) -> str:
    return f"service:{service(n)}"  # the ID the agent gives a service's only embedded check


async def register(http: aiohttp.ClientSession, agent: Agent, endpoints: int, args: argparse.Namespace) -> None:
    todo = iter(range(args.checks))

    async def worker() -> None:
        for n in todo:
            body = {"ID": service(n), "Name": service(n), "Port": endpoints,
                    "Check": {"HTTP": f"http://127.0.0.1:{endpoints}/health/{n}",
                              "Interval": f"{args.interval:g}s", "Timeout": f"{CHECK_TIMEOUT:g}s"}}  # fmt: skip
            async with http.put(agent.url("/v1/agent/service/register"), json=body) as resp:
                if resp.status != 200:
                    raise BenchError(f"registering {service(n)}: {resp.status} {await resp.text()}")

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(REGISTER_WORKERS))), args.checks * 0.5 + 60)


async def wait_all_passing(http: aiohttp.ClientSession, observer: Agent, procs: list[Proc], checks: int,
                           timeout: float) -> int:  # fmt: skip
    """How many of the checks the catalog shows passing: all of them, or as many as at the timeout."""
    wanted = {check_id(n) for n in range(checks)}
    deadline = time.monotonic() + timeout
    passing = 0
    while time.monotonic() < deadline:
        dead = [p.name for p in procs if not p.alive()]
        if dead:
            raise BenchError(f"{', '.join(dead)} exited while the checks came up")
        async with http.get(observer.url("/v1/health/state/passing")) as resp:
            rows = await resp.json() if resp.status == 200 else []
        passing, before = len(wanted.intersection(c["CheckID"] for c in rows)), passing
        if passing == checks:
            return passing
        if passing // (checks // 10 or 1) != before // (checks // 10 or 1):
            log(f"  {passing} of {checks} checks passing in the catalog")
        await asyncio.sleep(1.0)
    return passing


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


async def steady_state(agents: list[Agent], procs: list[Proc], args: argparse.Namespace, res: Results) -> None:
    """CPU per window of one interval (each check probes once per window) and RSS once a second, while
    nothing but the checks' own traffic reaches the agents. What the rest of the machine used meanwhile
    tells whether the window was quiet enough to trust."""
    span = min(args.interval, args.window)
    pids = [p.pid for p in procs]
    for i in range(max(1, int(args.window // span))):
        t0, cpu0, machine0 = time.monotonic(), cluster.cpu_seconds(pids), cluster.machine_cpu()
        while time.monotonic() - t0 < span:
            res.rss_mb.append(rss_mb(agents[0].proc.pid))
            await asyncio.sleep(min(1.0, span - (time.monotonic() - t0)))
        wall, cpu1, machine1 = time.monotonic() - t0, cluster.cpu_seconds(pids), cluster.machine_cpu()
        for a in agents:
            res.cpu.setdefault(a.name, []).append(100 * (cpu1[a.proc.pid] - cpu0[a.proc.pid]) / wall)
        ours = sum(cpu1[pid] - cpu0[pid] for pid in pids)
        res.other.append(max(0.0, machine1[0] - machine0[0] - ours) / wall)
        res.steal.append((machine1[1] - machine0[1]) / wall)
        log(f"  window {i + 1}: " + ", ".join(f"{a.name} {res.cpu[a.name][-1]:.1f}% CPU" for a in agents)
            + f", {agents[0].name} RSS {res.rss_mb[-1]:.1f} MB")  # fmt: skip


async def until_listed(http: aiohttp.ClientSession, observer: Agent, n: int, listed: bool, index: int,
                       deadline: float) -> tuple[float, int]:  # fmt: skip
    """Blocking queries on the observer until svc-n is (or is no longer) in its ?passing answer: the
    monotonic time that answer arrived, and its index."""
    while (left := deadline - time.monotonic()) > 0:
        params = {"passing": "", "index": str(index), "wait": f"{max(1, int(left))}s"}
        timeout = aiohttp.ClientTimeout(total=left * 1.1 + 5)  # the agent adds up to wait/16 of jitter
        async with http.get(observer.url(f"/v1/health/service/{service(n)}"), params=params,
                            timeout=timeout) as resp:  # fmt: skip
            body = await resp.json() if resp.status == 200 else None
            index = int(resp.headers.get("X-Consul-Index", index))
        if body is None:
            raise BenchError(f"observer: {resp.status} for {service(n)}")
        if bool(body) == listed:
            return time.monotonic(), index
    raise TimeoutError


async def until_critical(http: aiohttp.ClientSession, checks: Agent, n: int, since: float, deadline: float,
                         poll_ms: list[float]) -> float:  # fmt: skip
    """When the check turned critical in the agent's own view, to within half a poll: the midpoint between
    the last poll that did not see it (or `since`, the flip) and the answer of the first one that did."""
    last_miss = since
    while time.monotonic() < deadline:
        sent = time.monotonic()
        async with http.get(checks.url("/v1/agent/checks")) as resp:
            status = (await resp.json()).get(check_id(n), {}).get("Status")
        now = time.monotonic()
        poll_ms.append(1000 * (now - sent))
        if status == "critical":
            return (max(last_miss, since) + now) / 2
        last_miss = sent
        await asyncio.sleep(POLL)
    raise TimeoutError


async def propagation(http: aiohttp.ClientSession, checks: Agent, observer: Agent, endpoints: int,
                      args: argparse.Namespace, res: Results) -> None:  # fmt: skip
    bound = args.interval + CHECK_TIMEOUT + WAIT_MARGIN
    for i, n in enumerate(random.Random(args.seed).sample(range(args.checks), args.samples)):
        _, index = await until_listed(http, observer, n, True, 0, time.monotonic() + bound)
        t0 = time.monotonic()
        deadline = t0 + bound
        critical = asyncio.create_task(until_critical(http, checks, n, t0, deadline, res.poll_ms))
        gone = asyncio.create_task(until_listed(http, observer, n, False, index, deadline))
        try:
            async with http.post(f"http://127.0.0.1:{endpoints}/flip/{n}") as resp:
                resp.raise_for_status()
            (t_gone, index), t_critical = await gone, await critical
            res.gone_s.append(t_gone - t0)
            res.critical_s.append(t_critical - t0)
            log(f"  sample {i + 1}/{args.samples} {service(n)}: critical on {checks.name} after "
                f"{t_critical - t0:.2f} s, gone from {observer.name} after {t_gone - t0:.2f} s")  # fmt: skip
        except TimeoutError:
            res.timeouts += 1
            log(f"  sample {i + 1}/{args.samples} {service(n)}: not gone from {observer.name} within {bound:.0f} s")
        finally:
            for task in (critical, gone):
                task.cancel()
            async with http.delete(f"http://127.0.0.1:{endpoints}/flip/{n}") as resp:
                resp.raise_for_status()
        # Back to passing before the next sample, so that samples do not overlap.
        await until_listed(http, observer, n, True, index, time.monotonic() + bound)


async def measure(args: argparse.Namespace, checks: Agent, observer: Agent, procs: list[Proc],
                  endpoints: int, res: Results) -> None:  # fmt: skip
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        t0 = time.monotonic()
        await register(http, checks, endpoints, args)
        res.register_s = time.monotonic() - t0
        log(f"registered {args.checks} services on {checks.name} in {res.register_s:.1f} s")
        t0 = time.monotonic()
        res.passing = await wait_all_passing(http, observer, procs, args.checks, args.ready_timeout)
        if res.passing == args.checks:
            res.ready_s = time.monotonic() - t0
            log(f"all {args.checks} checks passing in the catalog {res.ready_s:.1f} s later")
            # The first round of probes turned every check from critical to passing, each a catalog update: let
            # the last of those, and the anti-entropy they trigger, finish before measuring.
            await asyncio.sleep(args.interval)
        else:
            # An agent that cannot get its checks to passing is still worth measuring as it is; propagation
            # needs passing instances to fail, so it is skipped.
            log(f"only {res.passing} of {args.checks} checks passing in the catalog after {args.ready_timeout:g} s")
        log(f"steady state: {args.window:g} s ...")
        await steady_state([checks, observer], procs, args, res)
        if res.ready_s is not None:
            log(f"propagation: {args.samples} samples ...")
            await propagation(http, checks, observer, endpoints, args, res)


# ---- report ---------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else None


def report(args: argparse.Namespace, checks: Agent, observer: Agent, res: Results) -> str:
    interval = f"{args.interval:g}s"
    shape = (args.checks, args.interval) == TARGET_SHAPE
    out = [
        f"Health checks: {args.checks} HTTP checks (timeout {CHECK_TIMEOUT:g}s) every {interval} on {checks.name}, "
        f"observed from {observer.name} ({res.topology})",
        f"machine: {machine()}",
    ]
    if res.register_s is None:
        out.append("registration did not finish")
    elif res.ready_s is None:
        out.append(f"registration: {res.register_s:.1f} s ({REGISTER_WORKERS} concurrent PUTs); NOT READY: "
                   f"{'?' if res.passing is None else res.passing} of {args.checks} checks passing in the catalog "
                   f"when the wait of {args.ready_timeout:g} s ended, so propagation was not measured")  # fmt: skip
    else:
        out.append(f"registration: {res.register_s:.1f} s ({REGISTER_WORKERS} concurrent PUTs); all passing in the "
                   f"catalog {res.ready_s:.1f} s after it")  # fmt: skip
    if not shape:
        out.append(f"(the CPU and RSS targets are stated for {TARGET_SHAPE[0]} checks at {TARGET_SHAPE[1]:g}s)")

    def verdict(value: float | None, limit: float, ok: bool = True) -> str:
        return "-" if value is None else "PASS" if value < limit and ok else "MISS"

    cpu = {name: statistics.median(v) if v else None for name, v in res.cpu.items()}
    windows = res.cpu.get(checks.name, [])
    rss = statistics.median(res.rss_mb) if res.rss_mb else None
    prop_limit = args.interval + PROPAGATION_SLACK
    delta = [g - c for g, c in zip(res.gone_s, res.critical_s, strict=True)]
    p99_gone = pct(res.gone_s, 0.99)
    rows = [
        ["checks", "interval", "metric", "p50", "p99", "target", "result"],
        [str(args.checks), interval, f"CPU % of one core, {checks.name} (median of {len(windows)} windows)",
         fmt(cpu.get(checks.name), ".1f"), "-", f"< {CPU_TARGET:g}", verdict(cpu.get(checks.name), CPU_TARGET)],
        [str(args.checks), interval, f"CPU % of one core, {observer.name} (observer, no checks)",
         fmt(cpu.get(observer.name), ".1f"), "-", "-", "-"],
        [str(args.checks), interval, f"RSS MB, {checks.name} (median of {len(res.rss_mb)} samples)",
         fmt(rss, ".1f"), "-", f"< {RSS_TARGET:g}", verdict(rss, RSS_TARGET)],
        [str(args.checks), interval, f"flip -> gone from {observer.name}'s ?passing, s",
         fmt(pct(res.gone_s, 0.5), ".2f"), fmt(p99_gone, ".2f"), f"p99 < {prop_limit:g}",
         verdict(p99_gone, prop_limit, ok=res.timeouts == 0)],
        [str(args.checks), interval, f"flip -> critical on {checks.name}, s",
         fmt(pct(res.critical_s, 0.5), ".2f"), fmt(pct(res.critical_s, 0.99), ".2f"), "-", "-"],
        [str(args.checks), interval, f"critical on {checks.name} -> gone from {observer.name}, s",
         fmt(pct(delta, 0.5), ".3f"), fmt(pct(delta, 0.99), ".3f"), "-", "-"],
    ]  # fmt: skip
    out += ["", table(rows, right={0, 3, 4})]
    if windows:
        out.append(f"CPU windows of {min(args.interval, args.window):g} s, {checks.name}: "
                   + " ".join(f"{w:.1f}" for w in windows) + f" (mean {statistics.mean(windows):.1f})")  # fmt: skip
    if res.rss_mb:
        out.append(f"RSS {checks.name}: min {min(res.rss_mb):.1f} MB, max {max(res.rss_mb):.1f} MB")
    if res.other:
        out.append(f"rest of the machine during those windows: max {max(res.other):.2f} cores, "
                   f"steal max {max(res.steal):.2f} (rerun if either is large)")  # fmt: skip
    out.append(f"propagation: {len(res.gone_s)} samples, {res.timeouts} not gone within "
               f"{args.interval + CHECK_TIMEOUT + WAIT_MARGIN:g} s")  # fmt: skip
    if res.poll_ms:
        out.append(f"agent-side status: /v1/agent/checks polled every {1000 * POLL:g} ms, answered in "
                   f"p50 {pct(res.poll_ms, 0.5):.1f} ms, p99 {pct(res.poll_ms, 0.99):.1f} ms; the critical time is "
                   "the midpoint between the last poll without it and the first with it")  # fmt: skip
    return "\n".join(out)


# ---- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.checks", description=__doc__.split("\n\n")[0])
    p.add_argument("--checks", type=int, default=1000, help="services, one HTTP check each (default 1000)")
    p.add_argument("--interval", type=float, default=10.0, help="check interval in seconds (default 10)")
    p.add_argument("--window", type=float, default=60.0, help="steady-state seconds measured (default 60)")
    p.add_argument("--samples", type=int, default=50, help="endpoints failed one at a time (default 50)")
    p.add_argument("--clients", action="store_true",
                   help="run the checks and the observer on two client agents instead of two followers")
    p.add_argument("--seed", type=int, default=1, help="picks which endpoints are failed (default 1)")
    add_run_options(p, 60.0, "the agents to come up")
    p.add_argument("--ready-timeout", type=float, default=300.0,
                   help="seconds from the end of registration until every check must be passing in the catalog")
    p.add_argument("--serve-endpoints", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the bench's child
    args = p.parse_args(argv)
    if not 1 <= args.checks <= 10_000:
        p.error("--checks must be between 1 and 10000")
    if not 1 <= args.interval <= 300:
        p.error("--interval must be between 1 and 300 seconds (the agent refuses intervals under 1s)")
    if not 1 <= args.ready_timeout <= 3600:
        p.error("--ready-timeout must be between 1 and 3600 seconds")
    if not 1 <= args.window <= 3600:
        p.error("--window must be between 1 and 3600 seconds")
    if not 1 <= args.samples <= min(args.checks, 1000):
        p.error("--samples must be between 1 and min(--checks, 1000)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_endpoints is not None:
        serve_endpoints(args.serve_endpoints)
        return 0
    python = cluster.VENV_PYTHON if cluster.VENV_PYTHON.exists() else Path(sys.executable)

    def body(workdir: Path) -> int:
        endpoints, endpoint_proc = start_endpoints(workdir, python, args.start_timeout)
        log("starting agents ...")
        checks, observer, agent_procs = start_agents(workdir, python, args.clients, args.start_timeout)
        procs = [*agent_procs, endpoint_proc]
        res = Results(topology="client agents" if args.clients else "followers of a 3-server cluster")
        log(f"  checks on {checks.name} (pid {checks.proc.pid}, :{checks.port}), "
            f"observer {observer.name} (pid {observer.proc.pid}, :{observer.port})")  # fmt: skip
        try:
            asyncio.run(measure(args, checks, observer, procs, endpoints, res))
        finally:
            print(report(args, checks, observer, res))
        return 0 if res.ready_s is not None else 1

    return run_bench("buoy-bench-checks-", args.workdir, args.keep, body,
                     failures=(TimeoutError, aiohttp.ClientError))

if __name__ == "__main__":
    sys.exit(main())
