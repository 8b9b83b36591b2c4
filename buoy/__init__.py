"""Buoy: a service networking agent that speaks Consul's protocols."""

__version__ = "0.1.0"
# The Consul release whose HTTP API Buoy answers like; clients read it from /v1/agent/self.
CONSUL_COMPAT_VERSION = "1.20.0"
