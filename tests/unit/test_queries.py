"""The prepared-queries table and its ops in the replicated state machine: name rules, resolution order,
templates, session binding, snapshots."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from buoy.core.errors import Failed
from buoy.core.structs.query import QueryError, compile_template, render
from buoy.server.fsm import FSM
from buoy.server.state import StateStore

ID_A = "11111111-1111-4111-8111-111111111111"
ID_B = "22222222-2222-4222-8222-222222222222"
ID_C = "33333333-3333-4333-8333-333333333333"


def cmd(op: str, **kw: object) -> dict[str, object]:
    return {"op": op, "ts": 1000.0, **kw}


def query(qid: str, name: str, service: str = "web", *, template: str = "", regexp: str = "", session: str = "",
          tags: list[str] | None = None, remove_empty_tags: bool = False,
          node_meta: dict[str, str] | None = None) -> dict[str, Any]:
    return {"ID": qid, "Name": name, "Session": session, "Token": "",
            "Template": {"Type": template, "Regexp": regexp, "RemoveEmptyTags": remove_empty_tags},
            "Service": {"Service": service, "Failover": {"NearestN": 0, "Datacenters": None, "Targets": None},
                        "OnlyPassing": False, "IgnoreCheckIDs": None, "Near": "", "Tags": tags,
                        "NodeMeta": node_meta, "ServiceMeta": None, "Connect": False},
            "DNS": {"TTL": ""}}


def put(s: StateStore, q: dict[str, Any], update: bool = False) -> Any:
    [result] = FSM(s).apply_batch([cmd("query.set", query=q, update=update)])
    return result


def service_of(s: StateStore, id_or_name: str) -> str:
    q = s.queries.resolve(id_or_name)
    assert q is not None
    return str(q["Service"]["Service"])


def test_create_update_delete_move_the_table_index() -> None:
    s = StateStore()
    assert put(s, query(ID_A, "web-q")) is True
    row = s.queries.get(ID_A)
    assert row is not None and row["CreateIndex"] == row["ModifyIndex"] == s.queries.index == 1
    assert put(s, query(ID_A, "web-q", "api"), update=True) is True
    row = s.queries.get(ID_A)
    assert row is not None and (row["CreateIndex"], row["ModifyIndex"], row["Service"]["Service"]) == (1, 2, "api")
    assert FSM(s).apply_batch([cmd("query.delete", id=ID_A)]) == [True]
    assert s.queries.get(ID_A) is None and s.queries.index == 3 and s.queries.resolve("web-q") is None


def test_refusals_change_nothing() -> None:
    s = StateStore()
    put(s, query(ID_A, "Web-Q"))
    put(s, query(ID_B, "", template="name_prefix_match"))
    before = s.dump()
    refusals = [
        (query(ID_C, "web-q"), False, "raft apply failed: name 'web-q' aliases an existing query name"),
        (query(ID_C, "", template="name_prefix_match"), False,
         "raft apply failed: a query template with an empty name already exists"),
        (query(ID_C, ID_A), False, f"raft apply failed: name '{ID_A}' aliases an existing query ID"),
        (query(ID_C, "x", session="no-such-session"), False, 'raft apply failed: invalid session "no-such-session"'),
        (query(ID_C, "x"), True, f"Cannot modify non-existent prepared query: '{ID_C}'"),
    ]
    for q, update, message in refusals:
        refused = put(s, q, update)
        assert isinstance(refused, Failed) and refused.message == message
    [refused] = FSM(s).apply_batch([cmd("query.delete", id=ID_C)])
    assert isinstance(refused, Failed) and refused.message == f"Cannot modify non-existent prepared query: '{ID_C}'"
    after = s.dump()
    after["index"] = before["index"]  # refused commands still take a log index, as in Consul
    assert after == before
    # A query keeps its own name (any case) when it is updated.
    assert put(s, query(ID_A, "WEB-q", "api"), update=True) is True


def test_resolution_order_id_then_name_then_longest_template_prefix() -> None:
    s = StateStore()
    put(s, query(ID_A, "geo-db", "static"))
    put(s, query(ID_B, "geo", "${name.suffix}", template="name_prefix_match"))
    put(s, query(ID_C, "", "${name.full}", template="name_prefix_match"))
    assert service_of(s, ID_A) == "static"
    assert service_of(s, "GEO-DB") == "static"
    assert service_of(s, "geo-web") == "-web"
    assert service_of(s, "other") == "other"
    with pytest.raises(QueryError, match="templates can only be resolved up by name, not by ID"):
        s.queries.resolve(ID_B)
    # The stored template is never changed by rendering it.
    assert s.queries.rows[ID_B]["Service"]["Service"] == "${name.suffix}"


def test_render_interpolates_every_service_string() -> None:
    q = query(ID_A, "geo-db", "${match(1)}", template="name_prefix_match", regexp=r"^geo-db-(.*?)-([^\-]+?)$",
              tags=["${match(2)}", "${match(9)}", "${name.prefix}"], node_meta={"${name.full}": "${ name.full }"},
              remove_empty_tags=True)
    out = render(q, "geo-db-customer-primary")
    assert out["Service"]["Service"] == "customer"
    assert out["Service"]["Tags"] == ["primary", "geo-db"]  # the out-of-range match was empty and removed
    assert out["Service"]["NodeMeta"] == {"${name.full}": "geo-db-customer-primary"}  # keys are not templates
    assert render(q, "nomatch")["Service"]["Service"] == ""  # no match: every group is empty
    # name.suffix trims the prefix case-sensitively, as Consul does.
    suffix = query(ID_A, "geo", "${name.suffix}", template="name_prefix_match")
    assert render(suffix, "geo-x")["Service"]["Service"] == "-x"
    assert render(suffix, "GEO-x")["Service"]["Service"] == "GEO-x"


@pytest.mark.parametrize(("q", "message"), [
    (query(ID_A, "t", template="other"), "Bad Template.Type 'other'"),
    (query(ID_A, "t", template="name_prefix_match", regexp="("), "Bad Regexp: "),
    (query(ID_A, "t", "${nope}", template="name_prefix_match"),
     "Bad evaluation for '${nope}' in Service.Service: unknown variable accessed: nope"),
    (query(ID_A, "t", "x", template="name_prefix_match", tags=["${name.full"]),
     "Bad format '${name.full' in Service.Tags[0]: "),
])
def test_compile_refuses_templates_that_cannot_render(q: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError) as err:
        compile_template(q)
    assert str(err.value).startswith(message)


def test_destroying_a_session_deletes_its_queries() -> None:
    s = StateStore()
    touched: list[set[tuple[str, ...]]] = []
    s.notify = touched.append
    reg = {"Node": "n1", "Address": "10.0.0.1", "ID": "", "Datacenter": "dc1", "TaggedAddresses": {}, "Meta": {},
           "SkipNodeUpdate": False, "Service": None, "Checks": []}
    session = {"ID": "s1", "Name": "", "Node": "n1", "LockDelay": 0, "Behavior": "release", "TTL": "",
               "NodeChecks": [], "ServiceChecks": None}
    FSM(s).apply_batch([cmd("catalog.register", reg=reg), cmd("session.create", session=session)])
    put(s, query(ID_A, "", session="s1"))
    put(s, query(ID_B, "kept"))
    touched.clear()
    FSM(s).apply_batch([cmd("session.destroy", id="s1")])
    assert s.queries.get(ID_A) is None and s.queries.get(ID_B) is not None
    assert ("queries",) in touched[0] and s.queries.by_session == {}


def test_snapshots_round_trip_and_old_snapshots_load() -> None:
    s = StateStore()
    put(s, query(ID_A, "geo", "${name.full}", template="name_prefix_match"))
    put(s, query(ID_B, "web-q"))
    data = msgpack.unpackb(msgpack.packb(s.dump()), raw=False)
    restored = StateStore()
    restored.load(copy.deepcopy(data))
    assert restored.dump() == s.dump()
    assert service_of(restored, "geo-x") == "geo-x"
    del data["queries"]  # a snapshot written before prepared queries existed
    old = StateStore()
    old.load(data)
    assert old.queries.all() == [] and old.queries.index == 0


def test_two_stores_fed_the_same_log_are_identical() -> None:
    log = [cmd("query.set", query=query(ID_A, "a"), update=False),
           cmd("query.set", query=query(ID_B, "", template="name_prefix_match"), update=False),
           cmd("query.set", query=query(ID_C, "a"), update=False),  # refused: same name
           cmd("query.set", query=query(ID_A, "b"), update=True),
           cmd("query.delete", id=ID_B)]
    a, b = StateStore(), StateStore()
    FSM(a).apply_batch(copy.deepcopy(log))
    for c in copy.deepcopy(log):
        FSM(b).apply_batch([c])
    assert a.dump() == b.dump()
    assert [q["Name"] for q in a.queries.all()] == ["b"]
