"""The proxy's configuration from a registration or flags, and its balancer's choices."""

from __future__ import annotations

import pytest

from buoy.connect.balancer import Balancer
from buoy.connect.config import IDLE_TIMEOUT, ProxyConfigError, from_service, standalone


def registration(**proxy: object) -> dict[str, object]:
    return {"ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
            "Address": "", "Proxy": {"DestinationServiceName": "web", "DestinationServiceID": "web",
                                     "LocalServiceAddress": "127.0.0.1", "LocalServicePort": 8080, **proxy}}


def test_sidecar_defaults() -> None:
    cfg = from_service(registration(Upstreams=[{"DestinationName": "db", "LocalBindPort": 9191}]))
    assert cfg.service == "web" and cfg.metrics_addr == ""
    assert cfg.public is not None
    assert (cfg.public.bind_address, cfg.public.bind_port) == ("0.0.0.0", 21000)
    assert (cfg.public.local_address, cfg.public.local_port) == ("127.0.0.1", 8080)
    assert (cfg.public.local_connect_timeout, cfg.public.handshake_timeout) == (1.0, 10.0)
    (db,) = cfg.upstreams
    assert (db.destination, db.bind_address, db.bind_port, db.policy) == ("db", "127.0.0.1", 9191, "round_robin")
    assert (db.connect_timeout, db.max_connections, db.max_failures, db.ejection_time) == (10.0, 0, 5, 30.0)
    assert db.idle_timeout == IDLE_TIMEOUT


def test_config_keys() -> None:
    cfg = from_service(registration(
        Config={"bind_address": "127.0.0.2", "bind_port": 20000, "local_service_address": "127.0.0.3:81",
                "handshake_timeout_ms": 500, "idle_timeout_ms": "2000", "envoy_prometheus_bind_addr": "127.0.0.1:9102"},
        Upstreams=[{"DestinationName": "db", "LocalBindPort": 9191, "Config": {
            "connect_timeout_ms": 250, "limits": {"max_connections": 7}, "load_balancer": {"policy": "least_request"},
            "passive_health_check": {"max_failures": 2, "base_ejection_time": "5s"}}}]))
    assert cfg.public is not None
    assert (cfg.public.bind_address, cfg.public.bind_port, cfg.public.local_address, cfg.public.local_port) == (
        "127.0.0.2", 20000, "127.0.0.3", 81)
    assert (cfg.public.handshake_timeout, cfg.public.idle_timeout) == (0.5, 2.0)
    (db,) = cfg.upstreams
    assert (db.connect_timeout, db.max_connections, db.policy, db.max_failures, db.ejection_time) == (
        0.25, 7, "least_request", 2, 5.0)
    assert db.idle_timeout == 2.0  # inherited from the proxy
    assert cfg.metrics_addr == "127.0.0.1:9102"


@pytest.mark.parametrize(("proxy", "message"), [
    ({"Config": []}, "Proxy.Config: expected an object"),
    ({"Config": {"bind_port": "x"}}, "Proxy.Config.bind_port: expected a number"),
    ({"Config": {"handshake_timeout_ms": 0}}, "handshake_timeout_ms: must be at least 1"),
    ({"Config": {"local_service_address": "nowhere:port"}}, "expected host:port"),
    ({"Upstreams": [{"DestinationName": "db", "LocalBindPort": 1, "Config": {"load_balancer": {"policy": "maglev"}}}]},
     "'maglev' is not one of round_robin, least_request"),
    ({"Upstreams": [{"DestinationName": "db", "DestinationType": "prepared_query", "LocalBindPort": 1}]},
     "only service upstreams"),
    ({"LocalServicePort": 0}, "no local service port"),
])
def test_bad_config(proxy: dict[str, object], message: str) -> None:
    with pytest.raises(ProxyConfigError, match=message):
        from_service(registration(**proxy))


def test_not_a_proxy() -> None:
    with pytest.raises(ProxyConfigError, match="is not a connect-proxy"):
        from_service(dict(registration(), Kind=""))


def test_standalone_flags() -> None:
    cfg = standalone("web", "127.0.0.1:8443", "127.0.0.1:8080", ["db:9191", "cache:9192"])
    assert cfg.public is not None and (cfg.public.bind_port, cfg.public.local_port) == (8443, 8080)
    assert [(u.destination, u.bind_port) for u in cfg.upstreams] == [("db", 9191), ("cache", 9192)]
    assert standalone("web", "", "", []).public is None
    with pytest.raises(ProxyConfigError, match="-service-addr is required"):
        standalone("web", ":8443", "", [])
    with pytest.raises(ProxyConfigError, match="port 70000 out of range"):
        standalone("web", "", "", ["db:70000"])


def three() -> Balancer:
    b = Balancer(max_failures=2, ejection_time=60)
    b.update([("n/a", "127.0.0.1", 1), ("n/b", "127.0.0.1", 2), ("n/c", "127.0.0.1", 3)])
    return b


def test_round_robin_and_retry_order() -> None:
    b = three()
    picks = [b.pick() for _ in range(6)]
    assert [e.port for e in picks if e] == [1, 2, 3, 1, 2, 3]
    first = b.pick()
    assert first is not None
    second = b.pick([first])
    assert second is not None and second is not first
    assert b.pick(b.endpoints) is None


def test_least_request() -> None:
    b = three()
    b.policy = "least_request"
    b.endpoints[0].active, b.endpoints[1].active = 2, 1
    assert {b.pick().port for _ in range(4)} == {3}  # type: ignore[union-attr]
    b.endpoints[2].active = 5
    assert b.pick().port == 2  # type: ignore[union-attr]


def test_outlier_ejection_and_panic() -> None:
    b = three()
    a = b.endpoints[0]
    assert b.failed(a) is False and b.failed(a) is True
    assert a not in [b.pick() for _ in range(10)]
    b.succeeded(a)
    assert a in [b.pick() for _ in range(3)]
    for e in b.endpoints:  # every instance ejected: all are tried rather than none
        b.failed(e)
        b.failed(e)
    assert b.pick() is not None


def test_update_keeps_state() -> None:
    b = three()
    b.endpoints[1].active = 4
    b.update([("n/b", "127.0.0.1", 2), ("n/d", "127.0.0.1", 4)])
    assert [(e.key, e.active) for e in b.endpoints] == [("n/b", 4), ("n/d", 0)]
