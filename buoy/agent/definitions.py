"""Consul's service and check definitions (``/v1/agent/service/register``, ``/v1/agent/check/register``):
decoded, validated, and turned into the rows the agent keeps and syncs to the catalog.

Field names match case-insensitively and in snake_case too, as Consul's agent endpoints accept.
"""

from __future__ import annotations

from typing import Any

from buoy.durations import format_duration
from buoy.http.decode import Fields
from buoy.http.errors import bad_request

SERVICE_FIELDS = {"ID", "Name", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Kind", "Weights",
                  "EnableTagOverride", "Check", "Checks", "Token", "Namespace", "Partition", "SocketPath",
                  "Proxy", "Connect", "Locality"}
CHECK_FIELDS = {"ID", "CheckID", "Name", "Notes", "Status", "ServiceID", "TTL", "Interval", "Timeout",
                "DeregisterCriticalServiceAfter", "SuccessBeforePassing", "FailuresBeforeCritical",
                "FailuresBeforeWarning", "Output", "Token", "Namespace", "Partition",
                # Kinds the agent does not run yet are refused by name below, not as unknown fields.
                "HTTP", "Method", "Header", "Body", "TLSSkipVerify", "TLSServerName", "TCP", "UDP", "GRPC",
                "GRPCUseTLS", "Args", "ScriptArgs", "AliasService", "AliasNode", "H2PING", "DockerContainerID",
                "Shell", "OSService", "DisableRedirects", "OutputMaxSize", "H2PingUseTLS"}
RUNNABLE = ("TTL",)
NOT_YET = ("HTTP", "TCP", "UDP", "GRPC", "Args", "ScriptArgs", "AliasService", "AliasNode", "H2PING",
           "DockerContainerID", "OSService")
STATES = ("passing", "warning", "critical")


def parse_check(data: Any, what: str, service_id: str = "", default_id: str = "") -> dict[str, Any]:
    """A check row (Consul's HealthCheck shape) with its ``Definition``; only TTL checks run so far."""
    f = Fields(data, what, CHECK_FIELDS)
    for kind in NOT_YET:
        if f.has(kind):
            raise bad_request(f"{what}: {kind} checks are not supported by this agent yet (use TTL)")
    ttl = f.duration("TTL")
    if ttl is None:
        raise bad_request(f"{what}: a check needs a TTL (the only check kind this agent runs so far)")
    if ttl <= 0:
        raise bad_request(f"{what}: TTL must be positive")
    name = f.str("Name")
    check_id = f.str("CheckID") or f.str("ID") or default_id or name
    if not check_id:
        raise bad_request(f"{what}: Missing check name")
    status = f.str("Status") or "critical"
    if status not in STATES:
        raise bad_request(f"{what}: Status must be passing, warning or critical, not {status!r}")
    return {
        "CheckID": check_id,
        "Name": name or check_id,
        "Status": status,
        "Notes": f.str("Notes"),
        "Output": f.str("Output"),
        "ServiceID": f.str("ServiceID") or service_id,
        "Type": "ttl",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {"TTL": format_duration(ttl)},
    }


def parse_service(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An AgentService row and the checks the definition embeds (``Check`` and ``Checks``)."""
    f = Fields(data, "Service", SERVICE_FIELDS)
    name = f.str("Name")
    if not name:
        raise bad_request("Missing service Name")
    port = f.int("Port")
    if not 0 <= port <= 65535:
        raise bad_request(f"Invalid service Port {port}: must be between 0 and 65535")
    weights = Fields(f.obj("Weights"), "Service.Weights", {"Passing", "Warning"})
    svc: dict[str, Any] = {
        "ID": f.str("ID") or name,
        "Service": name,
        "Tags": f.str_list("Tags"),
        "Address": f.str("Address"),
        "TaggedAddresses": f.raw("TaggedAddresses", {}),
        "Meta": f.str_map("Meta"),
        "Port": port,
        "Weights": {"Passing": weights.int("Passing", 1), "Warning": weights.int("Warning", 1)},
        "EnableTagOverride": f.bool("EnableTagOverride"),
        "Kind": f.str("Kind"),
    }
    raw_checks: list[Any] = []
    if f.obj("Check") is not None:
        raw_checks.append(f.obj("Check"))
    more = f.raw("Checks", [])
    if not isinstance(more, list):
        raise bad_request("Request decode failed: Service.Checks: expected a list")
    raw_checks.extend(more)
    sid = svc["ID"]
    checks = []
    for i, raw in enumerate(raw_checks):
        # Consul names embedded checks service:<id>, or service:<id>:<n> when there are several.
        default = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i + 1}"
        check = parse_check(raw, f"Service.Checks[{i}]", sid, default)
        if check["ServiceID"] != sid:
            raise bad_request(f"Service.Checks[{i}]: ServiceID must be {sid!r}")
        if not check["Name"] or check["Name"] == default:
            check["Name"] = f"Service '{name}' check"
        checks.append(check)
    return svc, checks
