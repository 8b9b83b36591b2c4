"""The replicated state machine on its own: deterministic indexes, transactions, sessions, snapshots."""

from __future__ import annotations

import copy

import msgpack

from buoy.core.errors import Failed
from buoy.server.fsm import FSM
from buoy.server.state import StateStore


def cmd(op: str, **kw: object) -> dict[str, object]:
    return {"op": op, "ts": 1000.0, **kw}


def node_reg(name: str, *, status: str = "passing") -> dict[str, object]:
    return {"Node": name, "Address": "10.0.0.1", "ID": "", "Datacenter": "dc1", "TaggedAddresses": {}, "Meta": {},
            "SkipNodeUpdate": False, "Service": {"ID": "web", "Service": "web", "Tags": [], "Address": "",
                                                  "TaggedAddresses": {}, "Meta": {}, "Port": 80,
                                                  "Weights": {"Passing": 1, "Warning": 1},
                                                  "EnableTagOverride": False, "Kind": ""},
            "Checks": [{"Node": name, "CheckID": "serfHealth", "Name": "serf", "Status": status, "Notes": "",
                        "Output": "", "ServiceID": "", "Type": "", "Interval": "", "Timeout": "",
                        "ExposedPort": 0, "Definition": {}}]}


def session(sid: str, node: str, behavior: str = "release", delay_ns: int = 0) -> dict[str, object]:
    return {"ID": sid, "Name": "", "Node": node, "LockDelay": delay_ns, "Behavior": behavior, "TTL": "",
            "NodeChecks": ["serfHealth"], "ServiceChecks": None}


def test_two_stores_fed_the_same_log_are_identical() -> None:
    log = [cmd("kv.set", key=f"k{i}", value=b"v", flags=i) for i in range(50)]
    log += [cmd("catalog.register", reg=node_reg("n1")), cmd("session.create", session=session("s1", "n1"))]
    log += [cmd("kv.set", key="lock", value=b"x", acquire="s1"), cmd("kv.delete", key="k3")]
    a, b = StateStore(), StateStore()
    FSM(a).apply_batch(copy.deepcopy(log))
    for c in copy.deepcopy(log):  # one command per batch on the other: same result
        FSM(b).apply_batch([c])
    assert a.dump() == b.dump()
    assert a.kv.get("k10")["ModifyIndex"] == 11


def test_txn_rolls_back_every_table_and_index() -> None:
    s = StateStore()
    FSM(s).apply_batch([cmd("kv.set", key="a", value=b"1")])
    before = s.dump()
    [result] = FSM(s).apply_batch([cmd("txn", ops=[
        {"Verb": "set", "Key": "b", "Value": b"2", "Flags": 0, "Index": 0, "Session": ""},
        {"Verb": "delete", "Key": "a", "Value": b"", "Flags": 0, "Index": 0, "Session": ""},
        {"Verb": "check-index", "Key": "a", "Value": b"", "Flags": 0, "Index": 999, "Session": ""},
    ])])
    assert result["errors"][0]["OpIndex"] == 2
    after = s.dump()
    after["index"] = before["index"]  # the failed command still used a log index, as in Consul
    assert after == before


def test_failed_command_wakes_no_watcher() -> None:
    s = StateStore()
    fired: list[set] = []
    s.notify = fired.append
    FSM(s).apply_batch([cmd("kv.set", key="a", value=b"1", cas=5)])
    assert fired == []
    FSM(s).apply_batch([cmd("kv.set", key="a", value=b"1")])
    assert fired == [{("kv", "a")}]


def test_identical_registration_does_not_move_indexes() -> None:
    s = StateStore()
    FSM(s).apply_batch([cmd("catalog.register", reg=node_reg("n1"))])
    idx = s.catalog.name_index("web")
    fired: list[set] = []
    s.notify = fired.append
    FSM(s).apply_batch([cmd("catalog.register", reg=node_reg("n1"))])
    assert s.catalog.name_index("web") == idx and fired == []


def test_critical_node_check_invalidates_sessions_and_releases_locks() -> None:
    s = StateStore()
    FSM(s).apply_batch([cmd("catalog.register", reg=node_reg("n1")),
                   cmd("session.create", session=session("s1", "n1", delay_ns=5_000_000_000)),
                   cmd("session.create", session=session("s2", "n1", behavior="delete")),
                   cmd("kv.set", key="l1", value=b"x", acquire="s1"),
                   cmd("kv.set", key="l2", value=b"x", acquire="s2")])
    FSM(s).apply_batch([cmd("catalog.register", reg=node_reg("n1", status="critical"))])
    assert s.sessions.rows == {}
    assert "Session" not in s.kv.get("l1") and s.kv.get("l2") is None
    assert s.kv.lock_delay["l1"] == 1005.0
    # lock-delay uses the command's time, so every server decides the same way
    FSM(s).apply_batch([cmd("catalog.register", reg=node_reg("n1"))])
    FSM(s).apply_batch([cmd("session.create", session=session("s3", "n1"))])
    [early] = FSM(s).apply_batch([{**cmd("kv.set", key="l1", value=b"y", acquire="s3"), "ts": 1004.0}])
    [late] = FSM(s).apply_batch([{**cmd("kv.set", key="l1", value=b"y", acquire="s3"), "ts": 1006.0}])
    assert (early, late) == (False, True)


def test_session_create_refused_for_critical_check() -> None:
    s = StateStore()
    FSM(s).apply_batch([cmd("catalog.register", reg=node_reg("n1", status="critical"))])
    [result] = FSM(s).apply_batch([cmd("session.create", session=session("s1", "n1"))])
    assert isinstance(result, Failed) and "critical" in result.message


def test_snapshot_round_trip_through_msgpack() -> None:
    s = StateStore()
    FSM(s).apply_batch([cmd("catalog.register", reg=node_reg("n1")), cmd("session.create", session=session("s1", "n1")),
                   cmd("kv.set", key="a/b", value=b"\x00\xff", acquire="s1"), cmd("kv.delete", key="zzz"),
                   cmd("kv.set", key="gone", value=b"1"), cmd("kv.delete", key="gone")])
    data = msgpack.unpackb(msgpack.packb(s.dump()), strict_map_key=False)
    t = StateStore()
    t.load(data)
    assert t.dump() == s.dump()
    assert t.kv.held == {"s1": {"a/b"}} and t.catalog.by_name == {"web": {("n1", "web")}}
    assert t.kv.prefix_index("gone") == s.kv.prefix_index("gone")


def test_prefix_index_includes_deletes() -> None:
    s = StateStore()
    FSM(s).apply_batch([cmd("kv.set", key="p/a", value=b"1"), cmd("kv.set", key="p/b", value=b"1"),
                   cmd("kv.set", key="q", value=b"1")])
    assert s.kv.prefix_index("p/") == 2
    FSM(s).apply_batch([cmd("kv.delete", key="p/b")])
    assert s.kv.prefix_index("p/") == 4
    FSM(s).apply_batch([cmd("kv.set", key="q", value=b"2")])
    assert s.kv.prefix_index("p/") == 4


def test_refused_registration_writes_nothing() -> None:
    s = StateStore()
    reg = node_reg("n1")
    reg["Checks"] = [dict(reg["Checks"][0], CheckID="c", ServiceID="no-such-service")]
    before = s.dump()
    [result] = FSM(s).apply_batch([cmd("catalog.register", reg=reg)])
    assert isinstance(result, Failed) and "no-such-service" in result.message
    after = s.dump()
    after["index"] = before["index"]
    assert after == before


def member(name: str) -> dict[str, object]:
    return {"Name": name, "ID": "id-" + name, "Addr": "10.0.0.9", "Port": 8500, "Role": "node", "Build": "0.1.0"}


def test_member_transitions_drive_serf_health_and_the_catalog() -> None:
    store = StateStore()
    reg = {k: v for k, v in node_reg("c1").items() if k not in ("Service", "Checks")}
    FSM(store).apply_batch([cmd("member.alive", member=member("c1"), reg=reg),
                       cmd("catalog.register", reg=dict(node_reg("c1"), Checks=[])),
                       cmd("session.create", session=session("s1", "c1")),
                       cmd("kv.set", key="lock", value=b"x", acquire="s1")])
    assert store.members.is_current(member("c1"))
    assert store.catalog.checks["c1"]["serfHealth"]["Status"] == "passing"

    assert FSM(store).apply_batch([cmd("member.failed", node="c1")]) == [True]
    assert store.members.get("c1")["Status"] == "failed"  # type: ignore[index]
    assert store.catalog.checks["c1"]["serfHealth"]["Status"] == "critical"
    assert "web" in store.catalog.services["c1"]  # still listed until reaped, just not healthy
    assert store.sessions.get("s1") is None and not store.kv.get("lock").get("Session")  # type: ignore[union-attr]
    assert FSM(store).apply_batch([cmd("member.failed", node="c1")]) == [False]  # already failed: no change

    assert FSM(store).apply_batch([cmd("member.reap", node="c1")]) == [True]
    assert store.members.get("c1") is None and "c1" not in store.catalog.nodes


def test_leave_and_prune() -> None:
    store = StateStore()
    reg = {k: v for k, v in node_reg("c2").items() if k not in ("Service", "Checks")}
    FSM(store).apply_batch([cmd("member.alive", member=member("c2"), reg=reg)])
    assert FSM(store).apply_batch([cmd("member.left", node="c2")]) == [True]
    assert store.members.get("c2")["Status"] == "left" and "c2" not in store.catalog.nodes  # type: ignore[index]
    assert isinstance(FSM(store).apply_batch([cmd("member.left", node="nope")])[0], Failed)
    FSM(store).apply_batch([cmd("member.left", node="c2", prune=True)])
    assert store.members.get("c2") is None
    restored = StateStore()
    restored.load(msgpack.unpackb(msgpack.packb(store.dump())))
    assert restored.dump() == store.dump()
