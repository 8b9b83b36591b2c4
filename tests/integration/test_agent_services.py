"""This node's own services and TTL checks: /v1/agent/service*, /v1/agent/check*, aggregated health,
anti-entropy with the catalog, and persistence across a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import consul
import pytest
import requests

from tests.integration.conftest import REPO, clean_env, free_port


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def catalog_status(c: consul.Consul, service: str) -> list[str]:
    _, entries = c.health.service(service)
    return [ch["Status"] for e in entries for ch in e["Checks"] if ch["ServiceID"]]


def test_service_with_ttl_check_through_its_life(dev_agent, c, base) -> None:
    c.agent.service.register("ttl-web", service_id="ttl-web-1", port=8080, tags=["v1"],
                             check=consul.Check.ttl("2s"))
    assert c.agent.services()["ttl-web-1"]["Port"] == 8080
    check = c.agent.checks()["service:ttl-web-1"]
    assert check["Status"] == "critical" and check["ServiceName"] == "ttl-web"  # new checks start critical
    eventually(lambda: catalog_status(c, "ttl-web") == ["critical"])
    assert requests.get(f"{base}/v1/agent/health/service/id/ttl-web-1", timeout=5).status_code == 503

    c.agent.check.ttl_pass("service:ttl-web-1", notes="all good")
    eventually(lambda: catalog_status(c, "ttl-web") == ["passing"])
    assert [e["Service"]["ID"] for e in c.health.service("ttl-web", passing=True)[1]] == ["ttl-web-1"]
    r = requests.get(f"{base}/v1/agent/health/service/name/ttl-web", timeout=5)
    assert r.status_code == 200 and r.json()[0]["AggregatedStatus"] == "passing"

    c.agent.check.ttl_warn("service:ttl-web-1")
    assert requests.get(f"{base}/v1/agent/health/service/name/ttl-web?format=text", timeout=5).status_code == 429

    # No report within the TTL: critical, with Consul's output.
    c.agent.check.ttl_pass("service:ttl-web-1")
    eventually(lambda: c.agent.checks()["service:ttl-web-1"]["Output"] == "TTL expired", timeout=10)
    eventually(lambda: catalog_status(c, "ttl-web") == ["critical"])

    c.agent.service.deregister("ttl-web-1")
    assert "ttl-web-1" not in c.agent.services() and "service:ttl-web-1" not in c.agent.checks()
    eventually(lambda: c.catalog.service("ttl-web")[1] == [])


def test_node_check_update_and_deregister(dev_agent, c, base) -> None:
    c.agent.check.register("node-ttl", check=consul.Check.ttl("30s"), check_id="node-ttl")
    r = requests.put(f"{base}/v1/agent/check/update/node-ttl", json={"Status": "warning", "Output": "disk 91%"},
                     timeout=5)
    assert r.status_code == 200
    check = c.agent.checks()["node-ttl"]
    assert (check["Status"], check["Output"], check["ServiceID"]) == ("warning", "disk 91%", "")
    node = c.agent.self()["Config"]["NodeName"]
    eventually(lambda: any(ch["CheckID"] == "node-ttl" and ch["Status"] == "warning"
                           for ch in c.health.node(node)[1]))
    c.agent.check.deregister("node-ttl")
    eventually(lambda: all(ch["CheckID"] != "node-ttl" for ch in c.health.node(node)[1]))


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/v1/agent/service/register", {"Port": 80}, 400, "Missing service name"),
        ("/v1/agent/service/register", {"Name": "x", "Port": 70000}, 400, "port"),
        ("/v1/agent/service/register", {"Name": "x", "Check": {"DockerContainerID": "f972c95ebf0e", "Args": ["true"],
                                                           "Interval": "10s"}},
         400, "not supported"),
        ("/v1/agent/check/register", {"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "500ms"}, 400,
         "at least 1s"),
        ("/v1/agent/check/register", {"Name": "c", "HTTP": "http://127.0.0.1:1/"}, 400, "Interval is required"),
        ("/v1/agent/check/register", {"Name": "c", "TCP": "nohost", "Interval": "5s"}, 400, "host:port"),
        ("/v1/agent/check/register", {"Name": "c", "HTTP": "ftp://x/", "Interval": "5s"}, 400, "http://"),
        ("/v1/agent/check/register", {"Name": "c", "TTL": "5s", "TCP": "a:1", "Interval": "5s"}, 400, "exactly one"),
        ("/v1/agent/service/register", {"Name": "x", "Check": {"TTL": "soon"}}, 400, "invalid duration"),
        ("/v1/agent/service/register", {"Name": "x", "Bogus": 1}, 400, "unknown field"),
        ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "ServiceID": "nope"}, 400, "does not exist"),
        ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "Status": "fine"}, 400, "Status"),
        ("/v1/agent/service/deregister/nope", None, 404, "Unknown service ID"),
        ("/v1/agent/check/deregister/nope", None, 404, "Unknown check ID"),
        ("/v1/agent/check/pass/nope", None, 404, "Unknown check ID"),
        ("/v1/agent/check/update/nope", {"Status": "nonsense"}, 400, "Invalid check status"),
    ],
)
def test_bad_agent_requests(dev_agent, base, c, path, body, status, text) -> None:
    before = (c.agent.services(), c.agent.checks())
    r = requests.put(f"{base}{path}", json=body, timeout=5)
    assert r.status_code == status and text in r.text, r.text
    assert (c.agent.services(), c.agent.checks()) == before


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[consul.Consul, Callable[[], None]]]:
    """A one-server cluster with a data dir and a 1 s anti-entropy interval; the callable restarts it."""
    http_port, raft_port = free_port(), free_port()
    conf = tmp_path / "agent.json"
    conf.write_text(json.dumps({"ae_interval": 1}))
    cmd = [sys.executable, "-m", "buoy", "agent", "-server", "-bootstrap-expect", "1", "-node", "n1",
           "-bind", "127.0.0.1", "-http-port", str(http_port), "-server-port", str(raft_port), "-dns-port", "-1",
           "-data-dir", str(tmp_path / "data"), "-encrypt", "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
           "-config-file", str(conf)]
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        with open(tmp_path / "agent.log", "ab") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env()))
        c = consul.Consul(port=http_port)
        eventually(lambda: _leader(c), timeout=20)

    def restart() -> None:
        os.kill(procs[-1].pid, signal.SIGTERM)
        procs[-1].wait(15)
        start()

    start()
    try:
        yield consul.Consul(port=http_port), restart
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _leader(c: consul.Consul) -> bool:
    try:
        return bool(c.status.leader())
    except requests.RequestException:
        return False


def test_anti_entropy_repairs_the_catalog_both_ways(server) -> None:
    c, _restart = server
    c.agent.service.register("ae-web", port=80, check=consul.Check.ttl("60s"))
    c.agent.check.ttl_pass("service:ae-web")
    eventually(lambda: catalog_status(c, "ae-web") == ["passing"])
    # Deregistered behind the agent's back: the next full sync puts it back, check and status included.
    c.catalog.deregister("n1", service_id="ae-web")
    eventually(lambda: catalog_status(c, "ae-web") == ["passing"], timeout=10)
    # Registered on this node behind the agent's back: removed; the server's own service stays.
    c.catalog.register("n1", "127.0.0.1", service={"Service": "intruder"})
    eventually(lambda: c.catalog.service("intruder")[1] == [], timeout=10)
    assert c.catalog.service("consul")[1] and c.catalog.service("ae-web")[1]
    # Other nodes are left alone.
    c.catalog.register("other-node", "10.0.0.9", service={"Service": "elsewhere"})
    time.sleep(3)  # three sync periods
    assert c.catalog.service("elsewhere")[1]


def test_services_and_check_status_survive_a_restart(server) -> None:
    c, restart = server
    c.agent.service.register("kept", service_id="kept-1", port=81, check=consul.Check.ttl("60s"))
    c.agent.check.ttl_warn("service:kept-1", notes="slow")
    restart()
    assert c.agent.services()["kept-1"]["Port"] == 81
    check = c.agent.checks()["service:kept-1"]
    assert (check["Status"], check["Output"]) == ("warning", "slow")
    eventually(lambda: catalog_status(c, "kept") == ["warning"])


def test_output_only_changes_are_not_pushed_every_time(dev_agent, c) -> None:
    c.agent.service.register("chatty", check=consul.Check.ttl("60s"))
    c.agent.check.ttl_pass("service:chatty", notes="run 1")

    def catalog_check() -> dict:
        """The service check as the catalog has it ({} until the agent's push has landed)."""
        return next((ch for e in c.health.service("chatty")[1] for ch in e["Checks"] if ch["ServiceID"]), {})

    eventually(lambda: catalog_check().get("Output") == "run 1")
    index = c.health.service("chatty")[0]
    for n in range(2, 6):
        c.agent.check.ttl_pass("service:chatty", notes=f"run {n}")
    assert c.agent.checks()["service:chatty"]["Output"] == "run 5"
    # Same status, new output: the catalog keeps the old output and no write happened for it.
    new_index, _ = c.health.service("chatty", index=index, wait="1s")
    assert new_index == index and catalog_check()["Output"] == "run 1"
    # A status change goes out at once, with the latest output.
    c.agent.check.ttl_warn("service:chatty", notes="run 6")
    eventually(lambda: (catalog_check().get("Status"), catalog_check().get("Output")) == ("warning", "run 6"))
    c.agent.service.deregister("chatty")


def test_maintenance_mode(dev_agent, c, base) -> None:
    c.agent.service.register("maint-web", service_id="maint-web-1", check=consul.Check.ttl("60s"))
    c.agent.check.ttl_pass("service:maint-web-1")
    eventually(lambda: c.health.service("maint-web", passing=True)[1])

    c.agent.service.maintenance("maint-web-1", "true", reason="deploying v2")
    check = c.agent.checks()["_service_maintenance:maint-web-1"]
    assert (check["Status"], check["Notes"]) == ("maintenance", "deploying v2")
    eventually(lambda: c.health.service("maint-web", passing=True)[1] == [])
    assert requests.get(f"{base}/v1/agent/health/service/id/maint-web-1", timeout=5).status_code == 503
    c.agent.service.maintenance("maint-web-1", "false")
    assert "_service_maintenance:maint-web-1" not in c.agent.checks()
    eventually(lambda: c.health.service("maint-web", passing=True)[1])

    c.agent.maintenance("true")
    assert "no reason was provided" in c.agent.checks()["_node_maintenance"]["Notes"]
    eventually(lambda: c.health.service("maint-web", passing=True)[1] == [])
    c.agent.maintenance("false")
    eventually(lambda: c.health.service("maint-web", passing=True)[1])

    assert requests.put(f"{base}/v1/agent/maintenance", timeout=5).status_code == 400
    assert requests.put(f"{base}/v1/agent/maintenance?enable=maybe", timeout=5).status_code == 400
    assert requests.put(f"{base}/v1/agent/service/maintenance/nope?enable=true", timeout=5).status_code == 404
    c.agent.service.deregister("maint-web-1")
