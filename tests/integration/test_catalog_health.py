"""Catalog register/deregister and the health endpoints' filters, via py-consul and raw HTTP."""

from __future__ import annotations

import threading
import time

import requests


def _register(c, node: str, addr: str, svc: str, sid: str, tags: list[str], status: str,
              meta: dict[str, str] | None = None) -> None:
    c.catalog.register(node, addr, service={"Service": svc, "ID": sid, "Port": 8080, "Tags": tags},
                       check={"CheckID": f"{sid}-check", "Name": "alive", "Status": status, "ServiceID": sid})
    if meta:
        # py-consul sends node_meta as a query filter on register, which Consul ignores; use the body field.
        r = requests.put(f"http://{c.http.host}:{c.http.port}/v1/catalog/register",
                         json={"Node": node, "Address": addr, "NodeMeta": meta}, timeout=5)
        assert r.status_code == 200


def test_register_and_read_back(dev_agent, c) -> None:
    _register(c, "cat-n1", "10.1.0.1", "cat-web", "cat-web-1", ["v1", "blue"], "passing", {"rack": "r1"})
    _register(c, "cat-n2", "10.1.0.2", "cat-web", "cat-web-2", ["v1"], "warning", {"rack": "r2"})
    _register(c, "cat-n3", "10.1.0.3", "cat-web", "cat-web-3", ["v2"], "critical")
    _, services = c.catalog.services()
    assert sorted(services["cat-web"]) == ["blue", "v1", "v2"] and "consul" in services
    _, nodes = c.catalog.service("cat-web")
    assert [n["ServiceID"] for n in nodes] == ["cat-web-1", "cat-web-2", "cat-web-3"]
    assert nodes[0]["Address"] == "10.1.0.1" and nodes[0]["ServicePort"] == 8080
    assert nodes[0]["NodeMeta"] == {"rack": "r1"}
    _, tagged = c.catalog.service("cat-web", tag="v1")
    assert [n["ServiceID"] for n in tagged] == ["cat-web-1", "cat-web-2"]
    _, node = c.catalog.node("cat-n1")
    assert node["Node"]["Address"] == "10.1.0.1" and "cat-web-1" in node["Services"]
    assert "cat-n1" in [n["Node"] for n in c.catalog.nodes()[1]]
    _, by_meta = c.catalog.nodes(node_meta={"rack": "r2"})
    assert [n["Node"] for n in by_meta] == ["cat-n2"]


def test_health_filters(dev_agent, c) -> None:
    _register(c, "hl-n1", "10.2.0.1", "hl-api", "hl-api-1", ["a"], "passing")
    _register(c, "hl-n2", "10.2.0.2", "hl-api", "hl-api-2", ["a", "b"], "warning")
    _register(c, "hl-n3", "10.2.0.3", "hl-api", "hl-api-3", ["b"], "critical")
    _, everything = c.health.service("hl-api")
    assert len(everything) == 3  # without ?passing critical instances are included
    _, passing = c.health.service("hl-api", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["hl-api-1"]  # warning is not passing
    _, tagged = c.health.service("hl-api", tag="b")
    assert [e["Service"]["ID"] for e in tagged] == ["hl-api-2", "hl-api-3"]
    _, checks = c.health.checks("hl-api")
    assert sorted(ch["Status"] for ch in checks) == ["critical", "passing", "warning"]
    _, node_checks = c.health.node("hl-n2")
    assert [ch["CheckID"] for ch in node_checks] == ["hl-api-2-check"]
    _, critical = c.health.state("critical")
    assert "hl-api-3-check" in [ch["CheckID"] for ch in critical]
    _, passing_state = c.health.state("passing")
    assert all(ch["Status"] == "passing" for ch in passing_state)


def test_node_check_counts_for_every_service(dev_agent, c) -> None:
    _register(c, "nc-n1", "10.3.0.1", "nc-svc", "nc-svc-1", [], "passing")
    c.catalog.register("nc-n1", "10.3.0.1", check={"CheckID": "nc-node", "Name": "node", "Status": "critical"})
    _, passing = c.health.service("nc-svc", passing=True)
    assert passing == []
    _, entries = c.health.service("nc-svc")
    assert sorted(ch["CheckID"] for ch in entries[0]["Checks"]) == ["nc-node", "nc-svc-1-check"]


def test_deregister_service_check_node(dev_agent, c) -> None:
    _register(c, "dr-n1", "10.4.0.1", "dr-svc", "dr-svc-1", [], "passing")
    c.catalog.register("dr-n1", "10.4.0.1", service={"Service": "dr-other", "ID": "dr-other"})
    assert c.catalog.deregister("dr-n1", service_id="dr-svc-1") is True
    assert c.catalog.service("dr-svc")[1] == []
    assert c.health.checks("dr-svc")[1] == []
    assert c.catalog.deregister("dr-n1") is True
    assert c.catalog.node("dr-n1")[1] is None
    assert c.catalog.service("dr-other")[1] == []


def test_service_watch_wakes_only_for_its_service(dev_agent, c) -> None:
    _register(c, "w-n1", "10.5.0.1", "w-svc", "w-svc-1", [], "passing")
    index, _ = c.health.service("w-svc")
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(r=c.health.service("w-svc", index=index, wait="20s")))
    t.start()
    _register(c, "w-n2", "10.5.0.2", "w-elsewhere", "w-e-1", [], "passing")
    time.sleep(0.3)
    assert t.is_alive(), "a change to another service woke the watch"
    _register(c, "w-n1", "10.5.0.1", "w-svc", "w-svc-1", [], "critical")
    t.join(10)
    new_index, entries = result["r"]
    assert int(new_index) > int(index) and entries[0]["Checks"][0]["Status"] == "critical"


def test_unknown_node_and_service(dev_agent, base) -> None:
    assert requests.get(f"{base}/v1/catalog/node/nope", timeout=5).json() is None
    assert requests.get(f"{base}/v1/catalog/service/nope", timeout=5).json() == []
    assert requests.get(f"{base}/v1/health/service/nope", timeout=5).json() == []


def test_agent_self_and_members(dev_agent, c) -> None:
    me = c.agent.self()
    assert me["Config"]["Datacenter"] == "dc1" and me["Config"]["Server"] is True
    assert me["Config"]["Version"].count(".") == 2
    assert me["Member"]["Name"] == me["Config"]["NodeName"]
    members = c.agent.members()
    assert members[0]["Status"] == 1 and members[0]["Tags"]["role"] == "consul"


def test_status_and_raft_configuration(dev_agent, base) -> None:
    leader = requests.get(f"{base}/v1/status/leader", timeout=5).json()
    assert leader == f"127.0.0.1:{dev_agent.server_port}"
    assert requests.get(f"{base}/v1/status/peers", timeout=5).json() == [leader]
    conf = requests.get(f"{base}/v1/operator/raft/configuration", timeout=5).json()
    assert conf["Servers"][0]["Leader"] is True and conf["Servers"][0]["Address"] == leader


def test_service_names_match_without_regard_to_case(dev_agent, c, base) -> None:
    """As Consul's catalog: "Case-Svc" is found as case-svc and CASE-SVC, listed as registered, and a watch on
    one spelling wakes for a change made under another."""
    _register(c, "case-n1", "10.6.0.1", "Case-Svc", "case-1", ["a"], "passing")
    _register(c, "case-n2", "10.6.0.2", "case-svc", "case-2", ["b"], "passing")
    for spelling in ("case-svc", "CASE-SVC", "Case-Svc"):
        rows = requests.get(f"{base}/v1/catalog/service/{spelling}", timeout=5).json()
        assert sorted((r["ServiceID"], r["ServiceName"]) for r in rows) == [("case-1", "Case-Svc"),
                                                                            ("case-2", "case-svc")]
        assert len(requests.get(f"{base}/v1/health/service/{spelling}?passing", timeout=5).json()) == 2
    services = requests.get(f"{base}/v1/catalog/services", timeout=5).json()
    assert services["Case-Svc"] == ["a"] and services["case-svc"] == ["b"]
    index, _ = c.health.service("CASE-SVC")
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(r=c.health.service("CASE-SVC", index=index, wait="20s")))
    t.start()
    _register(c, "case-n1", "10.6.0.1", "Case-Svc", "case-1", ["a"], "critical")
    t.join(10)
    new_index, entries = result["r"]
    assert int(new_index) > int(index)
    assert {e["Service"]["ID"]: e["Checks"][0]["Status"] for e in entries} == {"case-1": "critical",
                                                                                "case-2": "passing"}
