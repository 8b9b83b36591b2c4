"""Buoy: a service networking agent that speaks Consul's protocols.

General layout (docs/architecture.md; checked by ``make lint``): imports run one way,
cli -> process -> http -> server | agent | dns -> connect | config -> core -> api | durations | log | aio.
``core/`` is Consul's vocabulary and imports no other Buoy package but ``durations``; ``server/``, ``agent/``
and ``dns/`` never import each other; only ``http/`` knows aiohttp.web and HTTP status codes.
"""

__version__ = "0.1.0"
# The Consul release whose HTTP API Buoy answers like; clients read it from /v1/agent/self.
CONSUL_COMPAT_VERSION = "1.20.0"
