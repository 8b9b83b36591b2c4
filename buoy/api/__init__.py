"""The HTTP client Buoy's CLI, agents and tools use to talk to an agent's /v1 API."""

from buoy.api.client import (
    AgentTimeout,
    AgentUnreachable,
    APIError,
    Client,
    ClientError,
    InvalidAddress,
    Response,
    Result,
    base_url,
    decode_value,
    resolve_addr,
    resolve_token,
)

__all__ = [
    "APIError",
    "AgentTimeout",
    "AgentUnreachable",
    "Client",
    "ClientError",
    "InvalidAddress",
    "Response",
    "Result",
    "base_url",
    "decode_value",
    "resolve_addr",
    "resolve_token",
]
