"""Prepared queries (/v1/query): CRUD through py-consul, execute's health and tag filters, templates,
session binding, blocking reads, bad input, and execute on a follower and through a client agent."""

from __future__ import annotations

import threading
from typing import Any

import requests

from tests.integration.cluster import Cluster
from tests.integration.conftest import wait_until

TEMPLATE = {"Type": "name_prefix_match"}


def _register(base: str, node: str, sid: str, service: str, *, tags: list[str] | None = None,
              status: str = "passing", node_meta: dict[str, str] | None = None,
              meta: dict[str, str] | None = None) -> None:
    r = requests.put(f"{base}/v1/catalog/register", timeout=5, json={
        "Node": node, "Address": "10.9.0.1", "NodeMeta": node_meta or {},
        "Service": {"ID": sid, "Service": service, "Port": 8080, "Tags": tags or [], "Meta": meta or {}},
        "Check": {"CheckID": f"{sid}-check", "Name": "alive", "Status": status, "ServiceID": sid}})
    assert r.status_code == 200, r.text


def _create(base: str, body: dict[str, Any]) -> str:
    r = requests.post(f"{base}/v1/query", json=body, timeout=5)
    assert r.status_code == 200, r.text
    return str(r.json()["ID"])


def _execute(base: str, name: str, **params: str) -> dict[str, Any]:
    r = requests.get(f"{base}/v1/query/{name}/execute", params=params, timeout=5)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _ids(result: dict[str, Any]) -> list[str]:
    return sorted(e["Service"]["ID"] for e in result["Nodes"])


def _one_line(r: requests.Response) -> str:
    assert r.text.endswith("\n") and r.text.count("\n") == 1, r.text
    return r.text.strip()


def test_crud_through_py_consul(dev_agent, c, prefix) -> None:
    name = f"{prefix}-q"
    qid = c.query.create(f"{prefix}-web", name=name, tags=["v1"], onlypassing=True, ttl="10s")["ID"]
    [row] = c.query.get(qid)
    assert (row["ID"], row["Name"], row["DNS"]) == (qid, name, {"TTL": "10s"})
    assert row["Service"]["Service"] == f"{prefix}-web" and row["Service"]["Tags"] == ["v1"]
    assert row["Service"]["OnlyPassing"] is True and row["CreateIndex"] == row["ModifyIndex"]
    # py-consul always sends Template {Type: name_prefix_match}, so its queries are templates: they run by name.
    assert row["Template"]["Type"] == "name_prefix_match"
    assert qid in [q["ID"] for q in c.query.list()]

    assert c.query.update(qid, f"{prefix}-api", name=name) is True
    [row] = c.query.get(qid)
    assert row["Service"]["Service"] == f"{prefix}-api" and row["ModifyIndex"] > row["CreateIndex"]
    assert c.query.explain(name)["Query"]["ID"] == qid
    result = c.query.execute(name)
    assert result == {"Service": f"{prefix}-api", "Nodes": [], "DNS": {"TTL": ""}, "Datacenter": "dc1",
                      "Failovers": 0}

    assert c.query.delete(qid) is True
    assert c.query.get(qid) is None  # a 404, which py-consul answers with None
    assert qid not in [q["ID"] for q in c.query.list()]


def test_execute_filters_like_consul(dev_agent, base, prefix) -> None:
    svc = f"{prefix}-web"
    _register(base, f"{prefix}-n1", f"{svc}-1", svc, tags=["v1", "Primary"], node_meta={"rack": "a"},
              meta={"env": "prod"})
    _register(base, f"{prefix}-n2", f"{svc}-2", svc, tags=["v1"], status="warning", node_meta={"rack": "b"})
    _register(base, f"{prefix}-n3", f"{svc}-3", svc, tags=["v1"], status="critical")
    _register(base, f"{prefix}-n4", f"{svc}-4", svc, tags=["v1", "canary"])
    _register(base, f"{prefix}-n5", f"{svc}-5", svc, status="maintenance")
    cases: dict[str, tuple[dict[str, Any], list[int]]] = {
        "plain": ({}, [1, 2, 4]),  # critical and maintenance never; warning unless OnlyPassing
        "passing": ({"OnlyPassing": True}, [1, 4]),
        "ignore": ({"IgnoreCheckIDs": [f"{svc}-3-check"]}, [1, 2, 3, 4]),
        "tags": ({"Tags": ["V1", "!canary"]}, [1, 2]),  # all required, none forbidden, any case
        "tag-case": ({"Tags": ["primary"]}, [1]),
        "node-meta": ({"NodeMeta": {"rack": "a"}}, [1]),
        "service-meta": ({"ServiceMeta": {"env": "prod"}}, [1]),
    }
    for label, (extra, want) in cases.items():
        _create(base, {"Name": f"{prefix}-{label}", "Service": {"Service": svc, **extra}, "DNS": {"TTL": "5s"}})
        result = _execute(base, f"{prefix}-{label}")
        assert _ids(result) == [f"{svc}-{i}" for i in want], label
        assert (result["Service"], result["DNS"], result["Failovers"]) == (svc, {"TTL": "5s"}, 0)

    # Entries are /v1/health/service's entries.
    health = requests.get(f"{base}/v1/health/service/{svc}", timeout=5).json()
    by_id = {e["Service"]["ID"]: e for e in health}
    for entry in _execute(base, f"{prefix}-plain")["Nodes"]:
        assert entry == by_id[entry["Service"]["ID"]]
    assert len(_execute(base, f"{prefix}-plain", limit="1")["Nodes"]) == 1
    assert len(_execute(base, f"{prefix}-plain", limit="0", near="_agent")["Nodes"]) == 3  # 0: no limit

    # Shuffled on every execution: a second order shows up well within a bounded number of tries.
    first = [e["Service"]["ID"] for e in _execute(base, f"{prefix}-plain")["Nodes"]]
    orders = ([e["Service"]["ID"] for e in _execute(base, f"{prefix}-plain")["Nodes"]] for _ in range(200))
    assert any(order != first for order in orders)


def test_templates_pick_the_longest_prefix_and_interpolate(dev_agent, base, prefix) -> None:
    db = f"{prefix}-db"
    _register(base, f"{prefix}-n1", f"{db}-1", db, tags=["primary"])
    _register(base, f"{prefix}-n2", f"{db}-2", db, tags=["replica"])
    generic = _create(base, {"Name": f"{prefix}-", "Template": TEMPLATE, "Service": {"Service": "${name.full}"}})
    geo = _create(base, {"Name": f"{prefix}-geo-", "Service": {
        "Service": prefix + "-${match(1)}", "Tags": ["${match(2)}"]}, "Template": {
        "Type": "name_prefix_match", "Regexp": f"^{prefix}-geo-(.+?)-([a-z]*)$", "RemoveEmptyTags": True}})

    assert _ids(_execute(base, db)) == [f"{db}-1", f"{db}-2"]  # the generic template: name.full
    assert _ids(_execute(base, f"{prefix}-geo-db-primary")) == [f"{db}-1"]  # the longer prefix wins
    assert _ids(_execute(base, f"{prefix}-geo-db-")) == [f"{db}-1", f"{db}-2"]  # the empty tag was removed
    explained = requests.get(f"{base}/v1/query/{prefix}-geo-db-replica/explain", timeout=5).json()["Query"]
    assert (explained["ID"], explained["Service"]["Service"], explained["Service"]["Tags"]) == (geo, db, ["replica"])
    stored = requests.get(f"{base}/v1/query/{geo}", timeout=5).json()[0]
    assert stored["Service"]["Service"] == prefix + "-${match(1)}"  # rendering never changes the template

    # A static query with the exact name overrides every template.
    _create(base, {"Name": f"{prefix}-geo-db-primary", "Service": {"Service": f"{prefix}-other"}})
    assert _execute(base, f"{prefix}-geo-db-primary")["Service"] == f"{prefix}-other"

    r = requests.get(f"{base}/v1/query/{generic}/execute", timeout=5)
    assert r.status_code == 500
    assert _one_line(r) == "prepared query templates can only be resolved up by name, not by ID"


def test_session_bound_query_goes_with_its_session(dev_agent, base, c, prefix) -> None:
    _register(base, f"{prefix}-n1", f"{prefix}-web-1", f"{prefix}-web")
    sid = c.session.create(name=f"{prefix}-s", node=f"{prefix}-n1", checks=[])
    qid = _create(base, {"Session": sid, "Service": {"Service": f"{prefix}-web"}})  # no name: bound to a session
    assert requests.get(f"{base}/v1/query/{qid}", timeout=5).status_code == 200
    assert c.session.destroy(sid) is True
    r = requests.get(f"{base}/v1/query/{qid}", timeout=5)
    assert r.status_code == 404 and _one_line(r) == "Query not found"


def _blocked_get(url: str, params: dict[str, str]) -> tuple[threading.Thread, list[requests.Response]]:
    out: list[requests.Response] = []
    t = threading.Thread(target=lambda: out.append(requests.get(url, params=params, timeout=60)), daemon=True)
    t.start()
    return t, out


def test_list_and_execute_block_until_something_changes(dev_agent, base, prefix) -> None:
    svc = f"{prefix}-web"
    _register(base, f"{prefix}-n1", f"{svc}-1", svc, status="critical")
    index = requests.get(f"{base}/v1/query", timeout=5).headers["X-Consul-Index"]
    listing, listed = _blocked_get(f"{base}/v1/query", {"index": index, "wait": "30s"})
    qid = _create(base, {"Name": f"{prefix}-q", "Service": {"Service": svc}})
    listing.join(timeout=45)
    assert listed and int(listed[0].headers["X-Consul-Index"]) > int(index)
    assert qid in [q["ID"] for q in listed[0].json()]

    r = requests.get(f"{base}/v1/query/{prefix}-q/execute", timeout=5)
    assert r.json()["Nodes"] == []
    executing, executed = _blocked_get(f"{base}/v1/query/{prefix}-q/execute",
                                       {"index": r.headers["X-Consul-Index"], "wait": "30s"})
    _register(base, f"{prefix}-n1", f"{svc}-1", svc, status="passing")
    executing.join(timeout=45)
    assert executed and _ids(executed[0].json()) == [f"{svc}-1"]


def test_bad_input_is_refused_and_changes_nothing(dev_agent, base, prefix) -> None:
    existing = _create(base, {"Name": f"{prefix}-Taken", "Service": {"Service": "x"}})
    unknown = "00000000-0000-4000-8000-000000000000"
    svc = {"Service": "x"}
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "", "{", 400, "Request decode failed: "),
        ("POST", "", [1], 400, "Request decode failed: Query: expected a JSON object"),
        ("POST", "", {"Name": "n", "Service": {"Service": "x", "Tags": "a"}}, 400,
         "Request decode failed: Query.Service.Tags: expected a list of strings"),
        ("POST", "", {"Name": "n", "Service": {"Service": "x", "OnlyPassing": "yes"}}, 400,
         "Request decode failed: Query.Service.OnlyPassing: expected a boolean"),
        ("POST", "", {"Name": "n", "Service": svc, "Bogus": 1}, 400, "Request decode failed: Query: unknown field"),
        ("POST", "", {"Name": "n"}, 500, "Invalid prepared query: Must provide a Service name to query"),
        ("POST", "", {"Service": svc}, 500, "Invalid prepared query: Must be bound to a session"),
        ("POST", "", {"Name": "n", "Service": svc, "DNS": {"TTL": "soon"}}, 500,
         "Invalid prepared query: Bad DNS TTL 'soon': time: invalid duration \"soon\""),
        ("POST", "", {"Name": "n", "Service": svc, "Template": {"Type": "bogus"}}, 500,
         "raft apply failed: failed compiling template: Bad Template.Type 'bogus'"),
        ("POST", "", {"Name": "n", "Service": svc, "Template": {**TEMPLATE, "Regexp": "("}}, 500,
         "raft apply failed: failed compiling template: Bad Regexp: "),
        ("POST", "", {"Name": f"{prefix}-taken", "Service": svc}, 500,
         f"raft apply failed: name '{prefix}-taken' aliases an existing query name"),
        ("POST", "", {"Name": "n", "Session": unknown, "Service": svc}, 500,
         f'raft apply failed: invalid session "{unknown}"'),
        ("POST", "", {"ID": unknown, "Name": "n", "Service": svc}, 500,
         "ID must be empty when creating a new prepared query"),
        ("PUT", f"/{unknown}", {"Name": "n", "Service": svc}, 500,
         f"Cannot modify non-existent prepared query: '{unknown}'"),
        ("PUT", f"/{existing}", {"Name": "n"}, 500, "Invalid prepared query: Must provide a Service name to query"),
        ("DELETE", f"/{unknown}", None, 500, f"Cannot modify non-existent prepared query: '{unknown}'"),
        ("GET", f"/{unknown}", None, 404, "Query not found"),
        ("GET", f"/{prefix}-nothing/execute", None, 404, "Query not found"),
        ("GET", f"/{prefix}-nothing/explain", None, 404, "Query not found"),
        ("GET", f"/{prefix}-taken/execute?limit=x", None, 500,
         'Bad limit: strconv.Atoi: parsing "x": invalid syntax'),
        ("GET", f"/{prefix}-taken/execute?connect=maybe", None, 500,
         "Error parsing 'connect' value: strconv.ParseBool: parsing \"maybe\": invalid syntax"),
        ("GET", f"/{prefix}-taken/execute?connect=true", None, 400,
         "Connect must be enabled in order to use this endpoint"),
        ("POST", f"/{existing}/execute", None, 405, "method POST not allowed"),
    ]
    before = requests.get(f"{base}/v1/query", timeout=5)
    for method, path, body, status, text in cases:
        data = body if isinstance(body, str) else None
        r = requests.request(method, f"{base}/v1/query{path}", data=data, timeout=5,
                             json=None if isinstance(body, str) else body)
        assert (r.status_code, _one_line(r)[:len(text)]) == (status, text), (method, path, body, r.text)
    after = requests.get(f"{base}/v1/query", timeout=5)
    assert after.headers["X-Consul-Index"] == before.headers["X-Consul-Index"]
    assert after.json() == before.json()


def test_execute_on_a_follower_and_through_a_client_agent(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    base = {i: f"http://127.0.0.1:{cluster.http[i]}" for i in range(3)}
    _register(base[leader], "pq-n1", "pq-web-1", "pq-web")
    _create(base[follower], {"Name": "pq", "Service": {"Service": "pq-web"}})  # a write through a follower

    # A default read on a follower is answered by the leader, so it sees the write at once.
    r = requests.get(f"{base[follower]}/v1/query/pq/execute", timeout=10)
    assert r.status_code == 200 and _ids(r.json()) == ["pq-web-1"]
    assert r.headers["X-Consul-Effective-Consistency"] == "leader"
    # ?stale is answered from the follower's own state, once replication has brought the query there.
    stale = wait_until(lambda: _ids(_execute(base[follower], "pq", stale="")) == ["pq-web-1"], "a stale execute")
    assert stale
    r = requests.get(f"{base[follower]}/v1/query/pq/execute?stale", timeout=10)
    assert r.headers["X-Consul-Effective-Consistency"] == "stale"

    client = cluster.add_client([follower])
    via_client = f"http://127.0.0.1:{cluster.http[client]}"
    assert wait_until(lambda: _ids(_execute(via_client, "pq")) == ["pq-web-1"], "an execute through a client agent")
