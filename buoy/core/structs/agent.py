"""An agent as its own endpoints show it. ``/v1/agent/self`` (Consul's ``Self``): its ``Config``, the
``DebugConfig`` subset clients read, its ``Member`` entry, its ``Stats`` and ``Meta``; py-consul and the CLI
read this body, and its values come in plain, since core cannot read ``buoy.config``. And the agent's own
services and checks: as ``/v1/agent/services`` and ``/v1/agent/checks`` list them, a check update's body, and
a service's aggregated health (Consul's ``AgentServiceChecksInfo``). And ``/v1/agent/connect/authorize``'s
question and answer (Consul's ``ConnectAuthorizeRequest``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from buoy.core.decode import Fields
from buoy.core.errors import Invalid
from buoy.core.spiffe import NotAService, SpiffeService, parse_spiffe
from buoy.core.structs import catalog, member
from buoy.core.structs.definitions import STATES
from buoy.core.structs.member import ALIVE, NodeIdentity

# How bad each check state is, for a service's aggregated health: maintenance outranks critical.
_SEVERITY = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}


@dataclass(frozen=True)
class AgentSettings:
    """The settings ``/v1/agent/self`` reports, besides who the agent is."""

    identity: NodeIdentity
    dev: bool
    data_dir: str
    client_addr: str
    http_port: int
    dns_port: int
    server_port: int
    retry_join: tuple[str, ...]
    intentions_default: str
    version: str  # the Consul release Buoy answers as
    buoy_version: str


def alive_member(identity: NodeIdentity) -> dict[str, Any]:
    """This agent's member row: an agent always knows itself alive, also before its first heartbeat has
    reached a leader."""
    return dict(identity.member(), Status=ALIVE)


def self_body(agent: AgentSettings, stats: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The ``/v1/agent/self`` answer; ``stats`` is Consul's map of sections to string counters."""
    me = agent.identity
    return {
        "Config": {
            "Datacenter": me.datacenter, "PrimaryDatacenter": me.datacenter, "NodeName": me.name,
            "NodeID": me.id, "Revision": "buoy", "Server": me.server, "Version": agent.version, "BuildDate": "",
        },
        "DebugConfig": {"Datacenter": me.datacenter, "NodeName": me.name, "DevMode": agent.dev,
                        "ServerMode": me.server, "DataDir": agent.data_dir, "ClientAddrs": [agent.client_addr],
                        "HTTPPort": agent.http_port, "DNSPort": agent.dns_port, "ServerPort": agent.server_port,
                        "RetryJoinLAN": list(agent.retry_join), "IntentionsDefault": agent.intentions_default},
        "Coord": None,
        "Member": member.to_api(alive_member(me), me.datacenter),
        "Stats": stats,
        "Meta": {"consul-network-segment": "", "buoy-version": agent.buoy_version},
        "xDS": None,
    }


def local_service(svc: dict[str, Any], datacenter: str) -> dict[str, Any]:
    """A service of this agent as ``/v1/agent/services`` shows it."""
    return dict(svc, Datacenter=datacenter)


def hashed_service(svc: dict[str, Any], digest: str) -> dict[str, Any]:
    """A service as ``/v1/agent/service/:id`` shows it, with the hash of its content that ``?hash`` blocks on."""
    return dict(svc, ContentHash=digest)


def local_check(check: dict[str, Any], node: str, services: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """A check of this agent as ``/v1/agent/checks`` shows it, with its node and its service's name and tags."""
    return catalog.with_service(dict(check, Node=node), services.get(check["ServiceID"]))


def worst_status(statuses: Iterable[str]) -> str:
    return max(statuses, key=_SEVERITY.__getitem__, default="passing")


def service_health(service: dict[str, Any], checks: Iterable[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """A service's aggregated status and its ``/v1/agent/health/service`` body: the node's own checks count
    against every service, as in Consul."""
    mine = [c for c in checks if catalog.decides_health(c, service["ID"])]
    worst = worst_status(c["Status"] for c in mine)
    return worst, {"AggregatedStatus": worst, "Service": service, "Checks": mine}


def named(svc: dict[str, Any], name: str) -> bool:
    return bool(svc["Service"] == name)


def parse_check_update(body: Any) -> tuple[str, str]:
    """The status and output of a ``/v1/agent/check/update`` body (Consul's ``checkUpdate``)."""
    f = Fields(body, "Request", {"Status", "Output"})
    status = f.str("Status")
    if status not in STATES:
        raise Invalid(f"Invalid check status: {status!r}")
    return status, f.str("Output")


def parse_authorize(body: Any) -> tuple[str, SpiffeService]:
    """The target service and the client certificate's service of an authorize request. The certificate
    itself is not checked: as in Consul, the caller has verified the TLS chain; only the URI's shape is."""
    f = Fields(body, "Request")
    target = f.str("Target")
    if not target:
        raise Invalid("Target service must be specified")
    try:
        client = parse_spiffe(f.str("ClientCertURI"))
    except NotAService:
        raise Invalid("ClientCertURI not a valid Service identifier") from None
    except ValueError:
        raise Invalid("ClientCertURI not a valid Connect identifier") from None
    if client.partition != "default":
        raise Invalid(f'Mismatched partitions: "{client.partition}" != "default"')
    return target, client


def authorize_response(allowed: bool, reason: str) -> dict[str, Any]:
    return {"Authorized": allowed, "Reason": reason}
