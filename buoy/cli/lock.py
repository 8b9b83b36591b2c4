"""`buoy lock`: run a command while holding a lock, or one of N semaphore slots, in the KV store.

This is Consul's client-side leader election, laid out in the KV store exactly as `consul lock` and
Consul's API clients lay it out, so Buoy and Consul tools can contend on the same prefix: a session with
a TTL that this process keeps renewing; for -n=1 the key `<prefix>/.lock` acquired with that session;
for -n>1 a contender key `<prefix>/<session>` plus the holder list in `<prefix>/.lock`, changed only by
check-and-set. A watch on the key notices when the lock is lost (session invalidated, lock released by
an operator, agent gone for too long) and stops the child.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from buoy.api.client import AgentTimeout, AgentUnreachable, APIError, Client, ClientError, decode_value
from buoy.cli.errors import Fail, Usage
from buoy.cli.flags import CONTEXT_SETTINGS, DURATION, ConsulCommand, option, with_client
from buoy.cli.output import out
from buoy.durations import parse_duration

LOCK_KEY = ".lock"
# Consul's marker flags: a key with the wrong one belongs to something else (a plain key, or a semaphore
# where a lock is wanted) and is reported as a conflict instead of being taken over.
LOCK_FLAG = 0x2DDCCBC058A50C18
SEMAPHORE_FLAG = 0xE0F69A2BAA414DE0
SESSION_TTL = 15.0
WAIT_TIME = 15.0  # longest single blocking read while waiting or watching
REFUSED_RETRY = 5.0  # a refused acquire means the last holder's lock-delay still runs
MONITOR_RETRY_TIME = 1.0
KILL_GRACE = 5.0

T = TypeVar("T")


class Conflict(Exception):
    """The prefix is used in a way this holder cannot share (wrong flags, another semaphore limit)."""


class Step(enum.Enum):
    HELD = "held"
    WAIT = "wait"  # held by others: block on the returned index
    RETRY = "retry"  # refused or raced: try again after the returned delay


def _join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}" if prefix else name


class Lock:
    """One holder at a time: `<prefix>/.lock` acquired with the session."""

    def __init__(self, client: Client, prefix: str, session: str) -> None:
        self.client, self.session = client, session
        self.key = _join(prefix, LOCK_KEY)

    def describe(self) -> str:
        return f"Setting up lock at path: {self.key}"

    async def setup(self) -> None:
        pass

    async def abandon(self) -> None:
        pass

    def _check(self, pair: dict[str, Any] | None) -> None:
        if pair is not None and pair.get("Flags") != LOCK_FLAG:
            raise Conflict("Existing key does not match lock use")

    async def try_acquire(self, index: int, wait: float) -> tuple[Step, float]:
        pair, index = await self.client.kv_get(self.key, index=index or None, wait=wait)
        self._check(pair)
        if pair is not None and pair.get("Session"):
            return Step.WAIT, index
        if await self.client.kv_put(self.key, b"", flags=LOCK_FLAG, acquire=self.session):
            return Step.HELD, 0
        return Step.RETRY, REFUSED_RETRY

    async def still_held(self, index: int) -> tuple[bool, int]:
        pair, index = await self.client.kv_get(
            self.key, consistency="consistent", index=index or None, wait=WAIT_TIME
        )
        return pair is not None and pair.get("Session") == self.session, index

    async def release(self) -> None:
        await self.client.kv_put(self.key, b"", flags=LOCK_FLAG, release=self.session)

    async def cleanup(self) -> bool:
        """Delete the lock key unless someone holds it; False when it is in use."""
        pair, _ = await self.client.kv_get(self.key)
        self._check(pair)
        if pair is None:
            return True
        if pair.get("Session"):
            return False
        return await self.client.kv_delete(self.key, cas=pair["ModifyIndex"])


class Semaphore:
    """Up to `limit` holders: each owns a contender key; `.lock` lists the holders whose keys live."""

    def __init__(self, client: Client, prefix: str, session: str, limit: int) -> None:
        self.client, self.session, self.limit = client, session, limit
        self.prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.key = _join(prefix, LOCK_KEY)
        self.contender = _join(prefix, session)

    def describe(self) -> str:
        return f"Setting up semaphore (limit {self.limit}) at prefix: {self.prefix}"

    async def setup(self) -> None:
        if not await self.client.kv_put(self.contender, b"", flags=SEMAPHORE_FLAG, acquire=self.session):
            raise Conflict("failed to make contender entry")

    async def abandon(self) -> None:
        """Withdraw after failing to get a slot, so no stale contender key stays behind."""
        await self.client.kv_delete(self.contender)

    async def _state(
        self, index: int = 0, wait: float | None = None, consistency: Any = None
    ) -> tuple[dict[str, Any] | None, dict[str, bool], int]:
        """The `.lock` pair and its holders, less those whose session is gone (they can never release)."""
        pairs, index = await self.client.kv_list(
            self.prefix, index=index or None, wait=wait, consistency=consistency
        )
        lock = next((p for p in pairs if p["Key"] == self.key), None)
        holders: dict[str, bool] = {}
        if lock is not None:
            if lock.get("Flags") != SEMAPHORE_FLAG:
                raise Conflict("Existing key does not match semaphore use")
            try:
                state = json.loads(decode_value(lock) or b"{}")
            except ValueError:
                raise Conflict("Existing semaphore key is not valid JSON") from None
            if state.get("Limit") != self.limit:
                raise Conflict(f"Semaphore limit conflict (lock: {state.get('Limit')}, local: {self.limit})")
            holders = dict(state.get("Holders") or {})
        alive = {p["Session"] for p in pairs if p.get("Session")}
        return lock, {h: True for h in holders if h in alive}, index

    async def _write(self, lock: dict[str, Any] | None, holders: dict[str, bool]) -> bool:
        body = json.dumps({"Limit": self.limit, "Holders": holders}).encode()
        cas = lock["ModifyIndex"] if lock is not None else 0
        return await self.client.kv_put(self.key, body, flags=SEMAPHORE_FLAG, cas=cas)

    async def try_acquire(self, index: int, wait: float) -> tuple[Step, float]:
        lock, holders, index = await self._state(index, wait)
        if self.session in holders:
            return Step.HELD, 0
        if len(holders) >= self.limit:
            return Step.WAIT, index
        if await self._write(lock, {**holders, self.session: True}):
            return Step.HELD, 0
        return Step.RETRY, 0

    async def still_held(self, index: int) -> tuple[bool, int]:
        _, holders, index = await self._state(index, WAIT_TIME, "consistent")
        return self.session in holders, index

    async def release(self) -> None:
        while True:
            lock, holders, _ = await self._state()
            if lock is None or self.session not in holders:
                break
            del holders[self.session]
            if await self._write(lock, holders):
                break
        await self.client.kv_delete(self.contender)

    async def cleanup(self) -> bool:
        lock, holders, _ = await self._state()
        if lock is None:
            return True
        if holders:
            return False
        return await self.client.kv_delete(self.key, cas=lock["ModifyIndex"])


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if `stop` is set first (then `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stopper):
        if pending not in done:
            pending.cancel()
    return task.result() if task in done else None


async def _quietly(work: Awaitable[Any]) -> None:
    """Best-effort cleanup on the way out: bounded in time, and never the error the user sees."""
    try:
        await asyncio.wait_for(work, KILL_GRACE)
    except (ClientError, TimeoutError):
        pass


async def _acquire(holder: Lock | Semaphore, timeout: float, stop: asyncio.Event) -> bool:
    """Wait for the lock until it is held (True), the timeout passes or a signal stops us (False)."""
    deadline = time.monotonic() + timeout if timeout else None
    index = 0
    while not stop.is_set():
        remaining = WAIT_TIME if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return False
        outcome = await _unless_stopped(stop, holder.try_acquire(index, min(WAIT_TIME, remaining)))
        if outcome is None:
            return False
        step, value = outcome
        if step is Step.HELD:
            return True
        if step is Step.WAIT:
            index = int(value)
        else:
            index = 0
            await _unless_stopped(stop, asyncio.sleep(min(value, remaining)))
    return False


async def _keep_renewed(client: Client, session: str) -> None:
    ttl = SESSION_TTL
    while True:
        await asyncio.sleep(ttl / 2)
        try:
            entry = await client.session_renew(session)
        except ClientError:
            continue  # the watch decides, with its retries, whether the lock is lost
        if entry is None:
            return  # the session is gone; the watch will see the lock go with it
        try:
            ttl = parse_duration(entry.get("TTL") or "") or SESSION_TTL
        except ValueError:
            ttl = SESSION_TTL


async def _until_lost(holder: Lock | Semaphore, retries: int) -> None:
    """Return once the lock is no longer ours, tolerating `retries` consecutive failed reads."""
    index, failures = 0, 0
    while True:
        try:
            held, index = await holder.still_held(index)
        except (AgentUnreachable, AgentTimeout, APIError) as exc:
            if isinstance(exc, APIError) and exc.status < 500:
                return
            failures += 1
            if failures > retries:
                return
            await asyncio.sleep(MONITOR_RETRY_TIME)
            continue
        except Conflict:
            return
        failures = 0
        if not held:
            return


async def _stop_child(proc: asyncio.subprocess.Process, say: Callable[[str], None]) -> None:
    """SIGTERM, then SIGKILL after a grace period: the child may clean up, but not for long."""
    if proc.returncode is not None:
        return
    say(f"Terminating child pid {proc.pid}")
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE)
        return
    except TimeoutError:
        say(f"Killing child pid {proc.pid}")
    proc.kill()
    await proc.wait()


async def _run_child(
    command: list[str],
    shell: bool,
    pass_stdin: bool,
    holder: Lock | Semaphore,
    retries: int,
    stop: asyncio.Event,
    say: Callable[[str], None],
) -> tuple[int, bool]:
    """Run the child while the lock holds; (its exit status, whether the lock was lost)."""
    argv = [os.environ.get("SHELL") or "/bin/sh", "-c", " ".join(command)] if shell else command
    env = {**os.environ, "CONSUL_LOCK_HELD": "true", "BUOY_LOCK_HELD": "true"}
    say("Starting handler")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=None if pass_stdin else asyncio.subprocess.DEVNULL, env=env
        )
    except OSError as exc:
        raise Fail(f"Error starting handler: {exc}") from None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, proc.send_signal, signal.SIGHUP)
    exited = asyncio.ensure_future(proc.wait())
    lost = asyncio.ensure_future(_until_lost(holder, retries))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({exited, lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if exited in done:
            say("Child terminated, releasing lock")
            return exited.result(), False
        say("Lock lost, killing child" if lost in done else "Shutdown triggered, killing child")
        await _stop_child(proc, say)
        return proc.returncode or 0, lost in done
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in (exited, lost, stopped):
            task.cancel()


@click.command(
    cls=ConsulCommand,
    # Everything after the prefix is the child's command line, its flags included.
    context_settings={**CONTEXT_SETTINGS, "allow_interspersed_args": False},
)
@option("child-exit-code", is_flag=True, help="Exit 2 if the child fails (otherwise 0).")
@option(
    "n", "limit", type=int, default=1, show_default=True, help="Holders allowed at once; >1 is a semaphore."
)
@option(
    "monitor-retry", type=int, default=3, show_default=True, help="Failed reads tolerated while watching."
)
@option("name", default="", help="Session name (default: derived from the command and prefix).")
@option("pass-stdin", is_flag=True, help="Give the child this process's stdin.")
@click.option(
    "-shell/-no-shell",
    "--shell/--no-shell",
    "shell",
    default=True,
    help="Run the child through $SHELL -c (default).",
)
@option(
    "timeout", type=DURATION, default=0.0, help="Give up if the lock is not held within this long (0: wait)."
)
@option("verbose", is_flag=True, help="Narrate acquisition, monitoring and release.")
@click.argument("args", nargs=-1, metavar="PREFIX CHILD...")
@with_client
async def lock(
    client: Client,
    args: tuple[str, ...],
    child_exit_code: bool,
    limit: int,
    monitor_retry: int,
    name: str,
    pass_stdin: bool,
    shell: bool,
    timeout: float,
    verbose: bool,
) -> int:
    """Run CHILD while holding a lock (or, with -n, a semaphore slot) under PREFIX.

    If the lock is lost the child gets SIGTERM, then SIGKILL five seconds later. The child sees
    CONSUL_LOCK_HELD=true in its environment.
    """
    if limit <= 0:
        raise Usage("Lock holder limit must be positive")
    if len(args) < 2:
        raise Usage("Key prefix and child command must be specified")
    if timeout < 0:
        raise Usage("Timeout must be positive")
    if monitor_retry < 0:
        raise Usage("Number for 'monitor-retry' must be >= 0")
    prefix, command = args[0].removeprefix("/"), list(args[1:])

    def say(line: str) -> None:
        if verbose:
            out(line)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    try:
        session = await client.session_create(
            {"Name": name or f"Buoy lock for '{' '.join(command)}' at '{prefix}'", "TTL": f"{SESSION_TTL:g}s"}
        )
    except APIError as exc:
        raise Fail(f"Lock setup failed: {exc}") from None
    renewer = asyncio.ensure_future(_keep_renewed(client, session))
    holder: Lock | Semaphore = (
        Lock(client, prefix, session) if limit == 1 else Semaphore(client, prefix, session, limit)
    )
    try:
        say(holder.describe())
        say("Attempting lock acquisition")
        acquired = False
        try:
            await holder.setup()
            acquired = await _acquire(holder, timeout, stop)
        except (Conflict, APIError) as exc:
            raise Fail(f"Lock acquisition failed: {exc}") from None
        finally:
            if not acquired:
                await _quietly(holder.abandon())
        if not acquired:
            raise Fail("Shutdown triggered or timeout during lock acquisition")

        code, lost = 0, False
        if stop.is_set():
            say("Shutdown triggered during lock acquisition")
        else:
            code, lost = await _run_child(command, shell, pass_stdin, holder, monitor_retry, stop, say)

        if not lost:  # a lost lock is no longer ours to release
            try:
                await holder.release()
            except ClientError as exc:
                raise Fail(f"Lock release failed: {exc}") from None
        try:
            say("Cleanup succeeded" if await holder.cleanup() else "Cleanup aborted, lock in use")
        except (Conflict, ClientError) as exc:
            raise Fail(f"Lock cleanup failed: {exc}") from None
        if lost:
            raise Fail("Error! Lock lost; the child was stopped")
        return 2 if child_exit_code and code != 0 else 0
    finally:
        renewer.cancel()
        # Destroying the session releases anything it still holds, whatever happened above.
        await _quietly(client.session_destroy(session))
