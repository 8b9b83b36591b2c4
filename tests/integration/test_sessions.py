"""Sessions and locks: acquire/release, LockIndex, lock-delay, behaviors, TTL expiry, node binding."""

from __future__ import annotations

import time

import requests


def _wait_for(predicate, timeout: float, step: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def test_session_crud(dev_agent, c) -> None:
    sid = c.session.create(name="crud", ttl=30, behavior="delete", lock_delay=0)
    _, info = c.session.info(sid)
    assert info["Name"] == "crud" and info["TTL"] == "30s" and info["Behavior"] == "delete"
    assert info["LockDelay"] == 0 and info["NodeChecks"] == ["serfHealth"]
    assert info["Node"] == c.agent.self()["Config"]["NodeName"]
    assert sid in [s["ID"] for s in c.session.list()[1]]
    assert sid in [s["ID"] for s in c.session.node(info["Node"])[1]]
    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid
    assert c.session.destroy(sid) is True
    assert c.session.info(sid)[1] is None
    assert c.session.destroy(sid) is True  # idempotent, as Consul


def test_renew_unknown_session_is_404(dev_agent, base) -> None:
    r = requests.put(f"{base}/v1/session/renew/6d8a6a44-1111-2222-3333-444455556666", timeout=5)
    assert r.status_code == 404 and "not found" in r.text


def test_lock_acquire_release_and_lock_index(dev_agent, c) -> None:
    s1 = c.session.create(name="a", lock_delay=0)
    s2 = c.session.create(name="b", lock_delay=0)
    assert c.kv.put("lk1", "held", acquire=s1) is True
    entry = c.kv.get("lk1")[1]
    assert entry["Session"] == s1 and entry["LockIndex"] == 1
    assert c.kv.put("lk1", "again", acquire=s1) is True  # the holder may re-acquire
    assert c.kv.get("lk1")[1]["LockIndex"] == 1
    assert c.kv.put("lk1", "steal", acquire=s2) is False
    assert c.kv.put("lk1", "x", release=s2) is False  # only the holder releases
    assert c.kv.put("lk1", "done", release=s1) is True
    entry = c.kv.get("lk1")[1]
    assert "Session" not in entry and entry["LockIndex"] == 1
    assert c.kv.put("lk1", "mine", acquire=s2) is True
    assert c.kv.get("lk1")[1]["LockIndex"] == 2
    for s in (s1, s2):
        c.session.destroy(s)


def test_lock_delay_after_invalidation(dev_agent, c) -> None:
    s1 = c.session.create(name="delay", lock_delay=2)
    assert c.kv.put("lk2", "x", acquire=s1) is True
    c.session.destroy(s1)
    entry = c.kv.get("lk2")[1]
    assert "Session" not in entry  # behavior release keeps the key, drops the holder
    s2 = c.session.create(name="next", lock_delay=0)
    assert c.kv.put("lk2", "y", acquire=s2) is False  # still inside the 2 s lock-delay
    _wait_for(lambda: c.kv.put("lk2", "y", acquire=s2), timeout=10, step=0.2)
    c.session.destroy(s2)


def test_behavior_delete_removes_held_keys(dev_agent, c) -> None:
    sid = c.session.create(name="del", behavior="delete", lock_delay=0)
    assert c.kv.put("lk3", "x", acquire=sid) is True
    c.session.destroy(sid)
    assert c.kv.get("lk3")[1] is None


def test_unknown_session_cannot_acquire(dev_agent, base, c) -> None:
    r = requests.put(f"{base}/v1/kv/lk4?acquire=00000000-0000-0000-0000-000000000009", data=b"x", timeout=5)
    assert r.status_code == 500 and "invalid session" in r.text
    assert c.kv.get("lk4")[1] is None


def test_session_on_unknown_node_refused(dev_agent, base) -> None:
    r = requests.put(f"{base}/v1/session/create", json={"Node": "no-such-node"}, timeout=5)
    assert r.status_code == 500 and "Missing node registration" in r.text


def test_ttl_expiry_releases_lock(dev_agent, c) -> None:
    # Consul invalidates a session 2 x TTL after its last renew; the minimum TTL is 10 s.
    sid = c.session.create(name="ttl", ttl=10, lock_delay=0)
    assert c.kv.put("lk5", "x", acquire=sid) is True
    t0 = time.monotonic()
    _wait_for(lambda: c.session.info(sid)[1] is None, timeout=40, step=0.25)
    assert time.monotonic() - t0 >= 15
    assert "Session" not in c.kv.get("lk5")[1]


def test_renew_keeps_session_alive(dev_agent, c) -> None:
    sid = c.session.create(name="renewed", ttl=10)
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        assert c.session.renew(sid) is not None
        time.sleep(2)
    assert c.session.info(sid)[1] is not None
    c.session.destroy(sid)


def test_session_invalidated_when_bound_check_goes_critical(dev_agent, c) -> None:
    c.catalog.register("sess-node", "127.0.0.9", check={"CheckID": "serfHealth", "Name": "serf",
                                                       "Status": "passing"})
    sid = c.session.create(name="bound", node="sess-node", lock_delay=0)
    assert c.kv.put("lk6", "x", acquire=sid) is True
    c.catalog.register("sess-node", "127.0.0.9", check={"CheckID": "serfHealth", "Name": "serf",
                                                       "Status": "critical"})
    assert c.session.info(sid)[1] is None
    assert "Session" not in c.kv.get("lk6")[1]
    c.catalog.deregister("sess-node")
