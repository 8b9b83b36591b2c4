"""Blocking-query wake-ups: a write wakes exactly the watchers of what it touched, however many others wait."""

from __future__ import annotations

import asyncio

from buoy.server.watch import WatchHub


def test_only_matching_watchers_wake_among_ten_thousand() -> None:
    async def scenario() -> None:
        hub = WatchHub(asyncio.get_running_loop())
        idle = [asyncio.create_task(hub.wait([("kv", f"idle/{i}")], [], 30)) for i in range(10_000)]
        exact = asyncio.create_task(hub.wait([("kv", "app/config")], [], 30))
        prefix = asyncio.create_task(hub.wait([], ["app/"], 30))
        other_prefix = asyncio.create_task(hub.wait([], ["db/"], 30))
        service = asyncio.create_task(hub.wait([("service", "web")], [], 30))
        await asyncio.sleep(0)
        assert len(hub._exact) == 10_002 and set(hub._prefix) == {"app/", "db/"}

        hub.fire({("kv", "app/config")})
        assert await exact is True and await prefix is True
        await asyncio.sleep(0)
        assert not other_prefix.done() and not service.done()
        assert not any(t.done() for t in idle)
        # Woken watchers are gone from the index; everybody else is still registered, untouched.
        assert len(hub._exact) == 10_001 and set(hub._prefix) == {"db/"}

        hub.fire({("service", "web")})
        assert await service is True
        for t in [*idle, other_prefix]:
            t.cancel()
        await asyncio.gather(*idle, other_prefix, return_exceptions=True)
        assert hub._exact == {} and hub._prefix == {}

    asyncio.run(scenario())


def test_timeout_returns_false_and_unregisters() -> None:
    async def scenario() -> None:
        hub = WatchHub(asyncio.get_running_loop())
        assert await hub.wait([("nodes",)], ["x"], 0.01) is False
        assert hub._exact == {} and hub._prefix == {}

    asyncio.run(scenario())


def test_snapshot_restore_wakes_everyone_and_listeners_hear_every_batch() -> None:
    async def scenario() -> None:
        hub = WatchHub(asyncio.get_running_loop())
        heard: list[set] = []
        hub.listeners.append(heard.append)
        waiters = [asyncio.create_task(hub.wait([("kv", "a")], [], 30)),
                   asyncio.create_task(hub.wait([], ["b/"], 30))]
        await asyncio.sleep(0)
        hub.fire({("reset",)})
        assert await asyncio.gather(*waiters) == [True, True]
        assert heard == [{("reset",)}]

    asyncio.run(scenario())
