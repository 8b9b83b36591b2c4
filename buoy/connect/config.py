"""What a proxy does, read from its registration (``Kind: connect-proxy``) or from command-line flags.

The proxy's ``Proxy.Config`` takes the keys of Consul's built-in proxy (``bind_address``, ``bind_port``,
``local_service_address``, ``local_connect_timeout_ms``, ``handshake_timeout_ms``) and
``envoy_prometheus_bind_addr`` for metrics; an upstream's ``Config`` takes ``connect_timeout_ms`` and
Envoy's ``limits.max_connections``, ``passive_health_check.max_failures`` / ``base_ejection_time`` and
``load_balancer.policy``. Buoy adds ``idle_timeout_ms`` at both levels (an upstream inherits the proxy's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buoy.connect.balancer import POLICIES
from buoy.durations import parse_duration

IDLE_TIMEOUT = 3600.0  # Envoy's tcp_proxy default


class ProxyConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PublicConfig:
    bind_address: str
    bind_port: int
    local_address: str
    local_port: int
    local_connect_timeout: float = 1.0
    handshake_timeout: float = 10.0
    idle_timeout: float = IDLE_TIMEOUT


@dataclass(frozen=True)
class UpstreamConfig:
    destination: str
    bind_address: str
    bind_port: int
    connect_timeout: float = 10.0
    policy: str = "round_robin"
    max_connections: int = 0  # 0: no limit
    max_failures: int = 5
    ejection_time: float = 30.0
    idle_timeout: float = IDLE_TIMEOUT

    @property
    def name(self) -> str:
        return f"{self.destination}:{self.bind_port}"


@dataclass(frozen=True)
class ProxyConfig:
    service: str  # whose identity the proxy takes and whose intentions decide
    public: PublicConfig | None
    upstreams: tuple[UpstreamConfig, ...]
    metrics_addr: str = ""


def split_hostport(value: str, what: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = default_host, value
    try:
        number = int(port)
    except ValueError:
        raise ProxyConfigError(f"{what}: expected host:port, got {value!r}") from None
    if not 0 < number < 65536:
        raise ProxyConfigError(f"{what}: port {number} out of range")
    return host.strip("[]") or default_host, number


class _Reader:
    """Typed access to a ``Config`` map, naming the key in every error."""

    def __init__(self, data: Any, what: str) -> None:
        if data is not None and not isinstance(data, dict):
            raise ProxyConfigError(f"{what}: expected an object")
        self.data = data or {}
        self.what = what

    def sub(self, key: str) -> _Reader:
        return _Reader(self.data.get(key), f"{self.what}.{key}")

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self.data.get(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ProxyConfigError(f"{self.what}.{key}: expected a number, got {value!r}") from None
        if number < minimum:
            raise ProxyConfigError(f"{self.what}.{key}: must be at least {minimum:g}")
        return number

    def millis(self, key: str, default: float) -> float:
        return self.number(key, default * 1000, minimum=1) / 1000

    def duration(self, key: str, default: float) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as e:
            raise ProxyConfigError(f"{self.what}.{key}: {e}") from None

    def text(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise ProxyConfigError(f"{self.what}.{key}: expected a string")
        return value


def upstream(destination: str, bind_address: str, bind_port: int, conf: Any, what: str,
             idle_timeout: float = IDLE_TIMEOUT) -> UpstreamConfig:
    r = _Reader(conf, what)
    policy = r.sub("load_balancer").text("policy", "round_robin")
    if policy not in POLICIES:
        raise ProxyConfigError(f"{what}.load_balancer.policy: {policy!r} is not one of {', '.join(POLICIES)}")
    check = r.sub("passive_health_check")
    return UpstreamConfig(
        destination, bind_address or "127.0.0.1", bind_port,
        connect_timeout=r.millis("connect_timeout_ms", 10.0), policy=policy,
        max_connections=int(r.sub("limits").number("max_connections", 0)),
        max_failures=int(check.number("max_failures", 5, minimum=1)),
        ejection_time=check.duration("base_ejection_time", 30.0),
        idle_timeout=r.millis("idle_timeout_ms", idle_timeout))


def from_service(svc: dict[str, Any]) -> ProxyConfig:
    """A ``connect-proxy`` registration, as /v1/agent/service/:id returns it."""
    if svc.get("Kind") != "connect-proxy":
        raise ProxyConfigError(f"service {svc.get('ID')!r} is not a connect-proxy")
    proxy = svc.get("Proxy") or {}
    r = _Reader(proxy.get("Config"), "Proxy.Config")
    idle_timeout = r.millis("idle_timeout_ms", IDLE_TIMEOUT)
    public = None
    port = int(r.number("bind_port", svc.get("Port") or 0))
    if port:
        local = r.text("local_service_address", "")
        if local:
            local_host, local_port = split_hostport(local, "Proxy.Config.local_service_address")
        else:
            local_host = proxy.get("LocalServiceAddress") or "127.0.0.1"
            local_port = int(proxy.get("LocalServicePort") or 0)
        if not local_port:
            raise ProxyConfigError("the proxy has no local service port (Proxy.LocalServicePort)")
        public = PublicConfig(r.text("bind_address", svc.get("Address") or "0.0.0.0"), port, local_host, local_port,
                              r.millis("local_connect_timeout_ms", 1.0), r.millis("handshake_timeout_ms", 10.0),
                              idle_timeout)
    upstreams = []
    for i, u in enumerate(proxy.get("Upstreams") or []):
        if u.get("DestinationType", "service") not in ("", "service"):
            raise ProxyConfigError(f"Proxy.Upstreams[{i}]: only service upstreams are supported")
        upstreams.append(upstream(u["DestinationName"], u.get("LocalBindAddress", ""), int(u["LocalBindPort"]),
                                  u.get("Config"), f"Proxy.Upstreams[{i}].Config", idle_timeout))
    return ProxyConfig(proxy.get("DestinationServiceName") or svc["Service"], public, tuple(upstreams),
                       r.text("envoy_prometheus_bind_addr", ""))


def standalone(service: str, listen: str, service_addr: str, upstreams: list[str]) -> ProxyConfig:
    """``-service`` with ``-listen``/``-service-addr`` and ``-upstream name:port`` flags."""
    public = None
    if listen:
        if not service_addr:
            raise ProxyConfigError("-service-addr is required with -listen")
        host, listen_port = split_hostport(listen, "-listen", "0.0.0.0")
        local_host, local_port = split_hostport(service_addr, "-service-addr")
        public = PublicConfig(host, listen_port, local_host, local_port)
    ups = []
    for value in upstreams:
        name, sep, bind = value.partition(":")
        if not sep or not name:
            raise ProxyConfigError(f"-upstream: expected name:port, got {value!r}")
        _, number = split_hostport(bind, "-upstream")
        ups.append(upstream(name, "127.0.0.1", number, None, "-upstream"))
    return ProxyConfig(service, public, tuple(ups))
