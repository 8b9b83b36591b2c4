"""The proxy's counters and histograms, served in Prometheus' text format.

Counters on the data path are plain integers on each listener's ``Stats``, read by a collector only when
scraped: a lock-taking metric object per chunk of bytes would cost more than the copy itself. The connect
time histogram is observed once per connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONNECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Stats:
    """One listener's figures."""

    def __init__(self, listener: str, kind: str, connect_time: Histogram) -> None:
        self.listener = listener
        self.kind = kind  # "public" or "upstream"
        self.accepted = 0
        self.active = 0
        self.rx = 0  # bytes from the downstream client
        self.tx = 0  # bytes to the downstream client
        self.handshake_failures: Counter[str] = Counter()
        self.denied = 0
        self.rejected: Counter[str] = Counter()  # connections closed before piping, by reason
        self.connect_failures = 0
        self.idle_timeouts = 0  # piped connections closed for moving no byte for the idle timeout
        self.connect_time = connect_time.labels(listener=listener)


class Metrics(Collector):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connect_time = Histogram("buoy_proxy_connect_seconds",
                                      "Time to open the onward connection (TCP, and TLS for upstreams)",
                                      ["listener"], buckets=CONNECT_BUCKETS, registry=self.registry)
        self.listeners: dict[str, Stats] = {}
        self.registry.register(self)

    def stats(self, listener: str, kind: str) -> Stats:
        """The listener's figures; a listener that restarts under the same name continues them."""
        if listener not in self.listeners:
            self.listeners[listener] = Stats(listener, kind, self.connect_time)
        return self.listeners[listener]

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        labels = ["listener", "kind"]
        accepted = CounterMetricFamily("buoy_proxy_connections", "Connections accepted", labels=labels)
        active = GaugeMetricFamily("buoy_proxy_active_connections", "Connections open now", labels=labels)
        moved = CounterMetricFamily("buoy_proxy_bytes", "Bytes piped, rx from and tx to the downstream client",
                                    labels=[*labels, "direction"])
        handshakes = CounterMetricFamily("buoy_proxy_handshake_failures",
                                         "TLS handshakes or peer identities refused", labels=[*labels, "reason"])
        denied = CounterMetricFamily("buoy_proxy_denied_connections", "Connections denied by intentions",
                                     labels=labels)
        rejected = CounterMetricFamily("buoy_proxy_rejected_connections",
                                       "Connections closed before any byte was piped", labels=[*labels, "reason"])
        failures = CounterMetricFamily("buoy_proxy_connect_failures",
                                       "Onward connections that failed (each attempt)", labels=labels)
        idle = CounterMetricFamily("buoy_proxy_idle_timeouts", "Piped connections closed for idling",
                                   labels=labels)
        for s in self.listeners.values():
            base = [s.listener, s.kind]
            accepted.add_metric(base, s.accepted)
            active.add_metric(base, s.active)
            moved.add_metric([*base, "rx"], s.rx)
            moved.add_metric([*base, "tx"], s.tx)
            for reason, n in s.handshake_failures.items():
                handshakes.add_metric([*base, reason], n)
            denied.add_metric(base, s.denied)
            for reason, n in s.rejected.items():
                rejected.add_metric([*base, reason], n)
            failures.add_metric(base, s.connect_failures)
            idle.add_metric(base, s.idle_timeouts)
        yield from (accepted, active, moved, handshakes, denied, rejected, failures, idle)
