"""KV benchmark: Buoy against a 3-member etcd cluster and a bare aiohttp handler.

    python -m bench.kv [--seconds 8] [--clients 1,16,256] [--only etcd,bare] [--target both] [--keep]

Each system runs alone: it is started, loaded step by step from a separate generator process (bench.load),
and stopped before the next one starts. See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cluster
from bench.cluster import StartError, Target

SYSTEMS = ("buoy", "etcd", "bare")
WRITE = {"buoy": "buoy-put", "etcd": "etcd-put"}
READ = {"buoy": "buoy-get", "etcd": "etcd-range", "bare": "bare-get"}
PLACEMENTS = {"leader": ["leader"], "spread": ["spread"], "both": ["leader", "spread"]}


@dataclass
class Step:
    system: str
    placement: str  # "leader" | "spread" | "-" (a single server)
    workload: str  # "write" | "read" | "fill" | "ceiling"
    clients: int
    result: dict[str, Any]
    cpu: dict[str, float]  # process name -> cores (CPU seconds per wall second) during measurement
    other: float  # cores used by everything else on the machine meanwhile
    steal: float  # cores taken by the hypervisor meanwhile


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def placement_ports(target: Target, placement: str) -> list[int]:
    """The leader alone, or every member with the followers first (so that a single client is on a follower)."""
    return target.ports[:1] if placement == "leader" else target.ports[1:] + target.ports[:1]


def run_step(
    args: argparse.Namespace,
    python: Path,
    workdir: Path,
    target: Target,
    placement: str,
    workload: str,
    kind: str,
    clients: int,
) -> Step:
    fill = workload == "fill"
    spec = {
        "kind": kind,
        "ports": placement_ports(target, placement),
        "clients": clients,
        "seconds": 60.0 if fill else args.seconds,
        "warmup": 0.0 if fill else args.warmup,
        "keys": args.keys,
        "max_ops": args.keys if fill else args.max_ops,
    }
    argv = [str(python), "-m", "bench.load", json.dumps(spec)]
    gen = cluster.spawn("gen", argv, workdir / "logs" / "gen.log", pipe_stdout=True)
    procs = [*target.procs, gen]
    try:
        timeline: dict[str, float] = {}
        snaps: dict[str, dict[int, float]] = {}
        machine: dict[str, tuple[float, float]] = {}
        for want in ("ready", "start", "end"):
            budget = {"ready": 30.0, "start": spec["warmup"] + 10, "end": spec["seconds"] + 10}[want]
            line = gen.readline(time.monotonic() + budget)
            if line is None:
                raise BenchError(
                    f"{target.name} {workload} c={clients}: generator gave no {want!r}\n{gen.tail()}"
                )
            if line != want:
                raise BenchError(f"{target.name}: unexpected generator output {line!r}")
            timeline[want] = time.monotonic()
            if want in ("start", "end"):
                snaps[want] = cluster.cpu_seconds([p.pid for p in procs])
                machine[want] = cluster.machine_cpu()
        line = gen.readline(time.monotonic() + 30)
        if line is None or not line.startswith("result "):
            raise BenchError(f"{target.name} {workload} c={clients}: no result\n{gen.tail()}")
        result = json.loads(line.removeprefix("result "))
        gen.popen.wait(10)
    finally:
        cluster.stop(gen)
    wall = max(1e-9, timeline["end"] - timeline["start"])
    mark = {target.leader: f"{target.leader}*"}  # the leader's name, starred
    cpu = {mark.get(p.name, p.name): (snaps["end"][p.pid] - snaps["start"][p.pid]) / wall for p in procs}
    busy = (machine["end"][0] - machine["start"][0]) / wall
    steal = (machine["end"][1] - machine["start"][1]) / wall
    other = max(0.0, busy - sum(cpu.values()))
    placement = placement if len(target.ports) > 1 else "-"
    return Step(target.name, placement, workload, clients, result, cpu, other, steal)


def problems(r: dict[str, Any]) -> str:
    """Errors, timeouts and reconnects of a step ("0" if none), with the statuses seen when any failed."""
    if not (r["errors"] or r["timeouts"] or r["reconnects"] or r["ops"] == 0):
        return "0"
    counts = f"{r['errors']} errors, {r['timeouts']} timeouts, {r['reconnects']} reconnects"
    return f"{counts}, statuses {r['statuses']}"


def describe(step: Step) -> str:
    r = step.result
    servers = " ".join(f"{k} {v:.2f}" for k, v in step.cpu.items() if k != "gen")
    extra = f", {problems(r)}" if problems(r) != "0" else ""
    return (
        f"{step.system:5} {step.placement:6} {step.workload:7} c={step.clients:<4} {r['ops_per_s']:9,.0f} ops/s"
        f"  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
        f"  cpu[{servers}] gen {step.cpu['gen']:.2f} other {step.other:.2f} steal {step.steal:.2f}{extra}"
    )


def bench_system(args: argparse.Namespace, python: Path, workdir: Path, system: str) -> list[Step]:
    log(f"starting {system} ...")
    t0 = time.monotonic()
    if system == "etcd":
        target = cluster.start_etcd(workdir, args.start_timeout)
    elif system == "buoy":
        target = cluster.start_buoy(workdir, python, args.start_timeout)
    else:
        target = cluster.start_bare(workdir, python, args.start_timeout)
    steps: list[Step] = []
    try:
        log(f"  {system} up in {time.monotonic() - t0:.1f} s: {target.info}")
        # One server has no second placement. Placements alternate step by step, so that both see the same
        # state of the cluster (size of the log, of the store) at each client count.
        placements = args.target if len(target.ports) > 1 else args.target[:1]
        plan: list[tuple[str, str, str, int]] = []
        if system in WRITE:
            plan.append(("leader", "fill", WRITE[system], 16))
            plan += [(pl, "write", WRITE[system], c) for c in args.clients for pl in placements]
        plan += [(pl, "read", READ[system], c) for c in args.read_clients for pl in placements]
        for placement, workload, kind, clients in plan:
            step = run_step(args, python, workdir, target, placement, workload, kind, clients)
            log("  " + describe(step))
            if workload == "fill":
                if step.result["ops"] < args.keys:
                    raise BenchError(f"{system}: writing the {args.keys} keys failed: {step.result}")
                continue
            steps.append(step)
    finally:
        target.stop()
    return steps


def ceiling(args: argparse.Namespace, python: Path, workdir: Path) -> Step:
    target = cluster.start_bare(workdir, python, args.start_timeout, raw=True)
    try:
        step = run_step(args, python, workdir, target, "leader", "ceiling", "bare-get", 16)
    finally:
        target.stop()
    log("  generator ceiling: " + describe(step))
    return step


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        etcd = subprocess.run(["etcd", "--version"], capture_output=True, timeout=10).stdout.decode()
        etcd = etcd.splitlines()[0].split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        etcd = "unavailable"
    try:
        import uvloop

        uv = f"uvloop {uvloop.__version__}"
    except ImportError:
        uv = "no uvloop"
    return (
        f"{len(os.sched_getaffinity(0))} CPUs ({model}), Linux {platform.release()}"
        f", Python {platform.python_version()}, {uv}, etcd {etcd}"
    )


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or x != x else format(x, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 or a != a or b != b else a / b


def table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def report(args: argparse.Namespace, steps: list[Step], ceil: Step | None) -> str:
    by = {(s.system, s.placement, s.workload, s.clients): s for s in steps}
    where = {"leader": "leader = every client on the leader",
             "spread": "spread = clients round-robin over all members, followers first"}  # fmt: skip
    out = [
        f"KV benchmark: closed loop, {args.seconds:g} s per step after {args.warmup:g} s warm-up, "
        f"{args.keys} keys, 64-byte values",
        f"placement: {'; '.join(where[pl] for pl in args.target)}",
        f"machine: {machine()}",
    ]
    if ceil is not None:
        r = ceil.result
        out.append(
            f"load generator ceiling (16 clients against a raw asyncio server): {r['ops_per_s']:,.0f} ops/s, "
            f"p50 {r['p50_ms']:.2f} ms; CPU: generator {ceil.cpu['gen']:.2f}, "
            f"server {ceil.cpu['raw']:.2f}, rest of the machine {ceil.other:.2f} cores"
        )
    head = ["workload", "clients", "placement", "peer", "buoy ops/s", "p50 ms", "p99 ms", "peer ops/s", "p50 ms",
            "p99 ms", "ops/s ratio", "p50 ratio", "p99 ratio"]  # fmt: skip
    rows = [head]
    pairs = [("write", c, pl, "etcd") for c in args.clients for pl in args.target]
    pairs += [("read", c, pl, peer) for c in args.read_clients for pl in args.target for peer in ("etcd", "bare")]
    for workload, c, pl, peer in pairs:
        b = by.get(("buoy", pl, workload, c))
        p = by.get((peer, pl, workload, c)) or by.get((peer, "-", workload, c))  # bare: one server, any placement
        if b is None and p is None:
            continue
        bv = [b.result[k] if b else None for k in ("ops_per_s", "p50_ms", "p99_ms")]
        pv = [p.result[k] if p else None for k in ("ops_per_s", "p50_ms", "p99_ms")]
        rows.append(
            [workload, str(c), pl, peer, fmt(bv[0], ",.0f"), fmt(bv[1], ".2f"), fmt(bv[2], ".2f"),
             fmt(pv[0], ",.0f"), fmt(pv[1], ".2f"), fmt(pv[2], ".2f"),
             *(fmt(ratio(x, y), ".2f") for x, y in zip(bv, pv, strict=True))]
        )  # fmt: skip
    out += ["", table(rows, right=set(range(1, 13)) - {2, 3})]
    out += ["", "CPU during each measured step, in cores (CPU seconds / wall seconds; all processes share "
            f"{len(os.sched_getaffinity(0))} CPUs; * marks the leader):"]  # fmt: skip
    cpu_rows = [["system", "placement", "workload", "clients", "servers", "generator", "other", "steal", "errors"]]
    for s in steps:
        servers = "  ".join(f"{k} {v:.2f}" for k, v in s.cpu.items() if k != "gen")
        nums = [f"{s.cpu['gen']:.2f}", f"{s.other:.2f}", f"{s.steal:.2f}"]
        cpu_rows.append([s.system, s.placement, s.workload, str(s.clients), servers, *nums, problems(s.result)])
    out.append(table(cpu_rows, right={3, 5, 6, 7}))
    return "\n".join(out)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.kv", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per step (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each step (default 2)")
    p.add_argument(
        "--clients", type=int_list, default=[1, 16, 256], help="write concurrency (default 1,16,256)"
    )
    p.add_argument(
        "--read-clients", type=int_list, default=[16, 256], help="read concurrency (default 16,256)"
    )
    p.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated subset of buoy,etcd,bare")
    p.add_argument(
        "--target", choices=PLACEMENTS, default="both",
        help="where the clients connect: the leader, spread over all members, or both (default both)",
    )  # fmt: skip
    p.add_argument("--keys", type=int, default=1000, help="distinct keys (default 1000)")
    p.add_argument("--max-ops", type=int, default=3_000_000, help="cap on requests per step")
    add_run_options(p, 60.0, "each cluster to come up")
    args = p.parse_args(argv)
    args.target = PLACEMENTS[args.target]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(args.only) - set(SYSTEMS)
    if bad or not args.only:
        p.error(f"--only takes a comma-separated subset of {','.join(SYSTEMS)}, not {args.only}")
    if args.seconds <= 0 or args.seconds > 600 or args.warmup < 0 or args.warmup > 60:
        p.error("--seconds must be in (0, 600] and --warmup in [0, 60]")
    if any(c < 1 or c > 4096 for c in args.clients + args.read_clients):
        p.error("client counts must be between 1 and 4096")
    return args


def terminated(signum: int, frame: object) -> None:
    log("terminated; stopping servers")
    sys.exit(143)  # unwinds through the finally blocks that stop every process


def add_run_options(p: argparse.ArgumentParser, start_timeout: float, what_starts: str) -> None:
    """The flags every bench shares: how long its processes may take to start, and where its work dir goes."""
    p.add_argument("--start-timeout", type=float, default=start_timeout,
                   help=f"seconds for {what_starts} (default {start_timeout:g})")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the temporary work dir")
    p.add_argument("--keep", action="store_true", help="leave the work dir (data, configs, logs) for inspection")


def run_bench(prefix: str, parent: str | None, keep: bool, body: Callable[[Path], int],
              failures: tuple[type[BaseException], ...] = (), on_failure: Callable[[], None] = lambda: None) -> int:
    """Run a bench's ``body`` in a fresh work dir: a failure is one line and exit 1 (after ``on_failure``,
    which prints what was measured so far), Ctrl-C exits 130, and whatever happens every process is
    stopped by PID and the dir removed (unless ``keep``)."""
    signal.signal(signal.SIGTERM, terminated)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    log(f"data and logs under {workdir}")
    caught: tuple[type[BaseException], ...] = (StartError, BenchError, *failures)
    try:
        return body(workdir)
    except caught as e:
        on_failure()
        log(f"error: {type(e).__name__}: {e}")
        if not keep:
            log("(rerun with --keep to keep the data dirs and logs)")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        cluster.stop_all()
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    python = cluster.VENV_PYTHON if cluster.VENV_PYTHON.exists() else Path(sys.executable)
    if "etcd" in args.only and shutil.which("etcd") is None:
        log("etcd is not installed (Debian: apt-get install etcd-server); use --only to skip it")
        return 2
    steps: list[Step] = []
    ceil = None

    def body(workdir: Path) -> int:
        nonlocal steps, ceil
        for system in [s for s in SYSTEMS if s in args.only]:  # Buoy first: fail fast if it cannot start
            steps += bench_system(args, python, workdir, system)
        if "bare" in args.only:
            ceil = ceiling(args, python, workdir)
        print(report(args, steps, ceil))
        return 0

    def partial() -> None:
        if steps:
            print(report(args, steps, ceil))

    return run_bench("buoy-bench-", args.workdir, args.keep, body, on_failure=partial)

if __name__ == "__main__":
    sys.exit(main())
