"""Script checks (``Args``, alias ``ScriptArgs``): run the command, without a shell, every interval.

Exit 0 is passing, 1 is warning, anything else critical (Consul's rule, the Nagios plugin convention).
The command runs in a session of its own, so that at the timeout (30 s unless set) the whole process
group is killed, children included, as Consul does. Stdout and stderr are kept together, the last
OutputMaxSize bytes of them, with Consul's "Captured N of M bytes" note when there was more.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from buoy.agent.checks.probe import Kind, output_max
from buoy.durations import format_duration

SCRIPT_TIMEOUT = 30.0


class _Tail:
    """The last ``limit`` bytes of a stream and how many it had, as Consul's circular buffer keeps them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    async def fill(self, stream: asyncio.StreamReader) -> None:
        # Read to the end even past the limit: a child blocked on a full pipe would never exit.
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            self.data += chunk
            del self.data[:-self.limit]

    def text(self) -> str:
        out = self.data.decode("utf-8", "replace")
        if self.total > len(self.data):
            return f"Captured {len(self.data)} of {self.total} bytes\n...\n{out}"
        return out


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def probe(d: dict[str, Any], timeout: float) -> tuple[str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *d["Args"], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        return "critical", str(e)
    assert proc.stdout is not None
    tail = _Tail(output_max(d))
    try:
        # The output counts too: a child left behind holding the pipe keeps the check running, as in Consul.
        await asyncio.wait_for(asyncio.gather(tail.fill(proc.stdout), proc.wait()), timeout)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        output = tail.text()
        return "critical", f"Timed out ({format_duration(timeout)}) running check" + (f"\n\n{output}" if output else "")
    except asyncio.CancelledError:
        _kill_group(proc)  # the check was removed or the agent is stopping: leave nothing running
        raise
    code = proc.returncode
    return ("passing" if code == 0 else "warning" if code == 1 else "critical"), tail.text()


KIND = Kind(probe, owns_timeout=True, default_timeout=SCRIPT_TIMEOUT)
