"""The replicated commands: every record survives the journal's msgpack round trip, entries written before
the format was numbered decode as they always did, and what a newer release wrote is refused unapplied."""

from __future__ import annotations

import copy
import dataclasses

import msgpack
import pytest

from buoy.core import commands as c
from buoy.core.errors import Failed
from buoy.server.fsm import FSM
from buoy.server.state import StateStore

SAMPLES: list[c.Command] = [
    c.KVSet(key="a/b", value=b"\x00\xff", flags=7, cas=3, ts=1.5),
    c.KVSet(key="lock", value=b"", acquire="s1"),
    c.KVSet(key="lock", value=b"", release="s1"),
    c.KVDelete(key="a", cas=2),
    c.KVDeleteTree(prefix="a/"),
    c.KVReap(before=99.5),
    c.Txn(ops=[{"Verb": "set", "Key": "k", "Value": b"v", "Flags": 0, "Index": 0, "Session": ""}]),
    c.CatalogRegister(reg={"Node": "n1", "Address": "10.0.0.1", "Service": None, "Checks": []}),
    c.CatalogDeregister(node="n1", service_id="web"),
    c.CatalogDeregister(node="n1", check_id="c1"),
    c.SessionCreate(session={"ID": "s1", "Node": "n1", "NodeChecks": [], "ServiceChecks": None}),
    c.SessionDestroy(id="s1"),
    c.SessionRenew(id="s1"),
    c.QuerySet(query={"ID": "q1", "Name": "web"}, update=True),
    c.QueryDelete(id="q1"),
    c.IntentionSet(mode="upsert", intention={"SourceName": "a", "DestinationName": "b"}),
    c.IntentionDelete(id="i1"),
    c.IntentionDelete(source="a", destination="b"),
    c.ServerRegister(raft="127.0.0.1:8300", node="s1", id="id-1", http="127.0.0.1:8500"),
    c.MemberAlive(member={"Name": "n1"}, reg={"Node": "n1"}),
    c.MemberFailed(node="n1"),
    c.MemberLeft(node="n1", prune=True),
    c.MemberReap(node="n1"),
    c.CAInit(cluster_id="c", config={"Provider": "consul"}, root={"ID": "r"}, key="PEM"),
    c.CAConfigure(expect=4, config={"Provider": "consul"}),
    c.CAConfigure(expect=4, config={"Provider": "consul"}, root={"ID": "r2"}, key="PEM2"),
    c.CAPrune(ids=["r1"]),
    c.Noop(),
]


def test_every_command_round_trips_through_the_journal() -> None:
    assert {s.op for s in SAMPLES} == {cls.op for cls in c.Command.__subclasses__()}
    for sample in SAMPLES:
        wire = msgpack.unpackb(msgpack.packb(sample.to_wire(), use_bin_type=True), raw=False)
        assert wire["op"] == sample.op and wire["v"] == c.COMMAND_FORMAT
        assert c.from_wire(wire) == sample


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.KVSet(key="a", value=b"").key = "b"  # type: ignore[misc]


def test_unset_options_stay_off_the_wire() -> None:
    assert c.KVSet(key="k", value=b"v").to_wire() == {"op": "kv.set", "v": 1, "ts": 0.0, "key": "k", "value": b"v",
                                                       "flags": 0}
    assert set(c.CAConfigure(expect=1, config={}).to_wire()) == {"op", "v", "ts", "expect", "config"}


def test_entries_without_a_format_decode_as_format_one() -> None:
    # As proposers wrote them before commands were typed (and as existing journals and snapshots hold them).
    assert c.from_wire({"op": "kv.set", "key": "k", "value": b"v", "flags": 0, "ts": 5.0}) == \
        c.KVSet(key="k", value=b"v", ts=5.0)
    assert c.from_wire({"op": "catalog.deregister", "node": "n1", "check_id": "c1", "ts": 5.0}) == \
        c.CatalogDeregister(node="n1", check_id="c1", ts=5.0)
    assert c.from_wire({"op": "intention.delete", "source": "a", "destination": "b", "ts": 5.0}) == \
        c.IntentionDelete(source="a", destination="b", ts=5.0)
    assert c.from_wire({"op": "member.left", "node": "n1", "ts": 5.0}) == c.MemberLeft(node="n1", ts=5.0)


def test_old_and_new_entries_build_the_same_state() -> None:
    old = [{"op": "kv.set", "key": f"k{i}", "value": b"v", "flags": i, "ts": 1000.0} for i in range(5)]
    old += [{"op": "kv.set", "key": "k1", "value": b"w", "flags": 0, "cas": 2, "ts": 1000.0},
            {"op": "kv.delete", "key": "k3", "ts": 1000.0}, {"op": "kv.delete_tree", "prefix": "k4", "ts": 1000.0}]
    new = [c.from_wire(w).to_wire() for w in old]
    a, b = StateStore(), StateStore()
    assert FSM(a).apply_batch(copy.deepcopy(old)) == FSM(b).apply_batch(new)
    assert a.dump() == b.dump()


@pytest.mark.parametrize("wire", [
    {"op": "kv.frobnicate", "key": "k", "ts": 1000.0},
    {"op": "kv.set", "v": c.COMMAND_FORMAT + 1, "key": "k", "value": b"v", "flags": 0, "ts": 1000.0},
])
def test_what_a_newer_release_wrote_is_refused_and_changes_nothing(wire: dict[str, object]) -> None:
    store = StateStore()
    fsm = FSM(store)
    fsm.apply_batch([{"op": "kv.set", "key": "a", "value": b"1", "ts": 1000.0}])
    before = store.dump()
    fired: list[set[tuple[str, ...]]] = []
    store.notify = fired.append
    [refused] = fsm.apply_batch([wire])
    assert isinstance(refused, Failed)
    assert store.dump() == before and fired == []
    with pytest.raises(Failed):
        c.from_wire(wire)
