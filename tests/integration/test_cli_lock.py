"""`buoy lock` against `buoy agent -dev`: mutual exclusion, semaphores, losing the lock, cleaning up."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import consul
import pytest

from tests.integration.conftest import wait_until

if TYPE_CHECKING:
    from conftest import DevAgent, Run

Buoy = Callable[..., "Run"]
Background = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def background(buoy_background: Background, dev_agent: DevAgent) -> Background:
    return lambda *args: buoy_background(*args, env={"BUOY_HTTP_ADDR": dev_agent.http_addr})


@pytest.fixture
def prefix() -> str:
    return f"locks/{uuid.uuid4().hex[:10]}"


def lock_holder(c: consul.Consul, prefix: str) -> str | None:
    pair = c.kv.get(f"{prefix}/.lock")[1]
    return pair.get("Session") if pair else None


def semaphore_holders(c: consul.Consul, prefix: str) -> list[str]:
    pair = c.kv.get(f"{prefix}/.lock")[1]
    return list(json.loads(pair["Value"])["Holders"]) if pair else []


def finish(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out, err


def assert_clean(c: consul.Consul, prefix: str) -> None:
    """Nothing left behind: no lock key, no contender keys."""
    assert c.kv.get(f"{prefix}/", recurse=True)[1] is None


def test_lock_runs_the_child_with_the_lock_held(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    run = buoy("lock", prefix, 'echo "held=$CONSUL_LOCK_HELD"')
    assert (run.code, run.out, run.stderr) == (0, "held=true\n", "")
    assert_clean(c, prefix)


def test_lock_exit_codes_and_no_shell(buoy: Buoy, prefix: str) -> None:
    assert buoy("lock", prefix, "exit 3").code == 0
    assert buoy("lock", "-child-exit-code", prefix, "exit 3").code == 2
    assert buoy("lock", "-child-exit-code=true", prefix, "true").code == 0
    run = buoy("lock", "-shell=false", prefix, "printf", "%s|", "a b", "-c")
    assert (run.code, run.out) == (0, "a b|-c|")


def test_lock_excludes_a_second_holder(
    buoy: Buoy, background: Background, c: consul.Consul, prefix: str
) -> None:
    first = background("lock", prefix, "exec sleep 60")
    wait_until(lambda: lock_holder(c, prefix), "the first holder")

    started = time.monotonic()
    run = buoy("lock", "-timeout=500ms", prefix, "echo should not run")
    run.assert_one_line_error(1, "Shutdown triggered or timeout during lock acquisition")
    assert time.monotonic() - started < 10

    code, _, err = finish(first)
    assert (code, err) == (0, "")
    assert_clean(c, prefix)
    assert buoy("lock", "-timeout=5s", prefix, "echo second").out == "second\n"


def test_waiting_holder_gets_the_lock_when_it_is_released(
    buoy: Buoy, background: Background, c: consul.Consul, prefix: str
) -> None:
    first = background("lock", prefix, "sleep 1")
    wait_until(lambda: lock_holder(c, prefix), "the first holder")
    run = buoy("lock", prefix, "echo second")
    assert (run.code, run.out) == (0, "second\n")
    assert first.wait(timeout=20) == 0


def test_losing_the_lock_stops_the_child(background: Background, c: consul.Consul, prefix: str) -> None:
    holder = background(
        "lock", "-verbose", prefix, "trap 'echo child stopped; exit 0' TERM; while true; do sleep 0.1; done"
    )
    session = wait_until(lambda: lock_holder(c, prefix), "the lock")
    c.session.destroy(session)
    out, err = holder.communicate(timeout=30)
    assert holder.returncode == 1
    assert err == "Error! Lock lost; the child was stopped\n"
    assert "Lock lost, killing child" in out and "child stopped" in out
    assert_clean(c, prefix)


def test_semaphore_admits_n_holders(
    buoy: Buoy, background: Background, c: consul.Consul, prefix: str
) -> None:
    holders = [background("lock", "-n=2", prefix, "exec sleep 60") for _ in range(2)]
    wait_until(lambda: len(semaphore_holders(c, prefix)) == 2, "two holders")

    buoy("lock", "-n", "2", "-timeout=500ms", prefix, "true").assert_one_line_error(
        1, "Shutdown triggered or timeout during lock acquisition"
    )
    buoy("lock", "-n", "3", "-timeout=500ms", prefix, "true").assert_one_line_error(
        1, "Lock acquisition failed: Semaphore limit conflict (lock: 2, local: 3)"
    )
    buoy("lock", "-timeout=500ms", prefix, "true").assert_one_line_error(
        1, "Lock acquisition failed: Existing key does not match lock use"
    )

    assert finish(holders[0])[0] == 0
    run = buoy("lock", "-n", "2", "-timeout=10s", prefix, "echo third")
    assert (run.code, run.out) == (0, "third\n")
    assert finish(holders[1])[0] == 0
    assert_clean(c, prefix)


def test_lock_refuses_a_key_it_does_not_own(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    c.kv.put(f"{prefix}/.lock", "someone else's data")
    buoy("lock", prefix, "true").assert_one_line_error(
        1, "Lock acquisition failed: Existing key does not match lock use"
    )
    assert c.kv.get(f"{prefix}/.lock")[1]["Value"] == b"someone else's data"
    assert [p["Key"] for p in c.kv.get(f"{prefix}/", recurse=True)[1]] == [f"{prefix}/.lock"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["p"], "Key prefix and child command must be specified"),
        (["-n=0", "p", "true"], "Lock holder limit must be positive"),
        (["-monitor-retry=-1", "p", "true"], "Number for 'monitor-retry' must be >= 0"),
    ],
)
def test_lock_bad_usage(buoy_cli: Buoy, args: list[str], message: str) -> None:
    buoy_cli("lock", *args).assert_one_line_error(2, message)
