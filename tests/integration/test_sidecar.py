"""Sidecar registration (``Connect.SidecarService``) and the connect-capable views of a service:
/v1/catalog/connect/:s and /v1/health/connect/:s."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import requests

from tests.integration.test_agent_services import eventually


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(base: str, body: dict[str, Any]) -> requests.Response:
    return requests.put(f"{base}/v1/agent/service/register", json=body, timeout=10)


def connect_ids(base: str, kind: str, name: str, query: str = "") -> list[str]:
    rows = requests.get(f"{base}/v1/{kind}/connect/{name}{query}", timeout=10).json()
    return [r["Service"]["ID"] if kind == "health" else r["ServiceID"] for r in rows]


def test_sidecar_is_registered_with_consuls_defaults(dev_agent, base) -> None:
    name = unique("sc-web")
    body = {"Name": name, "ID": f"{name}-1", "Port": 8080, "Tags": ["v1"], "Meta": {"team": "a"},
            "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"DestinationName": "db",
                                                                    "LocalBindPort": 9191}]}}}}
    assert register(base, body).status_code == 200
    services = requests.get(f"{base}/v1/agent/services", timeout=10).json()
    parent, side = services[f"{name}-1"], services[f"{name}-1-sidecar-proxy"]
    assert "Connect" not in parent and parent["Kind"] == ""
    assert side["Service"] == f"{name}-sidecar-proxy" and side["Kind"] == "connect-proxy"
    assert 21000 <= side["Port"] <= 21255
    assert side["Tags"] == ["v1"] and side["Meta"] == {"team": "a"}
    assert side["Proxy"] == {
        "DestinationServiceName": name, "DestinationServiceID": f"{name}-1", "LocalServiceAddress": "127.0.0.1",
        "LocalServicePort": 8080, "Mode": "", "Config": {}, "MeshGateway": {}, "Expose": {},
        "Upstreams": [{"DestinationType": "service", "DestinationName": "db", "LocalBindPort": 9191,
                       "MeshGateway": {}}],
    }
    checks = requests.get(f"{base}/v1/agent/checks", timeout=10).json()
    listening = checks[f"service:{name}-1-sidecar-proxy:1"]
    assert listening["Name"] == "Connect Sidecar Listening" and listening["Type"] == "tcp"
    assert listening["Interval"] == "10s" and listening["ServiceID"] == f"{name}-1-sidecar-proxy"
    aliasing = checks[f"service:{name}-1-sidecar-proxy:2"]
    assert aliasing["Name"] == f"Connect Sidecar Aliasing {name}-1" and aliasing["Type"] == "alias"

    # The catalog has both; the connect views list the proxy for the destination, not the service itself.
    assert eventually(lambda: connect_ids(base, "catalog", name) == [f"{name}-1-sidecar-proxy"])
    assert connect_ids(base, "health", name) == [f"{name}-1-sidecar-proxy"]
    rows = requests.get(f"{base}/v1/catalog/connect/{name}", timeout=10).json()
    assert rows[0]["ServiceKind"] == "connect-proxy" and rows[0]["ServiceProxy"]["DestinationServiceName"] == name
    assert connect_ids(base, "health", f"{name}-sidecar-proxy") == []
    # Nothing listens on the proxy port: its TCP check fails, so ?passing leaves it out.
    assert eventually(lambda: connect_ids(base, "health", name, "?passing") == [])
    assert connect_ids(base, "health", name, "?tag=v2") == []

    # Deregistering the service takes its sidecar with it, locally and in the catalog.
    assert requests.put(f"{base}/v1/agent/service/deregister/{name}-1", timeout=10).status_code == 200
    assert f"{name}-1-sidecar-proxy" not in requests.get(f"{base}/v1/agent/services", timeout=10).json()
    assert not any(c["ServiceID"].startswith(name) for c in requests.get(f"{base}/v1/agent/checks",
                                                                          timeout=10).json().values())
    assert eventually(lambda: connect_ids(base, "catalog", name) == [])


def test_sidecar_fields_override_the_defaults(dev_agent, base) -> None:
    name = unique("sc-api")
    body = {"name": name, "port": 9000, "connect": {"sidecar_service": {
        "port": 21999, "tags": ["mesh"], "checks": [{"name": "proxy alive", "ttl": "30s"}]}}}
    assert register(base, body).status_code == 200
    side = requests.get(f"{base}/v1/agent/service/{name}-sidecar-proxy", timeout=10).json()
    assert side["Port"] == 21999 and side["Tags"] == ["mesh"]
    checks = {cid: c for cid, c in requests.get(f"{base}/v1/agent/checks", timeout=10).json().items()
              if c["ServiceID"] == f"{name}-sidecar-proxy"}
    assert list(checks) == [f"service:{name}-sidecar-proxy"]  # only the given check, no defaults
    assert requests.put(f"{base}/v1/agent/check/pass/service:{name}-sidecar-proxy", timeout=10).status_code == 200
    assert eventually(lambda: connect_ids(base, "health", name, "?passing") == [f"{name}-sidecar-proxy"])
    requests.put(f"{base}/v1/agent/service/deregister/{name}", timeout=10)


def test_blocking_connect_query_wakes_when_a_proxy_registers(dev_agent, base) -> None:
    name = unique("sc-db")
    first = requests.get(f"{base}/v1/health/connect/{name}", timeout=10)
    assert first.json() == []
    index = first.headers["X-Consul-Index"]
    answer: dict[str, Any] = {}

    def watch() -> None:
        # As Consul's clients do: a blocking query may return early with nothing new (here when another
        # service's change moves the index an unknown name answers with), so ask again from the new index.
        at = index
        for _ in range(10):
            r = requests.get(f"{base}/v1/health/connect/{name}?index={at}&wait=20s", timeout=30)
            answer.update(rows=r.json(), at=time.monotonic())
            if answer["rows"]:
                return
            at = r.headers["X-Consul-Index"]

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)
    proxy = {"Name": f"{name}-proxy", "Kind": "connect-proxy", "Port": 21500,
             "Proxy": {"DestinationServiceName": name}}
    assert register(base, proxy).status_code == 200
    registered = time.monotonic()
    watcher.join(timeout=15)
    assert not watcher.is_alive()
    assert [r["Service"]["ID"] for r in answer["rows"]] == [f"{name}-proxy"]
    assert answer["at"] - registered < 5
    requests.put(f"{base}/v1/agent/service/deregister/{name}-proxy", timeout=10)


def test_bad_sidecar_definitions_are_refused(dev_agent, base) -> None:
    name = unique("sc-bad")
    for connect in ({"SidecarService": "yes"}, {"SidecarService": {"Port": 70000}},
                    {"SidecarService": {"Proxy": {"Upstreams": [{"LocalBindPort": 1}]}}}):
        r = register(base, {"Name": name, "Port": 80, "Connect": connect})
        assert r.status_code == 400, (connect, r.text)
    proxy = register(base, {"Name": name, "Kind": "connect-proxy", "Port": 21000})
    assert proxy.status_code == 400 and "DestinationServiceName" in proxy.text
    services = requests.get(f"{base}/v1/agent/services", timeout=10).json()
    assert not any(sid.startswith(name) for sid in services)
